/**
 * Opening device-mapper and the pool for the CLI commands, with the errors an
 * operator can act on (not root, no libdevmapper, no dm in the kernel, no pool).
 */
import { existsSync, mkdirSync, openSync, closeSync, readSync, truncateSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { DeviceMapper } from "../dm/device-mapper.ts";
import { attachLoop, loopsForFile } from "../dm/blockdev.ts";
import { createPool, ThinPool } from "../dm/thin-pool.ts";
import { tryLock } from "../sys/libc.ts";
import type { Config, PoolConfig } from "../config/config.ts";
import type { Logger } from "../log.ts";

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export function requireRoot(what: string): void {
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    throw new CliError(`${what} must run as root: device-mapper needs CAP_SYS_ADMIN`);
  }
}

export function openDeviceMapper(): DeviceMapper {
  let dm: DeviceMapper;
  try {
    dm = new DeviceMapper();
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  try {
    dm.driverVersion();
  } catch (e) {
    throw new CliError(
      `the kernel's device-mapper does not answer (${(e as Error).message}); ` +
        `load it with: modprobe dm_mod dm_thin_pool`,
    );
  }
  return dm;
}

export function openPool(dm: DeviceMapper, name: string): ThinPool {
  const pool = new ThinPool(dm, name);
  if (!dm.info(name)) {
    throw new CliError(
      `thin-pool "${name}" does not exist: create it with ` +
        `"thinsnap pool create --name ${name} --data-file /var/lib/thinsnap/pool/data --data-size 100G" ` +
        `(or from block devices with --data-dev/--meta-dev), or add a [pool] table to the config`,
    );
  }
  try {
    pool.table();
  } catch {
    throw new CliError(`device "${name}" exists but is not a thin-pool (check pool_name)`);
  }
  return pool;
}

/** Bytes 0..4095 of a device/file are all zero (no thin-pool superblock there). */
export function isBlank(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).every((b) => b === 0);
  } finally {
    closeSync(fd);
  }
}

function ensureFile(path: string, size: bigint): boolean {
  if (existsSync(path)) return false;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, "", { mode: 0o600 });
  truncateSync(path, Number(size));
  return true;
}

function loopFor(file: string): string {
  return loopsForFile(file)[0] ?? attachLoop(file);
}

/**
 * Creates (or after a reboot, re-creates over the same files) a file-backed
 * pool: sparse files, loop devices, the thin-pool device. Existing metadata is
 * reused, so snapshots survive a reboot of a loop-based pool.
 */
export function ensureFilePool(dm: DeviceMapper, name: string, p: PoolConfig, log: Logger): ThinPool {
  if (dm.info(name)) return openPool(dm, name);
  const newData = ensureFile(p.dataFile, p.dataSize);
  const newMeta = ensureFile(p.metaFile, p.metaSize);
  if (newMeta !== newData) {
    throw new CliError(
      `pool "${name}": only one of ${p.dataFile} and ${p.metaFile} existed; refusing to pair new metadata with old data (or the reverse)`,
    );
  }
  const metadataDev = loopFor(p.metaFile);
  const dataDev = loopFor(p.dataFile);
  createPool(dm, name, {
    metadataDev,
    dataDev,
    blockSectors: Number(p.blockSize / 512n),
    lowWaterMark: p.lowWaterMark,
  });
  log.info(newData ? "created file-backed thin-pool" : "reloaded file-backed thin-pool", {
    pool: name,
    data: p.dataFile,
    metadata: p.metaFile,
    data_dev: dataDev,
    meta_dev: metadataDev,
  });
  return openPool(dm, name);
}

/** The pool the config names: created from [pool] when present. */
export function poolFromConfig(dm: DeviceMapper, cfg: Config, log: Logger): ThinPool {
  return cfg.pool ? ensureFilePool(dm, cfg.poolName, cfg.pool, log) : openPool(dm, cfg.poolName);
}

/**
 * One thinsnap per state directory: serve and check --repair hold
 * <root>/thinsnap.lock for their whole life (released by the kernel on exit).
 */
export function lockRoot(rootPath: string, what: string): void {
  mkdirSync(rootPath, { recursive: true, mode: 0o700 });
  const path = `${rootPath}/thinsnap.lock`;
  const fd = openSync(path, "a", 0o600);
  if (!tryLock(fd, path)) {
    closeSync(fd);
    throw new CliError(`another thinsnap process holds ${path}: ${what} refused (one thinsnap per root_path)`);
  }
  // keep fd open on purpose: the lock goes with the process
}
