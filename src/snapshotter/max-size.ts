/**
 * The per-snapshot size label (containerd.io/snapshot/max-size, containerd
 * 2.4): parsing, limits and rounding. Pure: the snapshotter supplies the
 * pool's numbers and acts on the result.
 */
import { invalidArgument } from "../errors.ts";

/** containerd 2.4's label: the snapshot's size in decimal bytes ("a snapshotter may ignore it"). */
export const MAX_SIZE_LABEL = "containerd.io/snapshot/max-size";

/**
 * What thinsnap reports on a snapshot grown by MAX_SIZE_LABEL and on its
 * descendants (the others have base_image_size): its thin device's size in bytes…
 */
export const SIZE_LABEL = "containerd.io/snapshot/thinsnap/size";

/** …and its filesystem's own size (ext4/xfs may leave a small last group of the device unused). */
export const FS_SIZE_LABEL = "containerd.io/snapshot/thinsnap/fs-size";

/**
 * The largest block device Linux can address: its size in bytes is a signed
 * 64-bit number (loff_t). A thin device's length is limited by that, not by
 * the pool.
 */
export const MAX_THIN_DEVICE_BYTES = (1n << 63n) - 1n;

/**
 * Granularity of a device size: filesystems work in blocks of up to 4 KiB
 * (ext4, xfs) and the pool maps whole data blocks, so sizes are rounded up
 * to both.
 */
const FS_BLOCK_BYTES = 4096n;

export interface SizeLimits {
  /** The pool's data block size in bytes. */
  blockSize: bigint;
  /** The largest size a label may ask for: the max_size_limit option, or the pool's data size by default. */
  limit: bigint;
  /** Where `limit` comes from, for the error message. */
  limitSource: string;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

/** `n` rounded up to a multiple of the pool's block size and of the filesystem block. */
export function roundDeviceSize(n: bigint, blockSize: bigint): bigint {
  const unit = (blockSize / gcd(blockSize, FS_BLOCK_BYTES)) * FS_BLOCK_BYTES;
  return ((n + unit - 1n) / unit) * unit;
}

/**
 * The device size a max-size label asks for, rounded up (never down), or
 * null without the label (then `getLimits` is not called). A value that is not a positive decimal integer, or
 * that exceeds the limit or what a thin device can be, is InvalidArgument.
 */
export function requestedSize(labels: Readonly<Record<string, string>>, getLimits: () => SizeLimits): bigint | null {
  const raw = labels[MAX_SIZE_LABEL];
  if (raw === undefined || raw === "") return null;
  const what = `label ${MAX_SIZE_LABEL}="${raw.length > 40 ? `${raw.slice(0, 40)}…` : raw}"`;
  if (!/^[0-9]{1,20}$/.test(raw)) {
    throw invalidArgument(`${what}: must be a size in decimal bytes (e.g. 1073741824 for 1 GiB)`);
  }
  const n = BigInt(raw);
  const limits = getLimits();
  if (n === 0n) throw invalidArgument(`${what}: must be greater than zero`);
  const rounded = roundDeviceSize(n, limits.blockSize);
  if (rounded > MAX_THIN_DEVICE_BYTES) {
    throw invalidArgument(`${what}: larger than a thin device can be (${MAX_THIN_DEVICE_BYTES} bytes)`);
  }
  if (n > limits.limit) {
    throw invalidArgument(`${what}: above the limit of ${limits.limit} bytes (${limits.limitSource})`);
  }
  return rounded;
}

/** Filesystems thinsnap grows in place (online, see grow.ts); ext2's driver has no online resize. */
export const GROWABLE_FS_TYPES: readonly string[] = ["ext4", "xfs"];

/**
 * The new snapshot's device size: the requested one, or its origin's. A
 * request below the origin's size would cut off its filesystem: refused.
 */
export function targetSize(
  requested: bigint | null,
  origin: { sizeBytes: bigint; fsBytes: bigint | null; fsType: string },
  parentDesc: string,
): bigint {
  if (requested === null || requested === origin.sizeBytes) return origin.sizeBytes;
  if (requested < origin.sizeBytes) {
    const fs = origin.fsBytes ?? origin.sizeBytes;
    throw invalidArgument(
      `label ${MAX_SIZE_LABEL}: ${requested} bytes (rounded) is smaller than ${parentDesc}'s filesystem ` +
        `(${fs} bytes on a ${origin.sizeBytes}-byte device); thinsnap does not shrink filesystems: ask for at least ${origin.sizeBytes}`,
    );
  }
  if (!GROWABLE_FS_TYPES.includes(origin.fsType)) {
    throw invalidArgument(
      `label ${MAX_SIZE_LABEL}: ${parentDesc} has a ${origin.fsType} filesystem, which thinsnap cannot grow ` +
        `(${GROWABLE_FS_TYPES.join(", ")} only; set fs_type)`,
    );
  }
  return requested;
}
