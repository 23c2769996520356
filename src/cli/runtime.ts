/**
 * Opening device-mapper and the pool for the CLI commands, with the errors an
 * operator can act on (not root, no libdevmapper, no dm in the kernel, no pool).
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import { DeviceMapper } from "../dm/device-mapper.ts";
import { ThinPool } from "../dm/thin-pool.ts";
import { tryLock } from "../sys/libc.ts";
import type { Config } from "../config/types.ts";
import { DEFAULTS } from "../config/config.ts";
import { DEFAULT_DATA_SIZE } from "../pool/geometry.ts";
import { ensureFilePool } from "../pool/provision.ts";
import { sizeText } from "../config/kinds.ts";
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
        `"thinsnap pool create --name ${name} --data-file ${DEFAULTS.rootPath}/pool/data ` +
        `--data-size ${sizeText(DEFAULT_DATA_SIZE)}" ` +
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

/** The pool the config names: created from [pool] when present. */
export function poolFromConfig(dm: DeviceMapper, cfg: Config, log: Logger): ThinPool {
  if (cfg.pool) ensureFilePool(dm, cfg.poolName, cfg.pool, log);
  return openPool(dm, cfg.poolName);
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
