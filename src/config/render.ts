/**
 * A resolved configuration written back as thinsnap's TOML (what `serve`
 * chose without a config file, what `pool create` made), and the
 * containerd snippet that points containerd at it.
 */
import type { Config, MainValues, PoolConfig } from "./types.ts";
import { type Entry, MAIN_KEYS, POOL_KEYS } from "./keys.ts";
import { POOL_TABLE } from "./document.ts";

/** The top-level keys worth writing down: where the pool and the socket are, and the base size chosen for the pool. */
const SHOWN: readonly (keyof MainValues)[] = ["poolName", "rootPath", "address", "baseImageSize"];

const line = <V, F extends keyof V>(e: Entry<V, F>, values: V): string => `${e.key} = ${e.kind.literal(values[e.field])}`;

export function configToml(cfg: Config): string {
  const { pool, minFreeSpace, minFreeSpacePercent, ...rest } = cfg;
  const main: MainValues = { ...rest, minFreeSpace: { bytes: minFreeSpace, percent: minFreeSpacePercent } };
  const lines = MAIN_KEYS.filter((e) => SHOWN.includes(e.field)).map((e) => line(e, main));
  if (pool !== null) lines.push("", `[${POOL_TABLE}]`, ...POOL_KEYS.map((e) => line(e, pool satisfies PoolConfig)));
  return `${lines.join("\n")}\n`;
}

/**
 * What to add to containerd's config.toml (version 2). A local copy: the
 * installer's src/install/snippets.ts is to replace it (one snippet).
 */
export function containerdSnippet(address: string): string {
  return `[proxy_plugins.thinsnap]\n  type = "snapshot"\n  address = ${JSON.stringify(address)}\n`;
}
