/** Snapshotter options for tests: small base, no reserve, sync remove. */
import type { SnapshotterOptions } from "../../../src/snapshotter/snapshotter.ts";

export const TEST_OPTIONS: Readonly<Omit<SnapshotterOptions, "poolName">> & { poolName: string } = {
  poolName: "fakepool",
  baseImageSize: 64n << 20n,
  fsType: "ext4",
  fsOptions: "",
  asyncRemove: false,
  discardBlocks: false,
  minFreeSpace: 0n,
  minFreeSpacePercent: null,
};
