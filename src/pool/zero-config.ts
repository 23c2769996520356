/**
 * The embedded default's one measured value: the size of the pool's data
 * file. An existing file keeps its size (a reload after a reboot); a new one
 * is sized from the free space of the file system it will live on.
 */
import { existsSync, statfsSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { ConfigError } from "../config/config.ts";
import type { EmbeddedDefault } from "../config/config.ts";
import { makeIssue } from "../config/issues.ts";
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

export const embeddedDefault: EmbeddedDefault = {
  dataSize(dataFile: string): bigint {
    if (existsSync(dataFile)) return BigInt(statSync(dataFile).size);
    const dir = existingAncestor(dirname(dataFile));
    const free = freeSpace(dir);
    const size = dataSizeForFreeSpace(free);
    if (size !== null) return size;
    const why =
      `no config file, and the embedded default's pool (${ZERO_CONFIG_DATA_RULE}) would be below ` +
      `${formatSize(MIN_ZERO_CONFIG_DATA_SIZE)}: ${dir} has ${formatSize(free)} free. Free some space, pass --root DIR ` +
      `on a larger file system or --data-size, or write a config (thinsnap config example)`;
    throw new ConfigError([makeIssue({ file: null, line: null, origin: "embedded default" }, "pool.data_size", null, why, false)]);
  },
};
