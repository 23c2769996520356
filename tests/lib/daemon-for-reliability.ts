/**
 * Starts and stops `thinsnap serve` as a real child process for the
 * reliability tests (tests/dm/{crash,space,hostile,load,access}.test.ts):
 * config file, environment (e.g. THINSNAP_TEST_KILL_AT), readiness from the
 * "serving" log line, captured stderr, SIGKILL/SIGTERM, RSS.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { describeProblem, inspect, type StoreView } from "../../src/consistency/inspect.ts";
import { readPoolView, readStoreView } from "../../src/consistency/views.ts";
import { poolThinIds, thinDevicesOfPool } from "../../src/dm/pool-contents.ts";
import type { DeviceMapper } from "../../src/dm/device-mapper.ts";
import { ThinPool } from "../../src/dm/thin-pool.ts";
import { Store } from "../../src/store/store.ts";
import { socketAccepts } from "./thinsnapd.ts";

const REPO = path.resolve(import.meta.dir, "../..");
const MAIN = path.join(REPO, "src/cli/main.ts");
const WORKER = path.join(REPO, "src/dm/kernel-worker.ts");

let bundled: Promise<string[]> | null = null;

/**
 * The daemon's entry point. Under emulation, loading src/ and node_modules
 * file by file over the guest's 9p share costs ~10 s per process start, so
 * the CLI is bundled once per test process (Bun.build, same code, one file in
 * tmpfs) and every start runs the bundle. THINSNAP_TEST_FROM_SOURCE=1 runs
 * src/cli/main.ts directly instead.
 */
export async function daemonEntry(): Promise<string[]> {
  if (process.env.THINSNAP_TEST_FROM_SOURCE === "1") return [process.execPath, MAIN];
  bundled ??= (async () => {
    const outdir = mkdtempSync(path.join(tmpdir(), "thinsnap-bundle-"));
    const r = await Bun.build({ entrypoints: [MAIN], target: "bun", outdir, naming: "thinsnap.js" });
    if (!r.success) throw new Error(`bundling ${MAIN} failed: ${r.logs.map(String).join("\n")}`);
    // The kernel threads' entry, beside the bundle (src/dm/kernel-workers.ts looks there).
    const w = await Bun.build({ entrypoints: [WORKER], target: "bun", outdir, naming: "kernel-worker.js" });
    if (!w.success) throw new Error(`bundling ${WORKER} failed: ${w.logs.map(String).join("\n")}`);
    // The bun binary itself also starts faster from tmpfs than from the share.
    const bun = path.join(outdir, "bun");
    copyFileSync(process.execPath, bun);
    chmodSync(bun, 0o755);
    return [bun, path.join(outdir, "thinsnap.js")];
  })();
  return bundled;
}

export interface DaemonConfig {
  poolName: string;
  rootPath: string;
  address: string;
  baseImageSize?: string;
  fsType?: "ext4" | "xfs" | "ext2";
  fsOptions?: string;
  asyncRemove?: boolean;
  discardBlocks?: boolean;
  /** A size string ("20MB"), a percentage ("10%") or bytes. Default here: 0 (no reserve). */
  minFreeSpace?: string | number;
  socketMode?: string;
  socketGroup?: string;
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /** kernel_threads (default 0: calls on the main thread, as in the default config). */
  kernelThreads?: number;
  /** A file-backed pool ([pool]): serve creates it, or reloads it from the files after a reboot. */
  pool?: { dataFile: string; metaFile: string; dataSize: string; metaSize: string };
}

export function configToml(c: DaemonConfig): string {
  const q = (s: string): string => JSON.stringify(s);
  const lines = [
    `pool_name = ${q(c.poolName)}`,
    `root_path = ${q(c.rootPath)}`,
    `address = ${q(c.address)}`,
    `base_image_size = ${q(c.baseImageSize ?? "64MB")}`,
    `fs_type = ${q(c.fsType ?? "ext4")}`,
    `async_remove = ${c.asyncRemove === true}`,
    `discard_blocks = ${c.discardBlocks === true}`,
    `log_level = ${q(c.logLevel ?? "info")}`,
  ];
  if (c.fsOptions !== undefined) lines.push(`fs_options = ${q(c.fsOptions)}`);
  const mfs = c.minFreeSpace ?? 0;
  lines.push(`min_free_space = ${typeof mfs === "number" ? String(mfs) : q(mfs)}`);
  if (c.socketMode !== undefined) lines.push(`socket_mode = ${q(c.socketMode)}`);
  if (c.socketGroup !== undefined) lines.push(`socket_group = ${q(c.socketGroup)}`);
  if (c.kernelThreads !== undefined) lines.push(`kernel_threads = ${c.kernelThreads}`);
  if (c.pool) {
    lines.push("[pool]", `data_file = ${q(c.pool.dataFile)}`, `meta_file = ${q(c.pool.metaFile)}`);
    lines.push(`data_size = ${q(c.pool.dataSize)}`, `meta_size = ${q(c.pool.metaSize)}`);
  }
  return `${lines.join("\n")}\n`;
}

export interface StartOptions {
  config: DaemonConfig;
  /** Where the config file goes (default: <rootPath>.toml). */
  configPath?: string;
  /** Extra environment (e.g. THINSNAP_TEST_KILL_AT). */
  env?: Record<string, string>;
  /** How long to wait for "serving" (default 60 s: the guest is emulated). */
  readyTimeoutMs?: number;
  /** Copy the daemon's stderr lines to this process's stderr. */
  echo?: boolean;
}

export interface ExitStatus {
  code: number | null;
  signal: string | null;
}

export class Daemon {
  readonly lines: string[] = [];
  ready = false;
  exit: ExitStatus | null = null;
  readonly exited: Promise<ExitStatus>;
  readonly startedAt = performance.now();
  private readyWaiters: (() => void)[] = [];

  private constructor(
    readonly proc: Bun.Subprocess<"ignore", "ignore", "pipe">,
    readonly config: DaemonConfig,
    readonly configPath: string,
    echo: boolean,
  ) {
    this.exited = proc.exited.then(() => {
      const st: ExitStatus = {
        code: proc.signalCode ? null : proc.exitCode,
        signal: proc.signalCode === null ? null : String(proc.signalCode),
      };
      this.exit = st;
      this.wake();
      return st;
    });
    void this.pump(proc.stderr, echo);
  }

  get pid(): number {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.exit === null;
  }

  /**
   * Spawns the daemon and waits until it logs "serving" or exits (a kill
   * point may stop it during start-up: then `ready` is false and `exit` set).
   * Throws if neither happens in time.
   */
  static async start(o: StartOptions): Promise<Daemon> {
    const configPath = o.configPath ?? `${o.config.rootPath.replace(/\/+$/, "")}.toml`;
    mkdirSync(path.dirname(configPath), { recursive: true });
    writeFileSync(configPath, configToml(o.config));
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && k !== "THINSNAP_TEST_KILL_AT") env[k] = v;
    }
    Object.assign(env, o.env ?? {});
    const entry = await daemonEntry();
    const proc = Bun.spawn([...entry, "serve", "--config", configPath], {
      cwd: REPO,
      env,
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
    });
    const d = new Daemon(proc, o.config, configPath, o.echo === true);
    const timeout = o.readyTimeoutMs ?? 60_000;
    const ok = await d.waitReady(timeout);
    if (!ok && d.running) {
      proc.kill("SIGKILL");
      await d.exited;
      throw new Error(`thinsnap serve did not get ready in ${timeout} ms; log:\n${d.lines.join("\n")}`);
    }
    return d;
  }

  /** Resolves true once "serving" was logged, false if the process exited first or on timeout. */
  async waitReady(timeoutMs: number): Promise<boolean> {
    const t0 = performance.now();
    // Above log level info there is no "serving" line: then the socket answering is the sign.
    const quiet = this.config.logLevel === "warn" || this.config.logLevel === "error";
    while (!this.ready && this.running && performance.now() - t0 < timeoutMs) {
      if (quiet && (await socketAccepts(this.config.address)) && this.running) {
        this.ready = true;
        break;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.readyWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.ready;
  }

  /** Sends a signal (default SIGKILL) and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<ExitStatus> {
    if (this.running) this.proc.kill(signal);
    return this.exited;
  }

  /** Graceful stop (SIGTERM); SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 30_000): Promise<ExitStatus> {
    if (!this.running) return this.exit!;
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.running && this.proc.kill("SIGKILL"), timeoutMs);
    const st = await this.exited;
    clearTimeout(t);
    return st;
  }

  /** VmRSS in KiB from /proc/<pid>/status (null once the process is gone). */
  rssKiB(): number | null {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${this.pid}/status`, "utf8"));
      return m ? Number(m[1]) : null;
    } catch {
      return null;
    }
  }

  /** Fields of the last log line whose msg is `msg` (text format), or null. */
  lastLine(msg: string): Record<string, string> | null {
    for (let i = this.lines.length - 1; i >= 0; i--) {
      const f = parseLogLine(this.lines[i]!);
      if (f.msg === msg) return f;
    }
    return null;
  }

  /** Every log line at the given level. */
  linesAt(level: string): string[] {
    return this.lines.filter((l) => parseLogLine(l).level === level);
  }

  /** The "reconcile: done" counters of this start, or null when it changed nothing. */
  reconcileReport(): Record<string, number> | null {
    const f = this.lastLine("reconcile: done");
    if (!f) return null;
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(f)) if (/^\d+$/.test(v) && k !== "time") out[k] = Number(v);
    return out;
  }

  private wake(): void {
    const w = this.readyWaiters;
    this.readyWaiters = [];
    for (const f of w) f();
  }

  private async pump(stream: ReadableStream<Uint8Array>, echo: boolean): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += dec.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        if (echo) process.stderr.write(`[thinsnap ${this.pid}] ${line}\n`);
        if (!this.ready && / msg=serving( |$)/.test(line)) {
          this.ready = true;
          this.wake();
        }
      }
    }
    if (buf !== "") this.lines.push(buf);
  }
}

/** key=value fields of a text-format log line (values may be JSON-quoted). */
export function parseLogLine(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /(\w[\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line)) !== null) {
    let v = m[2]!;
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        // leave as is
      }
    }
    out[m[1]!] = v;
  }
  return out;
}

/** Runs `thinsnap check` (no --repair) against a daemon's config; returns exit code and output. */
export async function runCheck(configPath: string): Promise<{ code: number; out: string }> {
  const entry = await daemonEntry();
  const r = Bun.spawnSync([...entry, "check", "--config", configPath], {
    cwd: REPO,
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: r.exitCode ?? -1, out: `${r.stdout.toString()}${r.stderr.toString()}` };
}

// ------------------------------------------------------------ consistency check

/** The daemon's store rows (its own queries; WAL: safe while it runs). */
export function readStore(rootPath: string): StoreView {
  const store = Store.open(`${rootPath}/metadata.db`);
  try {
    return readStoreView(store);
  } finally {
    store.close();
  }
}

export interface ConsistencyReport {
  /** inspect()'s problems, described (src/consistency/inspect.ts lists the invariants). */
  problems: string[];
  store: StoreView;
  poolIds: number[];
  activeMappings: string[];
}

/**
 * Compares the store with the pool itself, the way `thinsnap check` does:
 * thin ids from thin_ls on a metadata snapshot, mappings (and their
 * /dev/mapper nodes) from the kernel, the transaction id from the pool's
 * status. Meant for an idle daemon (or none). allowDeleting: devices the
 * async remover has not deleted yet are no problem.
 */
export function checkConsistency(
  dm: DeviceMapper,
  poolName: string,
  rootPath: string,
  opts: { allowDeleting?: boolean } = {},
): ConsistencyReport {
  const pool = new ThinPool(dm, poolName);
  const store = readStore(rootPath);
  const ids = poolThinIds(pool);
  if (ids === null) throw new Error("thin_ls is not installed (thin-provisioning-tools)");
  const mappings = thinDevicesOfPool(dm, poolName);
  const view = readPoolView(pool, store.devices, {
    mapped: mappings,
    thinIds: ids,
    nodeExists: (n) => existsSync(`/dev/mapper/${n}`),
  });
  const problems = inspect(store, view)
    .filter((p) => !(opts.allowDeleting && p.kind === "interrupted-delete"))
    .map(describeProblem);
  return { problems, store, poolIds: ids, activeMappings: mappings };
}

/** Polls until no device row is 'deleting' (the async remover caught up), or the budget runs out. */
export async function waitNoDeleting(rootPath: string, budgetMs = 20_000): Promise<boolean> {
  const t0 = performance.now();
  while (performance.now() - t0 < budgetMs) {
    if (!readStore(rootPath).devices.some((d) => d.state === "deleting")) return true;
    await Bun.sleep(100);
  }
  return false;
}
