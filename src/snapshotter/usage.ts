/**
 * A snapshot's exclusive usage (containerd's Usage.Size): the bytes its
 * device maps beyond what it started with, its parent's mapped bytes (or
 * the base device's, for a parentless one). Shared by Usage and `thinsnap ls`.
 */

/** Meta key of the base device's mapped bytes (its filesystem's own blocks), recorded when the base is made. */
export const BASE_MAPPED_META = "base_mapped_bytes";

export function exclusiveBytes(mapped: bigint, startMapped: bigint): bigint {
  const d = mapped - startMapped;
  return d > 0n ? d : 0n;
}
