/**
 * Opening device-mapper and the pool for the CLI commands, with the errors an
 * operator can act on (not root, no libdevmapper, no dm in the kernel, no pool).
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { release } from "node:os";
import { DeviceMapper } from "../dm/device-mapper.ts";
import { ThinPool } from "../dm/thin-pool.ts";
import { tryLock } from "../sys/libc.ts";
import type { Config } from "../config/types.ts";
import { ensureFilePool } from "../pool/provision.ts";
import { mayBeServing } from "../rpc/socket.ts";
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
    throw new CliError(`the kernel's device-mapper does not answer (${(e as Error).message}); ${kernelHint()}`);
  }
  return dm;
}

const readOr = (path: string): string => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
};

/**
 * What to do about a kernel whose device-mapper does not answer: modprobe
 * only when this kernel has the modules to load.
 */
export function kernelHint(kernel = release(), modules = `/lib/modules/${kernel}`): string {
  const has = (m: string): boolean => new RegExp(`/${m}\\.ko`).test(readOr(`${modules}/modules.dep`) + readOr(`${modules}/modules.builtin`));
  if (!existsSync(modules)) return `this kernel (${kernel}) has no modules directory ${modules}: boot a kernel with device-mapper thin provisioning (CONFIG_DM_THIN_PROVISIONING)`;
  if (!has("dm-mod") || !has("dm-thin-pool")) {
    return `this kernel (${kernel}) has no dm-mod/dm-thin-pool module: boot a kernel with device-mapper thin provisioning (CONFIG_DM_THIN_PROVISIONING)`;
  }
  return "load it with: modprobe dm_thin_pool (it loads dm_mod too)";
}

export function openPool(dm: DeviceMapper, name: string): ThinPool {
  const pool = new ThinPool(dm, name);
  if (!dm.info(name)) {
    throw new CliError(
      `thin-pool "${name}" does not exist: create it with "thinsnap pool create --pool-name ${name}" ` +
        `(a file-backed pool as the config's [pool] or the embedded default says; --data-file/--data-size to choose), ` +
        `or over block devices with --data-dev/--meta-dev; or let thinsnap serve create it from a [pool] table`,
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

/**
 * Refuses `what` while thinsnap serve runs on this config (its socket
 * answers, or it holds root_path's lock), then holds the lock itself so that
 * no serve starts meanwhile.
 */
export async function refuseWhileServing(cfg: Config, what: string): Promise<void> {
  if (await mayBeServing(cfg.address)) {
    throw new CliError(`thinsnap serve is running on ${cfg.address}: stop it before ${what} (systemctl stop thinsnap)`);
  }
  // Always: a serve starting now creates root_path and would take the lock after us.
  lockRoot(cfg.rootPath, what);
}
