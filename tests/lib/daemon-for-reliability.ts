/**
 * Starts and stops `thinsnap serve` as a real child process for the
 * reliability tests (tests/dm/{crash,space,hostile,load,access}.test.ts):
 * config file, environment (e.g. THINSNAP_TEST_KILL_AT), readiness from the
 * "serving" log line, captured stderr, SIGKILL/SIGTERM, RSS.
 */
import { Database } from "bun:sqlite";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { poolThinIds } from "../../src/cli/check.ts";
import { thinDevicesOfPool } from "../../src/pool/thin-devices.ts";
import type { DeviceMapper } from "../../src/dm/device-mapper.ts";
import { ThinPool } from "../../src/dm/thin-pool.ts";
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

export interface StoreDevice {
  thin_id: number;
  dm_name: string;
  role: string;
  state: string;
  active: number;
}

export interface StoreSnapshot {
  id: number;
  name: string;
  parent: string;
  kind: string;
  thin_id: number;
}

export interface StoreView {
  devices: StoreDevice[];
  snapshots: StoreSnapshot[];
  labels: Map<string, Record<string, string>>;
  meta: Map<string, string>;
}

/** Reads the daemon's database read-only (WAL: safe while it runs). */
export function readStore(rootPath: string): StoreView {
  const db = new Database(`${rootPath}/metadata.db`, { readonly: true });
  try {
    const devices = db.query<StoreDevice, []>("SELECT thin_id, dm_name, role, state, active FROM devices ORDER BY thin_id").all();
    const snapshots = db
      .query<StoreSnapshot, []>(
        `SELECT s.id, s.name, COALESCE(p.name, '') AS parent, s.kind, s.thin_id
         FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY s.id`,
      )
      .all();
    const labels = new Map<string, Record<string, string>>();
    const byId = new Map(snapshots.map((s) => [s.id, s.name]));
    for (const l of db.query<{ snapshot_id: number; key: string; value: string }, []>("SELECT snapshot_id, key, value FROM labels").all()) {
      const n = byId.get(l.snapshot_id);
      if (n === undefined) continue;
      const m = labels.get(n) ?? {};
      m[l.key] = l.value;
      labels.set(n, m);
    }
    const meta = new Map(db.query<{ key: string; value: string }, []>("SELECT key, value FROM meta").all().map((r) => [r.key, r.value]));
    return { devices, snapshots, labels, meta };
  } finally {
    db.close();
  }
}

export interface ConsistencyReport {
  problems: string[];
  store: StoreView;
  poolIds: number[];
  activeMappings: string[];
}

/**
 * Compares the store with the pool itself, the way an operator would:
 * thin ids from thin_ls on a metadata snapshot, mappings from the kernel,
 * the transaction id from the pool's status. Meant for an idle daemon (or
 * none). An empty `problems` list means:
 *  - every thin id in the pool belongs to a device row, and every ready row's id is in the pool;
 *  - no row is left 'creating' (or 'deleting', unless allowDeleting);
 *  - every snapshot row has a ready device row, every ready snapshot device a snapshot row;
 *  - active/view devices are mapped in /dev/mapper, committed and base devices are not;
 *  - no thin device of the pool is mapped that no active/view snapshot owns;
 *  - the pool's transaction id equals the store's pool_transaction_id.
 */
export function checkConsistency(
  dm: DeviceMapper,
  poolName: string,
  rootPath: string,
  opts: { allowDeleting?: boolean } = {},
): ConsistencyReport {
  const problems: string[] = [];
  const pool = new ThinPool(dm, poolName);
  const store = readStore(rootPath);
  const ids = poolThinIds(pool);
  if (ids === null) throw new Error("thin_ls is not installed (thin-provisioning-tools)");
  const inPool = new Set(ids);
  const byId = new Map(store.devices.map((d) => [d.thin_id, d]));
  const snapByThin = new Map(store.snapshots.map((s) => [s.thin_id, s]));

  for (const id of ids) if (!byId.has(id)) problems.push(`orphaned thin id ${id}: in the pool, no device row`);
  for (const d of store.devices) {
    if (d.state === "creating") problems.push(`device ${d.thin_id} (${d.dm_name}) still 'creating'`);
    if (d.state === "deleting" && !opts.allowDeleting) problems.push(`device ${d.thin_id} (${d.dm_name}) still 'deleting'`);
    if (d.state === "ready" && !inPool.has(d.thin_id)) problems.push(`device ${d.thin_id} (${d.dm_name}) is ready in the store but not in the pool`);
    if (d.state === "ready" && d.role === "snapshot" && !snapByThin.has(d.thin_id)) {
      problems.push(`ready snapshot device ${d.thin_id} (${d.dm_name}) has no snapshot row`);
    }
  }
  for (const s of store.snapshots) {
    const d = byId.get(s.thin_id);
    if (!d) problems.push(`snapshot "${s.name}" has no device row (thin id ${s.thin_id})`);
    else if (d.state !== "ready") problems.push(`snapshot "${s.name}" has a ${d.state} device (${d.thin_id})`);
  }
  const readyBases = store.devices.filter((d) => d.role === "base" && d.state === "ready");
  if (readyBases.length === 0) problems.push("no ready base device");

  const wantActive = new Set<string>();
  for (const d of store.devices) {
    if (d.state !== "ready") continue;
    const s = snapByThin.get(d.thin_id);
    const want = d.role === "snapshot" && s !== undefined && s.kind !== "committed";
    if (want) wantActive.add(d.dm_name);
    const is = dm.info(d.dm_name) !== null;
    if (want && !existsSync(`/dev/mapper/${d.dm_name}`)) problems.push(`${s?.kind} snapshot "${s?.name}": /dev/mapper/${d.dm_name} missing`);
    if (!want && is) problems.push(`${s ? `${s.kind} snapshot "${s.name}"` : d.role} device ${d.dm_name} is active`);
    if ((d.active === 1) !== want) problems.push(`device ${d.dm_name}: store says active=${d.active}, should be ${want ? 1 : 0}`);
  }
  const mappings = thinDevicesOfPool(dm, poolName);
  for (const n of mappings) {
    if (!wantActive.has(n) && !store.devices.some((d) => d.dm_name === n && d.state === "deleting")) {
      problems.push(`stray mapping ${n}: no active/view snapshot owns it`);
    }
  }
  const txn = pool.status().transactionId;
  const rec = store.meta.get("pool_transaction_id");
  if (rec === undefined || BigInt(rec) !== txn) problems.push(`pool transaction id ${txn} != store's pool_transaction_id ${rec}`);
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
