/**
 * Thin-pool geometry: the kernel's bounds on block and metadata sizes, and
 * the defaults thinsnap derives from a pool's data size. Pure; the one place
 * for these numbers (config, `thinsnap pool create` and dm/thin-pool.ts use it).
 */
import { formatSize, GiB, KiB, MiB } from "../config/units.ts";
import { SECTOR } from "../dm/status.ts";

export { SECTOR };

/** dm-thin: a data block is a multiple of 64 KiB (128 sectors), 64 KiB..1 GiB. */
export const MIN_BLOCK_SIZE = 64n * KiB;
export const MAX_BLOCK_SIZE = GiB;
/** dm-thin's metadata block size. */
export const META_BLOCK_SIZE = 4n * KiB;
/** Kernel guidance: metadata of at least 2 MiB; 16 GiB is the largest supported. */
export const MIN_META_SIZE = 2n * MiB;
export const MAX_META_SIZE = 16n * GiB;
/**
 * What the kernel actually uses of a metadata device: DM_SM_METADATA_MAX_BLOCKS
 * (255 * (2^14 - 64)) blocks of 4 KiB, just over 15.87 GiB; anything past it is ignored
 * with a warning. Derived sizes are capped here.
 */
export const KERNEL_META_MAX = 255n * ((1n << 14n) - 64n) * META_BLOCK_SIZE;
/**
 * Floor of the derived metadata size: the 48-bytes-per-block formula counts
 * mappings only, and every one of a snapshotter's thousands of thin devices
 * costs metadata blocks of its own (a sparse file costs only what is used).
 */
export const DEFAULT_MIN_META_SIZE = 64n * MiB;
/** Like containerd's docs (`truncate -s 100G data`); the file is sparse. */
export const DEFAULT_DATA_SIZE = 100n * GiB;
/** 128 sectors, the block size containerd's docs and tests use. */
export const DEFAULT_BLOCK_SIZE = 64n * KiB;
/** containerd's docs create the pool with low_water_mark 32768 (blocks). */
export const DEFAULT_LOW_WATER_MARK_MAX = 32768n;

/** Docker devicemapper's dm.basesize; the base_image_size of a config without [pool]. */
export const DEFAULT_BASE_IMAGE_SIZE = 10n * GiB;
/**
 * Formatting a base costs about 2.2 % of its size in pool data (ext4 with
 * lazy_itable_init=0: a 10 GiB base took 229 MiB, 11 % of a 2 GiB pool), so a
 * pool thinsnap sizes gets a base of a quarter of its data at most: the
 * format then costs about 0.6 % of the pool.
 */
export const BASE_IMAGE_SIZE_RULE = `data_size / 4 rounded down to 1 MiB, at most ${formatSize(DEFAULT_BASE_IMAGE_SIZE)}`;
export function baseImageSizeFor(dataSize: bigint): bigint {
  const quarter = (dataSize / 4n / MiB) * MiB;
  if (quarter < MiB) return MiB;
  return quarter < DEFAULT_BASE_IMAGE_SIZE ? quarter : DEFAULT_BASE_IMAGE_SIZE;
}

/**
 * The embedded default (no config file) sizes its sparse data file from the
 * free space of root_path's file system: half of it, so that the pool filling
 * up cannot fill the file system under it (a loop device on a full file
 * system fails writes), rounded down to 1 GiB, at most DEFAULT_DATA_SIZE.
 */
export const ZERO_CONFIG_DATA_RULE = `half the free space of root_path's file system, rounded down to 1 GiB, at most ${formatSize(DEFAULT_DATA_SIZE)}`;
/** Below this the embedded default refuses: an image or two would not fit. */
export const MIN_ZERO_CONFIG_DATA_SIZE = GiB;
/** The data size for `freeBytes` of free space, or null when it is below MIN_ZERO_CONFIG_DATA_SIZE. */
export function dataSizeForFreeSpace(freeBytes: bigint): bigint | null {
  const half = (freeBytes / 2n / GiB) * GiB;
  if (half < MIN_ZERO_CONFIG_DATA_SIZE) return null;
  return half < DEFAULT_DATA_SIZE ? half : DEFAULT_DATA_SIZE;
}

const roundUp = (n: bigint, m: bigint): bigint => ((n + m - 1n) / m) * m;
const dataBlocks = (dataSize: bigint, blockSize: bigint): bigint => (blockSize > 0n ? dataSize / blockSize : 0n);

/**
 * Metadata size for a pool, after the kernel's guidance (thin-provisioning.rst):
 * 48 bytes per data block, rounded up to the 4 KiB metadata block, at least
 * DEFAULT_MIN_META_SIZE and at most KERNEL_META_MAX. 100 GiB at 64 KiB blocks: 75 MiB.
 */
export function defaultMetaSize(dataSize: bigint, blockSize: bigint): bigint {
  const size = roundUp(48n * dataBlocks(dataSize, blockSize), META_BLOCK_SIZE);
  if (size < DEFAULT_MIN_META_SIZE) return DEFAULT_MIN_META_SIZE;
  if (size > KERNEL_META_MAX) return KERNEL_META_MAX;
  return size;
}

/**
 * Low water mark in blocks: containerd's docs use 32768 (2 GiB at 64 KiB
 * blocks); the kernel rejects a mark at or above the pool's block count, so
 * pools smaller than 327 680 blocks get a tenth of their blocks.
 */
export function defaultLowWaterMark(dataSize: bigint, blockSize: bigint): bigint {
  const tenth = dataBlocks(dataSize, blockSize) / 10n;
  return tenth < DEFAULT_LOW_WATER_MARK_MAX ? tenth : DEFAULT_LOW_WATER_MARK_MAX;
}

/** Help text for the derived defaults (config docs, `pool create --help`). */
export const META_SIZE_RULE =
  `48 bytes per data block, rounded up to ${formatSize(META_BLOCK_SIZE)}, ` +
  `at least ${formatSize(DEFAULT_MIN_META_SIZE)}, at most ${formatSize(KERNEL_META_MAX)}`;
export const LOW_WATER_MARK_RULE = `min(${DEFAULT_LOW_WATER_MARK_MAX}, data blocks / 10)`;

// Checks: each answers null when fine, else what is wrong (naming the limit).

export function blockSizeProblem(blockSize: bigint): string | null {
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || blockSize % MIN_BLOCK_SIZE !== 0n) {
    return `must be a multiple of ${formatSize(MIN_BLOCK_SIZE)} between ${formatSize(MIN_BLOCK_SIZE)} and ${formatSize(MAX_BLOCK_SIZE)} (dm-thin's limits)`;
  }
  return null;
}

/** Assumes a valid block size. */
export function dataSizeProblem(dataSize: bigint, blockSize: bigint): string | null {
  if (dataSize < blockSize || dataSize % blockSize !== 0n) {
    return `must be a non-zero multiple of block_size (${formatSize(blockSize)}); got ${dataSize} bytes`;
  }
  return null;
}

export function metaSizeProblem(metaSize: bigint): string | null {
  if (metaSize < MIN_META_SIZE || metaSize > MAX_META_SIZE) {
    return `must be between ${formatSize(MIN_META_SIZE)} and ${formatSize(MAX_META_SIZE)}`;
  }
  if (metaSize % META_BLOCK_SIZE !== 0n) return `must be a multiple of ${formatSize(META_BLOCK_SIZE)} (the metadata block size)`;
  return null;
}

/** dataSize and blockSize null: not known to be valid, only the sign is checked. */
export function lowWaterMarkProblem(mark: bigint, dataSize: bigint | null, blockSize: bigint | null): string | null {
  if (mark < 0n) return "must not be negative";
  if (dataSize !== null && blockSize !== null && mark >= dataSize / blockSize) {
    return `must be below the number of data blocks (${dataSize / blockSize})`;
  }
  return null;
}

/** A pool's data block size in sectors, as the thin-pool table takes it. */
export function blockSectors(blockSize: bigint): number {
  return Number(blockSize / SECTOR);
}
