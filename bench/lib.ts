/**
 * Benchmark helpers: statistics, a Connect gRPC client for the snapshots
 * service on any unix socket (thinsnap's or containerd's), child processes,
 * resident memory, mounts. Used inside the qemu guest by bench/bench.ts.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import * as net from "node:net";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Snapshots } from "../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

export type SnapshotsClient = Client<typeof Snapshots>;

// ------------------------------------------------------------------ statistics

export interface Stats {
  n: number;
  median: number;
  p95: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentile of sorted values. */
function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const sum = s.reduce((a, b) => a + b, 0);
  const median = s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { n: s.length, median, p95: pct(s, 95), mean: s.length ? sum / s.length : NaN, min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

export const now = (): number => performance.now();

/** Runs fn once and returns its duration in ms. */
export async function timed(fn: () => unknown): Promise<number> {
  const t0 = now();
  await fn();
  return now() - t0;
}

// ------------------------------------------------------------------ gRPC client

/**
 * A snapshots client over a unix socket. With `namespace`, every call carries
 * the `containerd-namespace` metadata header (containerd's own socket needs it;
 * thinsnap ignores it).
 */
export function snapshotsClient(socketPath: string, namespace?: string): SnapshotsClient {
  const interceptors: Interceptor[] = [];
  if (namespace !== undefined) {
    interceptors.push((next) => async (req) => {
      req.header.set("containerd-namespace", namespace);
      return next(req);
    });
  }
  const transport = createGrpcTransport({
    baseUrl: "http://localhost",
    interceptors,
    nodeOptions: { createConnection: () => net.connect(socketPath) },
  });
  return createClient(Snapshots, transport);
}

// ------------------------------------------------------------------ processes

export interface Daemon {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

/** Starts a long-running process with stdout+stderr to logFile. */
export function startDaemon(name: string, cmd: string[], logFile: string, env?: Record<string, string>): Daemon {
  const fd = openSync(logFile, "a");
  const [file, ...args] = cmd;
  if (file === undefined) throw new Error("startDaemon: empty command");
  const child = spawn(file, args, { stdio: ["ignore", fd, fd], env: env ? { ...process.env, ...env } : process.env });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name}: spawn failed`);
  const pid = child.pid;
  let exited = false;
  const done = new Promise<void>((r) => child.on("exit", () => ((exited = true), r())));
  return {
    name,
    child,
    pid,
    logFile,
    async stop() {
      if (exited) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await done;
      clearTimeout(t);
    },
  };
}

/** Waits until a unix socket accepts connections. */
export async function waitForSocket(path: string, timeoutMs: number, daemon?: Daemon): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (daemon && daemon.child.exitCode !== null) {
      throw new Error(`${daemon.name} exited with ${daemon.child.exitCode}; log:\n${tail(daemon.logFile, 40)}`);
    }
    if (existsSync(path)) {
      const ok = await new Promise<boolean>((r) => {
        const s = net.connect(path);
        s.once("connect", () => (s.destroy(), r(true)));
        s.once("error", () => r(false));
      });
      if (ok) return;
    }
    if (Date.now() > deadline) {
      throw new Error(`${path}: no listener after ${timeoutMs} ms${daemon ? `; log:\n${tail(daemon.logFile, 40)}` : ""}`);
    }
    await Bun.sleep(50);
  }
}

export function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command to completion (async, so the event loop keeps serving). */
export function run(cmd: string[], opts: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = cmd;
    if (file === undefined) return reject(new Error("run: empty command"));
    const t0 = now();
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env: opts.env ? { ...process.env, ...opts.env } : process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    const timer = opts.timeoutMs ? setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs) : undefined;
    child.on("error", (e) => reject(new Error(`${cmd.join(" ")}: ${e.message}`)));
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? 137, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms: now() - t0 });
    });
  });
}

/** Runs a command synchronously; throws on a non-zero exit. */
export function sh(cmd: string[]): string {
  const [file, ...args] = cmd;
  if (file === undefined) throw new Error("sh: empty command");
  const r = spawnSync(file, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd.join(" ")} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** VmRSS (or another /proc/PID/status field) in KiB. */
export function procStatusKiB(pid: number, field = "VmRSS"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** Samples VmRSS every intervalMs until stopped; returns the maximum in KiB. */
export function rssSampler(pid: number, intervalMs = 25): { stop(): { maxKiB: number; samples: number } } {
  let max = 0;
  let samples = 0;
  const t = setInterval(() => {
    try {
      max = Math.max(max, procStatusKiB(pid));
      samples++;
    } catch {
      // process gone
    }
  }, intervalMs);
  return {
    stop() {
      clearInterval(t);
      return { maxKiB: max, samples };
    },
  };
}

// ------------------------------------------------------------------ formatting

export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return "–";
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

export function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return "–";
  if (r >= 100) return r.toFixed(0);
  if (r >= 10) return r.toFixed(1);
  return r.toFixed(2);
}

/** A markdown-ish fixed-width table. */
export function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(w[i]!)).join(" | ")} |`;
  return [line(head), `|${w.map((n) => "-".repeat(n + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}
