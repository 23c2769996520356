/**
 * When the pool has too little space for a new device: one rule, used by the
 * snapshotter to refuse (ResourceExhausted) and by the pool watcher to say
 * when the pool crosses it. Pure: figures in, verdict out.
 */
import type { PoolStatus } from "./pool-api.ts";

/** The resource a refusal is for (`thinsnap_space_refusals_total{resource}`). */
export const SPACE_RESOURCES = ["data", "metadata", "min_free_space"] as const;
export type SpaceResource = (typeof SPACE_RESOURCES)[number];

/** Metadata blocks (4 KiB) we never let the pool go below: a full metadata device turns the pool read-only. */
export const MIN_FREE_METADATA_BLOCKS = 64n;

/** dm-thin's metadata block size (THIN_METADATA_BLOCK_SIZE): status counts metadata in these. */
export const METADATA_BLOCK_BYTES = 4096n;

/** min_free_space as configured: bytes, or a percentage of the pool's data size. */
export interface SpaceLimits {
  minFreeSpace: bigint;
  /** null: minFreeSpace (bytes) alone. */
  minFreeSpacePercent: number | null;
}

/** Free data bytes the pool must keep: the larger of the byte and the percentage reserve. */
export function dataReserveBytes(totalDataBytes: bigint, limits: SpaceLimits): bigint {
  let reserve = limits.minFreeSpace;
  if (limits.minFreeSpacePercent !== null) {
    const pct = (totalDataBytes * BigInt(Math.round(limits.minFreeSpacePercent * 100))) / 10000n;
    if (pct > reserve) reserve = pct;
  }
  return reserve;
}

/** "data u/t blocks of b bytes used, metadata u/t blocks used": the numbers every space message carries. */
export function spaceNumbers(st: PoolStatus, blockSize: bigint): string {
  return (
    `data ${st.usedDataBlocks}/${st.totalDataBlocks} blocks of ${blockSize} bytes used, ` +
    `metadata ${st.usedMetadataBlocks}/${st.totalMetadataBlocks} blocks used`
  );
}

export interface SpaceRefusal {
  resource: SpaceResource;
  /** Names the pool and carries the numbers. */
  message: string;
}

/**
 * Why a new device would be refused now, or null. A pool that is not rw
 * refuses everything: out_of_data_space is a data problem; read-only is
 * what the kernel does when metadata space runs out (or on a metadata error).
 */
export function spaceRefusal(poolName: string, st: PoolStatus, blockSize: bigint, limits: SpaceLimits): SpaceRefusal | null {
  const numbers = spaceNumbers(st, blockSize);
  if (st.mode !== "rw") {
    return { resource: st.mode === "out_of_data_space" ? "data" : "metadata", message: `pool ${poolName} is ${st.mode} (${numbers})` };
  }
  const freeData = (st.totalDataBlocks - st.usedDataBlocks) * blockSize;
  const reserve = dataReserveBytes(st.totalDataBlocks * blockSize, limits);
  if (freeData <= reserve || freeData === 0n) {
    return {
      resource: freeData === 0n ? "data" : "min_free_space",
      message: `pool ${poolName} has too little free data space (${numbers}; reserve ${reserve} bytes)`,
    };
  }
  if (st.totalMetadataBlocks - st.usedMetadataBlocks < MIN_FREE_METADATA_BLOCKS) {
    return { resource: "metadata", message: `pool ${poolName} metadata is nearly full (${numbers})` };
  }
  return null;
}

/** Which resource a kernel ENOSPC was about, judged from the status read after it. */
export function enospcResource(st: PoolStatus | null): SpaceResource {
  if (st !== null && st.totalMetadataBlocks - st.usedMetadataBlocks < MIN_FREE_METADATA_BLOCKS) return "metadata";
  return "data";
}
