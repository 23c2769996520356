/**
 * Test/demo helper: run `thinsnap serve` as a child process, and manage a
 * file-backed thin-pool with the thinsnap CLI itself (`pool create/status/destroy`,
 * `check`). Needs root and a kernel with device-mapper (the qemu guest of
 * tests/vm/vmrun).
 *
 *   const pool = await createFilePool({ name: "ts-pool", dataFile: "/tmp/x/data", dataSize: "1G" });
 *   const d = await startThinsnap({ poolName: "ts-pool", dir: "/tmp/x/thinsnap" });
 *   ... containerd with [proxy_plugins.thinsnap] address = d.address ...
 *   await d.stop();
 *   await destroyFilePool("ts-pool");
 */
import type { PoolReport } from "../../src/cli/pool.ts";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join, resolve } from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Kind, Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

/** The repository root (this file is tests/lib/thinsnapd.ts). */
export const REPO = resolve(import.meta.dir, "../..");

/** Result of a finished command. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The command that runs thinsnap: `binary` when given (e.g. dist/thinsnap),
 * else $THINSNAP_BIN, else this Bun running src/cli/main.ts.
 */
export function thinsnapCommand(binary?: string): string[] {
  const bin = binary ?? process.env.THINSNAP_BIN;
  if (bin !== undefined && bin !== "") return [bin];
  return [process.execPath, join(REPO, "src/cli/main.ts")];
}

/** Runs a command to completion (stdin closed), collecting its output. */
export function run(cmd: string[], opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const [file, ...args] = cmd;
    if (file === undefined) {
      reject(new Error("run: empty command"));
      return;
    }
    const child = spawn(file, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
          }, opts.timeoutMs);
    child.on("error", (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`${cmd.join(" ")}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      const stderr = Buffer.concat(err).toString("utf8");
      resolveRun({
        code: code ?? 128 + (signal === "SIGKILL" ? 9 : 15),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: timedOut ? `${stderr}\n[killed after ${opts.timeoutMs} ms]` : stderr,
      });
    });
  });
}

/** Runs a thinsnap CLI command (`pool ...`, `check ...`). */
export function thinsnap(args: string[], opts: { binary?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run([...thinsnapCommand(opts.binary), ...args], { timeoutMs: opts.timeoutMs ?? 120_000 });
}

function fail(what: string, r: RunResult): never {
  throw new Error(`${what} failed (exit ${r.code}):\n${r.stderr}${r.stdout}`);
}

// ------------------------------------------------------------------- pools

export interface FilePoolOptions {
  /** thin-pool device name. */
  name: string;
  /** Sparse data file; the metadata file is `<dataFile>.meta` unless metaFile is given. */
  dataFile: string;
  metaFile?: string;
  /** e.g. "1G" (default "1G"). */
  dataSize?: string;
  metaSize?: string;
  blockSize?: string;
  binary?: string;
}

export interface FilePool {
  name: string;
  dataFile: string;
  metaFile: string;
  /** What `thinsnap pool create` printed. */
  output: string;
}

/** `thinsnap pool create --name N --data-file F --data-size S`. */
export async function createFilePool(o: FilePoolOptions): Promise<FilePool> {
  const metaFile = o.metaFile ?? `${o.dataFile}.meta`;
  mkdirSync(resolve(o.dataFile, ".."), { recursive: true });
  const args = ["pool", "create", "--name", o.name, "--data-file", o.dataFile, "--data-size", o.dataSize ?? "1G"];
  if (o.metaFile !== undefined) args.push("--meta-file", o.metaFile);
  if (o.metaSize !== undefined) args.push("--meta-size", o.metaSize);
  if (o.blockSize !== undefined) args.push("--block-size", o.blockSize);
  const r = await thinsnap(args, { binary: o.binary });
  if (r.code !== 0) fail(`thinsnap ${args.join(" ")}`, r);
  return { name: o.name, dataFile: o.dataFile, metaFile, output: r.stdout };
}

/** `thinsnap pool destroy --name N [--delete-files]`; a pool that does not exist is not an error. */
export async function destroyFilePool(
  name: string,
  opts: { deleteFiles?: boolean; binary?: string; ignoreMissing?: boolean } = {},
): Promise<RunResult> {
  const args = ["pool", "destroy", "--name", name];
  if (opts.deleteFiles !== false) args.push("--delete-files");
  const r = await thinsnap(args, { binary: opts.binary });
  if (r.code !== 0 && !(opts.ignoreMissing !== false && /does not exist/.test(r.stderr))) {
    fail(`thinsnap ${args.join(" ")}`, r);
  }
  return r;
}

/** The JSON of `thinsnap pool status --json`. */
export type PoolStatusReport = PoolReport;

/** `thinsnap pool status --name N --root R --json`. */
export async function poolStatus(name: string, root: string, opts: { binary?: string } = {}): Promise<PoolStatusReport> {
  const args = ["pool", "status", "--name", name, "--root", root, "--json"];
  const r = await thinsnap(args, { binary: opts.binary });
  if (r.code !== 0) fail(`thinsnap ${args.join(" ")}`, r);
  return JSON.parse(r.stdout) as PoolStatusReport;
}

// ------------------------------------------------------------------ daemon

export interface ThinsnapOptions {
  poolName: string;
  /** Working directory: config.toml, root/ (root_path), thinsnap.sock, thinsnap.log. Created. */
  dir: string;
  /** Default "64MB". */
  baseImageSize?: string;
  /** Default "debug". */
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /** Defaults to <dir>/thinsnap.sock. */
  address?: string;
  /** Defaults to <dir>/root. */
  rootPath?: string;
  /** Extra top-level TOML lines (e.g. 'async_remove = true'). */
  extraConfig?: string;
  /** A thinsnap binary (e.g. dist/thinsnap) instead of `bun src/cli/main.ts`. */
  binary?: string;
  /** How long to wait for the socket (default 120 s: mkfs of the base device under TCG). */
  readyTimeoutMs?: number;
  env?: Record<string, string>;
}

export interface Thinsnapd {
  address: string;
  rootPath: string;
  configPath: string;
  logFile: string;
  pid: number;
  /** Sends `signal` (default SIGTERM) and waits for the exit; resolves to the exit code (or 128+signo). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number>;
  /** SIGKILL, then waits. */
  kill(): Promise<number>;
  /** The daemon's log so far. */
  logs(): string;
  /** Resolves when the process exits (exit code or 128+signo). */
  exited: Promise<number>;
}

const SIGNO: Partial<Record<NodeJS.Signals, number>> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGHUP: 1, SIGQUIT: 3 };

/** A promise for a child's exit status (exit code, or 128 + signal number). */
export function exitOf(child: ChildProcess): Promise<number> {
  return new Promise((res) => {
    if (child.exitCode !== null) return res(child.exitCode);
    if (child.signalCode !== null) return res(128 + (SIGNO[child.signalCode] ?? 0));
    child.once("exit", (code, signal) => res(code ?? 128 + (signal ? (SIGNO[signal] ?? 0) : 0)));
  });
}

/** Polls until `ok()` resolves true, the child died, or the timeout. */
export async function waitFor(
  what: string,
  ok: () => Promise<boolean> | boolean,
  opts: { timeoutMs: number; intervalMs?: number; died?: () => string | null },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (await ok()) return;
    const d = opts.died?.();
    if (d !== null && d !== undefined) throw new Error(`${what}: ${d}`);
    if (Date.now() > deadline) throw new Error(`${what}: timed out after ${opts.timeoutMs} ms`);
    await Bun.sleep(opts.intervalMs ?? 100);
  }
}

/** True when something accepts connections on the unix socket. */
export function socketAccepts(path: string): Promise<boolean> {
  if (!existsSync(path)) return Promise.resolve(false);
  return new Promise((res) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      res(true);
    });
    s.once("error", () => res(false));
  });
}

function readLog(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** Writes the config and starts `thinsnap serve --config <dir>/config.toml`, waiting for its socket. */
export async function startThinsnap(o: ThinsnapOptions): Promise<Thinsnapd> {
  mkdirSync(o.dir, { recursive: true });
  const address = o.address ?? join(o.dir, "thinsnap.sock");
  const rootPath = o.rootPath ?? join(o.dir, "root");
  const configPath = join(o.dir, "config.toml");
  const logFile = join(o.dir, "thinsnap.log");
  writeFileSync(
    configPath,
    [
      `pool_name = ${JSON.stringify(o.poolName)}`,
      `root_path = ${JSON.stringify(rootPath)}`,
      `address = ${JSON.stringify(address)}`,
      `base_image_size = ${JSON.stringify(o.baseImageSize ?? "64MB")}`,
      `log_level = ${JSON.stringify(o.logLevel ?? "debug")}`,
      o.extraConfig ?? "",
      "",
    ].join("\n"),
  );
  rmSync(address, { force: true });
  const fd = openSync(logFile, "a");
  const [file, ...args] = thinsnapCommand(o.binary);
  let child: ChildProcess;
  try {
    child = spawn(file!, [...args, "serve", "--config", configPath], {
      stdio: ["ignore", fd, fd],
      env: o.env ? { ...process.env, ...o.env } : process.env,
    });
  } finally {
    closeSync(fd);
  }
  const exited = exitOf(child);
  let status: number | null = null;
  void exited.then((c) => (status = c));
  const logs = (): string => readLog(logFile);
  try {
    await waitFor(`thinsnap serve (${address})`, () => socketAccepts(address), {
      timeoutMs: o.readyTimeoutMs ?? 120_000,
      died: () => (status === null ? null : `exited with status ${status} before serving; log:\n${logs()}`),
    });
  } catch (e) {
    child.kill("SIGKILL");
    await exited;
    throw e;
  }
  const stop = async (signal: NodeJS.Signals = "SIGTERM", timeoutMs = 30_000): Promise<number> => {
    if (status !== null) return status;
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    address,
    rootPath,
    configPath,
    logFile,
    pid: child.pid ?? -1,
    stop,
    kill: () => stop("SIGKILL"),
    logs,
    exited,
  };
}

/** `thinsnap check --config <configPath>`. */
export function checkStore(configPath: string, opts: { binary?: string; repair?: boolean } = {}): Promise<RunResult> {
  const args = ["check", "--config", configPath];
  if (opts.repair === true) args.push("--repair");
  return thinsnap(args, { binary: opts.binary });
}

// ------------------------------------------------------- backend's own view

/** A client of thinsnap's Snapshots service on its socket (not through containerd). */
export function snapshotsClient(address: string): Client<typeof Snapshots> {
  const transport = createGrpcTransport({
    baseUrl: "http://localhost",
    nodeOptions: { createConnection: () => connect(address) },
  });
  return createClient(Snapshots, transport);
}

/** One snapshot as thinsnap itself lists it (keys carry containerd's "<ns>/<id>/" prefix). */
export interface BackendSnapshot {
  name: string;
  parent: string;
  kind: "active" | "view" | "committed" | "unknown";
  labels: Record<string, string>;
}

const KIND_NAMES: Record<number, BackendSnapshot["kind"]> = {
  [Kind.ACTIVE]: "active",
  [Kind.VIEW]: "view",
  [Kind.COMMITTED]: "committed",
};

/**
 * Every snapshot thinsnap holds, asked over its own socket: what containerd's
 * metadata layer has actually created/removed in the backend (GC included).
 */
export async function backendSnapshots(address: string): Promise<BackendSnapshot[]> {
  const out: BackendSnapshot[] = [];
  for await (const batch of snapshotsClient(address).list({ snapshotter: "thinsnap", filters: [] })) {
    for (const i of batch.info) {
      out.push({ name: i.name, parent: i.parent, kind: KIND_NAMES[i.kind] ?? "unknown", labels: { ...i.labels } });
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}
