/**
 * Child processes for tests, the demo and the benchmark: commands run to
 * completion without blocking the event loop, long-running processes with a
 * log file, readiness polling, a unix-socket probe, mounts, /proc/PID/status.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import { socketAccepts } from "../../src/rpc/socket.ts";

/** The repository root (this file is tests/kit/process.ts). */
export const REPO = resolve(import.meta.dir, "../..");

/** Result of a finished command. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time, ms. */
  ms: number;
}

export interface RunOptions {
  /** SIGKILL after this long (the result says so in stderr). */
  timeoutMs?: number;
  /** Added to this process's environment. */
  env?: Record<string, string>;
  cwd?: string;
}

const SIGNO: Partial<Record<NodeJS.Signals, number>> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGHUP: 1, SIGQUIT: 3 };

/** Runs a command to completion (stdin closed), collecting its output; the event loop keeps running meanwhile. */
export function run(cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolveRun, reject) => {
    const [file, ...args] = cmd;
    if (file === undefined) {
      reject(new Error("run: empty command"));
      return;
    }
    const t0 = performance.now();
    const child = spawn(file, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      cwd: opts.cwd,
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
        code: code ?? 128 + (signal ? (SIGNO[signal] ?? 0) : 0),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: timedOut ? `${stderr}\n[killed after ${opts.timeoutMs} ms]` : stderr,
        ms: performance.now() - t0,
      });
    });
  });
}

/** Like run(), but throws with the output on a non-zero exit; resolves to stdout. */
export async function runOk(cmd: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, opts);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")}: exit ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Runs a command synchronously (blocks the event loop: only where nothing else runs); throws with its output on failure. */
export function sh(file: string, args: string[]): string {
  const r = spawnSync(file, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${file} ${args.join(" ")}: exit ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A promise for a child's exit status (exit code, or 128 + signal number). */
export function exitOf(child: ChildProcess): Promise<number> {
  return new Promise((res) => {
    if (child.exitCode !== null) return res(child.exitCode);
    if (child.signalCode !== null) return res(128 + (SIGNO[child.signalCode] ?? 0));
    child.once("exit", (code, signal) => res(code ?? 128 + (signal ? (SIGNO[signal] ?? 0) : 0)));
  });
}

/** The exit status as a number: the code, or 128 + the signal's number. */
export function statusNumber(code: number | null, signal: string | null): number {
  return code ?? 128 + (signal ? (SIGNO[signal as NodeJS.Signals] ?? 0) : 0);
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

/** True when something accepts connections on the unix socket: the product's probe (thinsnap refuses pool commands by it). */
export { socketAccepts };

/** A file's text, "" when it cannot be read (yet). */
export function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** The last `lines` lines of a log file. */
export function tail(file: string, lines: number): string {
  return readText(file).split("\n").slice(-lines).join("\n");
}

// ------------------------------------------------------------ long-running

/** A long-running child with stdout and stderr in a log file. */
export interface Background {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  /** Resolves to the exit status (code, or 128 + signal number). */
  exited: Promise<number>;
  /** The exit status once it exited, else null. */
  status(): number | null;
  /** SIGTERM (SIGKILL after timeoutMs), waits; resolves to the exit status. */
  stop(timeoutMs?: number): Promise<number>;
  /** Resolves when `path` accepts connections; throws with the log's tail if the process exits first or on timeout. */
  waitForSocket(path: string, timeoutMs: number): Promise<void>;
}

/** Starts a long-running process with stdout+stderr appended to logFile. */
export function startBackground(
  name: string,
  cmd: string[],
  logFile: string,
  opts: { env?: Record<string, string>; detached?: boolean } = {},
): Background {
  const [file, ...args] = cmd;
  if (file === undefined) throw new Error(`${name}: empty command`);
  const fd = openSync(logFile, "a");
  let child: ChildProcess;
  try {
    child = spawn(file, args, {
      stdio: ["ignore", fd, fd],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      detached: opts.detached === true,
    });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`${name}: spawn failed`);
  const exited = exitOf(child);
  let status: number | null = null;
  void exited.then((c) => (status = c));
  return {
    name,
    child,
    pid: child.pid,
    logFile,
    exited,
    status: () => status,
    async stop(timeoutMs = 30_000) {
      if (status !== null) return status;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(t);
      }
    },
    waitForSocket: (path, timeoutMs) =>
      waitFor(`${name} (${path})`, () => socketAccepts(path), {
        timeoutMs,
        intervalMs: 50,
        died: () => (status === null ? null : `exited with status ${status}; log:\n${tail(logFile, 40)}`),
      }),
  };
}

// ------------------------------------------------------------------ /proc

/** VmRSS (or another /proc/PID/status field) in KiB; NaN when the field is missing. Throws once the process is gone. */
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

// ------------------------------------------------------------------ mounts

export interface MountSpec {
  type: string;
  source: string;
  options: string[];
}

/**
 * Mounts the first of `mounts` on a fresh directory, runs fn, unmounts --
 * with mount(8) as child processes, so other work of the test keeps running
 * meanwhile.
 */
export async function withMount<T>(mounts: MountSpec | MountSpec[], fn: (dir: string) => T | Promise<T>, prefix = "/tmp/ts-mnt-"): Promise<T> {
  const m = Array.isArray(mounts) ? mounts[0] : mounts;
  if (m === undefined) throw new Error("withMount: no mount");
  const dir = mkdtempSync(prefix);
  const args = ["mount", "-t", m.type];
  if (m.options.length) args.push("-o", m.options.join(","));
  await runOk([...args, m.source, dir]);
  try {
    return await fn(dir);
  } finally {
    await runOk(["umount", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}
