/**
 * Making and unmaking thin-pools: file-backed ones (sparse files on loop
 * devices, re-created over the same files after a reboot) and ones over
 * given block devices. Refuses to overwrite anything that holds data unless
 * forced. Errors are SnapshotterErrors (failed_precondition) naming the fix.
 */
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { attachLoop, blockDeviceSize, detachLoop, devPath, loopBackingFile, loopsForFile } from "../dm/blockdev.ts";
import type { DeviceMapper } from "../dm/device-mapper.ts";
import { createPool, ThinPool } from "../dm/thin-pool.ts";
import { failedPrecondition } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { PoolConfig } from "../config/types.ts";
import { formatSize } from "../config/units.ts";
import { MOUNTINFO, parseMountinfo } from "../sys/mountinfo.ts";
import { blockSectors, defaultLowWaterMark, META_BLOCK_SIZE } from "./geometry.ts";
import { thinDevicesOfPool } from "../dm/pool-contents.ts";

/** A thin-pool's superblock is the first metadata block of its metadata device. */
const SUPERBLOCK_BYTES = Number(META_BLOCK_SIZE);

/** Bytes 0..4095 of a device/file are all zero (no thin-pool superblock there). */
export function isBlank(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(SUPERBLOCK_BYTES);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).every((b) => b === 0);
  } finally {
    closeSync(fd);
  }
}

function zeroSuperblock(dev: string): void {
  const fd = openSync(dev, "r+");
  try {
    writeSync(fd, Buffer.alloc(SUPERBLOCK_BYTES), 0, SUPERBLOCK_BYTES, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes a sparse file of `size` unless it exists; true when it was made. */
function ensureFile(path: string, size: bigint, log: Logger): boolean {
  if (existsSync(path)) return false;
  log.info("creating a sparse file", { file: path, size: formatSize(size) });
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, "", { mode: 0o600 });
  truncateSync(path, Number(size));
  return true;
}

const loopFor = (file: string): string => loopsForFile(file)[0] ?? attachLoop(file);

function refuseExisting(dm: DeviceMapper, name: string): void {
  if (dm.info(name)) throw failedPrecondition(`a device named "${name}" already exists; refusing to touch it`);
}

/**
 * Creates (or after a reboot, re-creates over the same files) a file-backed
 * pool: sparse files, loop devices, the thin-pool device. Existing metadata
 * is reused, so snapshots survive a reboot of a loop-based pool. A pool that
 * is already there is left as it is.
 */
export function ensureFilePool(dm: DeviceMapper, name: string, p: PoolConfig, log: Logger): ThinPool {
  if (dm.info(name)) return new ThinPool(dm, name);
  // Check both before making either: a lone new file would be the mismatch.
  if (existsSync(p.dataFile) !== existsSync(p.metaFile)) {
    throw failedPrecondition(
      `pool "${name}": only one of ${p.dataFile} and ${p.metaFile} exists; refusing to pair new metadata with old data ` +
        `(or the reverse): move the other one back, or both aside to start a new pool`,
    );
  }
  const newData = ensureFile(p.dataFile, p.dataSize, log);
  ensureFile(p.metaFile, p.metaSize, log);
  log.info("attaching loop devices and loading the thin-pool", { pool: name });
  const metadataDev = loopFor(p.metaFile);
  const dataDev = loopFor(p.dataFile);
  createPool(dm, name, { metadataDev, dataDev, blockSectors: blockSectors(p.blockSize), lowWaterMark: p.lowWaterMark });
  log.info(newData ? "created file-backed thin-pool" : "reloaded file-backed thin-pool", {
    pool: name,
    data: p.dataFile,
    metadata: p.metaFile,
    data_dev: dataDev,
    meta_dev: metadataDev,
  });
  return new ThinPool(dm, name);
}

/**
 * A new file-backed pool (`thinsnap pool create --data-file`): files that
 * hold data are refused unless `force` (their contents are then lost).
 */
export function createFilePool(dm: DeviceMapper, name: string, p: PoolConfig, force: boolean, log: Logger): ThinPool {
  refuseExisting(dm, name);
  for (const f of [p.dataFile, p.metaFile]) {
    if (existsSync(f) && statSync(f).size > 0 && !isBlank(f) && !force) {
      throw failedPrecondition(`${f} already holds data; use --force to overwrite it (its contents are lost)`);
    }
  }
  rmSync(p.metaFile, { force: true }); // a stale superblock would be reused by the kernel
  if (force) rmSync(p.dataFile, { force: true });
  return ensureFilePool(dm, name, p, log);
}

export interface DevicePoolSpec {
  dataDev: string;
  metaDev: string;
  blockSize: bigint;
  /** Default: geometry's, from the data device's size. */
  lowWaterMark?: bigint;
}

/** A new pool over two block devices; devices that hold data are refused unless `force`. */
export function createDevicePool(dm: DeviceMapper, name: string, s: DevicePoolSpec, force: boolean): ThinPool {
  refuseExisting(dm, name);
  for (const d of [s.dataDev, s.metaDev]) {
    if (!isBlank(d) && !force) {
      throw failedPrecondition(`${d} is not empty (its first 4 KiB are not zero); use --force to overwrite it`);
    }
  }
  if (force) zeroSuperblock(s.metaDev);
  const lowWaterMark = s.lowWaterMark ?? defaultLowWaterMark(blockDeviceSize(s.dataDev), s.blockSize);
  createPool(dm, name, { metadataDev: s.metaDev, dataDev: s.dataDev, blockSectors: blockSectors(s.blockSize), lowWaterMark });
  return new ThinPool(dm, name);
}

/** The loop devices under a pool's metadata and data (both: a file-backed pool). */
export function poolLoops(pool: ThinPool): string[] {
  const t = pool.table();
  return [t.metadataDev, t.dataDev].map(devPath).filter((d) => /^\/dev\/loop\d+$/.test(d));
}

/** What holds a device open: its mount points, else its holders in sysfs, else the open count. */
export function holdersOf(major: number, minor: number, openCount: number, mountinfo = MOUNTINFO): string[] {
  const mm = `${major}:${minor}`;
  let mounts: string[] = [];
  try {
    mounts = parseMountinfo(readFileSync(mountinfo, "utf8"))
      .filter((m) => m.device === mm)
      .map((m) => `mounted on ${m.point}`);
  } catch {
    // no mountinfo: the open count still tells
  }
  if (mounts.length > 0) return mounts;
  let holders: string[] = [];
  try {
    holders = readdirSync(`/sys/dev/block/${mm}/holders`).map((h) => `held by ${h}`);
  } catch {
    // no sysfs entry
  }
  return holders.length > 0 ? holders : [`open ${openCount} time(s) (a process has it open)`];
}

/** Thin devices of the pool that are open, each with what holds it; empty when none is. */
export function busyThinDevices(dm: DeviceMapper, poolName: string): string[] {
  const busy: string[] = [];
  for (const thin of thinDevicesOfPool(dm, poolName)) {
    const info = dm.info(thin);
    if (info && info.openCount > 0) busy.push(`${thin} (${holdersOf(info.major, info.minor, info.openCount).join(", ")})`);
  }
  return busy;
}

/**
 * Removes the pool, its thin devices and (file-backed) its loop devices;
 * with deleteFiles also the files. A pool not on loop devices needs `force`.
 * Everything is checked before anything is removed: a thin device in use
 * refuses the whole destroy (even forced), so no pool is left half destroyed.
 * Answers the backing files.
 */
export function destroyPool(dm: DeviceMapper, pool: ThinPool, opts: { force: boolean; deleteFiles: boolean }, log: Logger): string[] {
  const loops = poolLoops(pool);
  if (loops.length !== 2 && !opts.force) {
    throw failedPrecondition(`pool "${pool.name}" is not file-backed (loop devices); use --force to remove it anyway`);
  }
  const busy = busyThinDevices(dm, pool.name);
  if (busy.length > 0) {
    throw failedPrecondition(
      `pool "${pool.name}" is in use: ${busy.join("; ")}. Stop the containers and unmount these first ` +
        `(--force does not remove devices in use); nothing was removed`,
    );
  }
  const thins = thinDevicesOfPool(dm, pool.name);
  if (thins.length > 0) log.info("removing thin devices", { pool: pool.name, count: thins.length });
  for (const thin of thins) dm.remove(thin, { retry: true });
  dm.remove(pool.name, { retry: true });
  const files = loops.map(loopBackingFile).filter((f): f is string => f !== null);
  for (const l of loops) detachLoop(l);
  if (opts.deleteFiles) for (const f of files) rmSync(f, { force: true });
  return files;
}
