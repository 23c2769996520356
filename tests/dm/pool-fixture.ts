/**
 * A file-backed thin-pool made with thinsnap's own binding (loop devices over
 * sparse files in /tmp), and a teardown that leaves nothing behind.
 */
import { thinDevicesOfPool } from "../../src/dm/pool-contents.ts";
import { mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { attachLoop, createPool, detachLoop, DeviceMapper, ThinPool } from "../../src/dm/index.ts";

export interface TestPool {
  name: string;
  dm: DeviceMapper;
  pool: ThinPool;
  dataFile: string;
  metaFile: string;
  destroy(): void;
}

let shared: DeviceMapper | null = null;
export function deviceMapper(): DeviceMapper {
  shared ??= new DeviceMapper();
  return shared;
}

export function createTestPool(
  name: string,
  opts: { dataSize?: number; metaSize?: number; blockSectors?: number } = {},
): TestPool {
  const dm = deviceMapper();
  const dir = "/tmp/thinsnap-test-pools";
  mkdirSync(dir, { recursive: true });
  const dataFile = `${dir}/${name}.data`;
  const metaFile = `${dir}/${name}.meta`;
  writeFileSync(dataFile, "");
  truncateSync(dataFile, opts.dataSize ?? 1 << 30);
  writeFileSync(metaFile, "");
  truncateSync(metaFile, opts.metaSize ?? 16 << 20);
  const metaDev = attachLoop(metaFile);
  const dataDev = attachLoop(dataFile);
  createPool(dm, name, { metadataDev: metaDev, dataDev, blockSectors: opts.blockSectors ?? 128 });
  const pool = new ThinPool(dm, name);
  return {
    name,
    dm,
    pool,
    dataFile,
    metaFile,
    destroy: () => destroyPool(dm, name, [metaDev, dataDev], [dataFile, metaFile]),
  };
}

/** Thin devices whose table points at the pool (the CLI's own lookup). */
export const thinDevicesOf = thinDevicesOfPool;

export function unmountDevice(dm: DeviceMapper, name: string): void {
  const info = dm.info(name);
  if (!info) return;
  const mm = `${info.major}:${info.minor}`;
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[2] === mm)
    .map((f) => f[4]!)
    .reverse();
  for (const m of mounts) spawnSync("umount", ["-l", m]);
}

function destroyPool(dm: DeviceMapper, name: string, loops: string[], files: string[]): void {
  for (const t of thinDevicesOf(dm, name)) {
    unmountDevice(dm, t);
    new ThinPool(dm, name).deactivate(t, { retry: true }); // gone meanwhile is fine
  }
  if (dm.info(name)) dm.remove(name, { retry: true });
  for (const l of loops) detachLoop(l);
  for (const f of files) rmSync(f, { force: true });
}
