/**
 * The thinsnap CLI as tests, the demo and the benchmark use it: a file-backed
 * thin-pool managed with `thinsnap pool create/status/destroy`, and
 * `thinsnap check`. Needs root and a kernel with device-mapper (the qemu guest
 * of tests/vm/vmrun).
 *
 *   const pool = await createFilePool({ name: "ts-pool", dataFile: "/tmp/x/data", dataSize: "1G" });
 *   ... Daemon.serving(inDir("/tmp/x/thinsnap", { poolName: "ts-pool" })) (./daemon.ts) ...
 *   await destroyFilePool("ts-pool");
 */
import type { PoolReport } from "../../src/cli/pool.ts";
import { mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { thinsnapCommand } from "./daemon.ts";
import { REPO, run, type RunResult } from "./process.ts";

/** Runs a thinsnap CLI command (`pool ...`, `check ...`). */
export async function thinsnap(args: string[], opts: { binary?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run([...(await thinsnapCommand(opts.binary)), ...args], { timeoutMs: opts.timeoutMs ?? 120_000, cwd: REPO });
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

/**
 * A file-backed pool with its data file in `dir`, both made afresh: the pool
 * and the directory an interrupted earlier run in the same guest may have
 * left are removed first. Undone by removeFreshFilePool.
 */
export async function freshFilePool(name: string, dir: string, dataSize = "1G"): Promise<FilePool> {
  await destroyFilePool(name, { deleteFiles: true }).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return createFilePool({ name, dataFile: join(dir, "pool.data"), dataSize });
}

/** Destroys the pool of freshFilePool (its files deleted) and removes `dir`. */
export async function removeFreshFilePool(name: string, dir: string): Promise<void> {
  await destroyFilePool(name, { deleteFiles: true });
  rmSync(dir, { recursive: true, force: true });
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

/** `thinsnap check --config <configPath>`. */
export function checkStore(configPath: string, opts: { binary?: string; repair?: boolean } = {}): Promise<RunResult> {
  const args = ["check", "--config", configPath];
  if (opts.repair === true) args.push("--repair");
  return thinsnap(args, { binary: opts.binary });
}
