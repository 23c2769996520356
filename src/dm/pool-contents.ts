/**
 * What a thin-pool holds, as the kernel and the pool's own metadata say:
 * the thin devices mapped on it, and every thin id it has (thin_ls, the only
 * way to see ids that have no mapping). `check` and the tests compare these
 * with the store (src/consistency/inspect.ts).
 */
import { spawnSync } from "node:child_process";
import { devPath } from "./blockdev.ts";
import type { DeviceMapper } from "./device-mapper.ts";
import { parseThinParams } from "./status.ts";
import type { ThinPool } from "./thin-pool.ts";

/** Mapped thin devices whose table points at the pool. */
export function thinDevicesOfPool(dm: DeviceMapper, name: string): string[] {
  const info = dm.info(name);
  if (!info) return [];
  const mm = `${info.major}:${info.minor}`;
  return dm.list().filter((n) => {
    const t = dm.table(n)[0];
    if (t?.type !== "thin") return false;
    const dev = parseThinParams(t.params).poolDev;
    return dev === mm || dev === `/dev/mapper/${name}`;
  });
}

/**
 * The pool's thin ids, read with thin_ls from a metadata snapshot (safe while
 * the pool is in use); null when thin_ls is not installed.
 */
export function poolThinIds(pool: ThinPool): number[] | null {
  const metaDev = devPath(pool.table().metadataDev);
  pool.reserveMetadataSnap();
  try {
    const r = spawnSync("thin_ls", ["--metadata-snap", "--no-headers", "-o", "DEV", metaDev], { encoding: "utf8" });
    if (r.error) return null;
    if (r.status !== 0) throw new Error(`thin_ls failed: ${r.stderr.trim()} (is thin-provisioning-tools too old for --metadata-snap?)`);
    return r.stdout
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^\d+$/.test(l))
      .map(Number);
  } finally {
    pool.releaseMetadataSnap();
  }
}
