/**
 * The embedded default's one measured value: the size of the pool's data
 * file. An existing file keeps its size (a reload after a reboot); a new one
 * is sized from the free space of the file system it will live on.
 */
import { existsSync, statfsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import type { EmbeddedDefault } from "../config/config.ts";
import { formatSize } from "../config/units.ts";
import { dataSizeForFreeSpace, MIN_ZERO_CONFIG_DATA_SIZE, ZERO_CONFIG_DATA_RULE } from "./geometry.ts";

/** The nearest existing directory at or above `path` (the file system a new file would be on). */
export function existingAncestor(path: string): string {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

/** Bytes an unprivileged writer could still use on the file system holding `path`. */
export function freeSpace(path: string): bigint {
  const s = statfsSync(existingAncestor(path), { bigint: true });
  return s.bavail * s.bsize;
}

/**
 * The data size of the embedded default: an existing file's, else one
 * suited to the free space (MIN_ZERO_CONFIG_DATA_SIZE when there is too
 * little: only making the pool is refused, see roomProblem; reading the
 * config for status, check or destroy is not).
 */
export const embeddedDefault: EmbeddedDefault = {
  dataSize(dataFile: string): bigint {
    if (existsSync(dataFile)) return BigInt(statSync(dataFile).size);
    return dataSizeForFreeSpace(freeSpace(dirname(dataFile))) ?? MIN_ZERO_CONFIG_DATA_SIZE;
  },
};

/** Why the embedded default may not make its pool at `dataFile` (too little free space), or null. */
export function roomProblem(dataFile: string): string | null {
  if (existsSync(dataFile)) return null;
  const dir = existingAncestor(dirname(dataFile));
  const free = freeSpace(dir);
  if (dataSizeForFreeSpace(free) !== null) return null;
  return (
    `no config file, and the embedded default's pool (${ZERO_CONFIG_DATA_RULE}) would be below ` +
    `${formatSize(MIN_ZERO_CONFIG_DATA_SIZE)}: ${dir} has ${formatSize(free)} free. Free some space, pass --root DIR ` +
    `on a larger file system or --data-size SIZE, or write a config (thinsnap config example)`
  );
}
