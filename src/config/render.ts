/**
 * A resolved configuration written back as thinsnap's TOML (what `serve`
 * chose without a config file, what `pool create` made). The containerd
 * lines that go with it are src/install/snippets.ts's.
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
