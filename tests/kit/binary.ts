/**
 * The compiled executable (dist/thinsnap, `npm run build`; tests/run-all
 * builds it first) serving a fresh file-backed pool, for the guest tests
 * that check what only the bundled binary can get wrong.
 */
import { expect } from "bun:test";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createFilePool, destroyFilePool } from "./cli.ts";
import { Daemon, inDir, type DaemonConfig } from "./daemon.ts";
import { REPO } from "./process.ts";

export const BINARY = join(REPO, "dist/thinsnap");

/** True (and says so) when the binary is missing and `suite` would run otherwise. */
export function binaryMissing(suite: string, wouldRun: boolean): boolean {
  const missing = !existsSync(BINARY);
  if (wouldRun && missing) console.warn(`${suite} SKIPPED: ${BINARY} missing (npm run build)`);
  return missing;
}

/**
 * Creates file pool `name` (files under /tmp/NAME) with the binary, runs `fn`
 * on the binary serving it with `config`, expects a clean stop (exit 0), and
 * removes the pool and its directory whatever happened.
 */
export async function withBinaryDaemon(
  name: string,
  dataSize: string,
  config: Omit<DaemonConfig, "rootPath" | "address" | "poolName">,
  fn: (d: Daemon) => Promise<void>,
): Promise<void> {
  const dir = `/tmp/${name}`;
  rmSync(dir, { recursive: true, force: true });
  await createFilePool({ name, dataFile: `${dir}/pool.data`, dataSize, binary: BINARY });
  let d: Daemon | undefined;
  try {
    d = await Daemon.serving({ ...inDir(`${dir}/ts`, { poolName: name, ...config }), binary: BINARY, readyTimeoutMs: 120_000 });
    await fn(d);
    expect(await d.stop()).toBe(0);
    d = undefined;
  } finally {
    await d?.kill();
    await destroyFilePool(name, { deleteFiles: true, binary: BINARY });
    rmSync(dir, { recursive: true, force: true });
  }
}
