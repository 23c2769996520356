/**
 * `thinsnap serve` as a real child process, for every test, the demo and the
 * benchmark: one config writer, one launcher. Environment (e.g.
 * THINSNAP_TEST_KILL_AT), readiness from the "serving" log line, captured
 * log lines (optionally also in a file), SIGKILL/SIGTERM, RSS.
 */
import { chmodSync, copyFileSync, createWriteStream, mkdirSync, mkdtempSync, writeFileSync, type WriteStream } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { procStatusKiB, REPO, socketAccepts, statusNumber } from "./process.ts";

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

/**
 * The command that runs thinsnap: `binary` when given (e.g. dist/thinsnap),
 * else $THINSNAP_BIN, else daemonEntry().
 */
export async function thinsnapCommand(binary?: string): Promise<string[]> {
  const bin = binary ?? process.env.THINSNAP_BIN;
  if (bin !== undefined && bin !== "") return [bin];
  return daemonEntry();
}

export interface DaemonConfig {
  poolName: string;
  rootPath: string;
  address: string;
  /** Default here: "64MB". */
  baseImageSize?: string;
  fsType?: "ext4" | "xfs" | "ext2";
  fsOptions?: string;
  asyncRemove?: boolean;
  discardBlocks?: boolean;
  /** A size string ("20MB"), a percentage ("10%") or bytes. Default here: 0 (no reserve); null: the daemon's own default. */
  minFreeSpace?: string | number | null;
  socketMode?: string;
  socketGroup?: string;
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /** kernel_threads (unset: the daemon's default). */
  kernelThreads?: number;
  /** metrics_address (unset: no metrics). */
  metricsAddress?: string;
  /** A file-backed pool ([pool]): serve creates it, or reloads it from the files after a reboot. */
  pool?: { dataFile: string; metaFile: string; dataSize: string; metaSize: string };
}

/** The config file for `c`; keys left unset are the daemon's defaults. */
export function configToml(c: DaemonConfig): string {
  const q = (s: string): string => JSON.stringify(s);
  const lines = [
    `pool_name = ${q(c.poolName)}`,
    `root_path = ${q(c.rootPath)}`,
    `address = ${q(c.address)}`,
    `base_image_size = ${q(c.baseImageSize ?? "64MB")}`,
  ];
  if (c.fsType !== undefined) lines.push(`fs_type = ${q(c.fsType)}`);
  if (c.asyncRemove !== undefined) lines.push(`async_remove = ${c.asyncRemove}`);
  if (c.discardBlocks !== undefined) lines.push(`discard_blocks = ${c.discardBlocks}`);
  if (c.logLevel !== undefined) lines.push(`log_level = ${q(c.logLevel)}`);
  if (c.fsOptions !== undefined) lines.push(`fs_options = ${q(c.fsOptions)}`);
  const mfs = c.minFreeSpace === undefined ? 0 : c.minFreeSpace;
  if (mfs !== null) lines.push(`min_free_space = ${typeof mfs === "number" ? String(mfs) : q(mfs)}`);
  if (c.socketMode !== undefined) lines.push(`socket_mode = ${q(c.socketMode)}`);
  if (c.socketGroup !== undefined) lines.push(`socket_group = ${q(c.socketGroup)}`);
  if (c.kernelThreads !== undefined) lines.push(`kernel_threads = ${c.kernelThreads}`);
  if (c.metricsAddress !== undefined) lines.push(`metrics_address = ${q(c.metricsAddress)}`);
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
  /** Also append the daemon's log lines to this file. */
  logFile?: string;
  /** A thinsnap executable (e.g. dist/thinsnap); default: thinsnapCommand(). */
  binary?: string;
  /** Extra environment (e.g. THINSNAP_TEST_KILL_AT). */
  env?: Record<string, string>;
  /** How long to wait for "serving" (default 60 s: the guest is emulated). */
  readyTimeoutMs?: number;
  /** Copy the daemon's stderr lines to this process's stderr. */
  echo?: boolean;
}

/**
 * A daemon as an operator would set it up, in one directory: <dir>/config.toml,
 * root/ (root_path), thinsnap.sock, thinsnap.log; min_free_space is the
 * daemon's own default unless `config` sets it.
 */
export function inDir(dir: string, config: Omit<DaemonConfig, "rootPath" | "address">): Pick<StartOptions, "config" | "configPath" | "logFile"> {
  return {
    config: { rootPath: path.join(dir, "root"), address: path.join(dir, "thinsnap.sock"), minFreeSpace: null, ...config },
    configPath: path.join(dir, "config.toml"),
    logFile: path.join(dir, "thinsnap.log"),
  };
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
  private readonly log: WriteStream | null;

  private constructor(
    readonly proc: Bun.Subprocess<"ignore", "ignore", "pipe">,
    readonly config: DaemonConfig,
    readonly configPath: string,
    readonly logFile: string | undefined,
    echo: boolean,
  ) {
    this.log = logFile === undefined ? null : createWriteStream(logFile, { flags: "a" });
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

  get address(): string {
    return this.config.address;
  }

  get rootPath(): string {
    return this.config.rootPath;
  }

  /** The log so far. */
  logs(): string {
    return this.lines.join("\n");
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
    if (o.logFile !== undefined) mkdirSync(path.dirname(o.logFile), { recursive: true });
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (v !== undefined && k !== "THINSNAP_TEST_KILL_AT") env[k] = v;
    }
    Object.assign(env, o.env ?? {});
    const entry = await thinsnapCommand(o.binary);
    const proc = Bun.spawn([...entry, "serve", "--config", configPath], {
      cwd: REPO,
      env,
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
    });
    const d = new Daemon(proc, o.config, configPath, o.logFile, o.echo === true);
    const timeout = o.readyTimeoutMs ?? 60_000;
    const ok = await d.waitReady(timeout);
    if (!ok && d.running) {
      proc.kill("SIGKILL");
      await d.exited;
      throw new Error(`thinsnap serve did not get ready in ${timeout} ms; log:\n${d.lines.join("\n")}`);
    }
    return d;
  }

  /** start(), but a daemon that exits before serving is an error (with its log). */
  static async serving(o: StartOptions): Promise<Daemon> {
    const d = await Daemon.start(o);
    if (!d.ready) throw new Error(`thinsnap serve exited with ${JSON.stringify(d.exit)} before serving; log:\n${d.logs()}`);
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

  /** Sends a signal (default SIGKILL) and waits for the exit; resolves to the exit code (or 128 + signal number). */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<number> {
    if (this.running) this.proc.kill(signal);
    const st = await this.exited;
    return statusNumber(st.code, st.signal);
  }

  /** Graceful stop (SIGTERM); SIGKILL after `timeoutMs`. Resolves to the exit code (or 128 + signal number). */
  async stop(timeoutMs = 30_000): Promise<number> {
    if (!this.running) return statusNumber(this.exit!.code, this.exit!.signal);
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.running && this.proc.kill("SIGKILL"), timeoutMs);
    const st = await this.exited;
    clearTimeout(t);
    return statusNumber(st.code, st.signal);
  }

  /** VmRSS in KiB (null once the process is gone). */
  rssKiB(): number | null {
    try {
      const kib = procStatusKiB(this.pid);
      return Number.isNaN(kib) ? null : kib;
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
        this.log?.write(`${line}\n`);
        if (echo) process.stderr.write(`[thinsnap ${this.pid}] ${line}\n`);
        if (!this.ready && / msg=serving( |$)/.test(line)) {
          this.ready = true;
          this.wake();
        }
      }
    }
    if (buf !== "") {
      this.lines.push(buf);
      this.log?.write(buf);
    }
    this.log?.end();
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
