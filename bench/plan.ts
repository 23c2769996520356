/**
 * What the benchmark runs: scale, sample counts per row and side, the pools'
 * geometry, the sections selected (BENCH_SCALE, BENCH_ONLY, BENCH_OUT), the
 * progress log.
 */
import { REPO } from "../tests/kit/process.ts";
import { now } from "./stats.ts";

export const BIN = `${REPO}/dist/thinsnap`;
export const SCALE = Number(process.env.BENCH_SCALE ?? "1");
export const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(",")) : null;
export const WRITE_OUT = process.env.BENCH_OUT !== "0";
export const T_START = now();

export const GEOMETRY = {
  dataSize: "24G",
  metaSize: "256M",
  blockSize: "64K",
  baseImageSize: "10GB",
  baseImageBytes: 10n << 30n,
  fsType: "ext4" as const,
};
export const GC_ROOT = "containerd.io/gc.root";

export const n = (x: number, min = 1): number => Math.max(min, Math.round(x * SCALE));
/** Sample counts per row and side. The reference is slow (it execs dmsetup and mkfs): fewer samples. */
export const N = {
  parentless: { direct: n(40, 3), ctrd: n(20, 3), ref: n(5, 2) },
  child: { direct: n(60, 3), ctrd: n(25, 3), ref: n(15, 3) },
  view: { direct: n(40, 3), ctrd: n(20, 3), ref: n(10, 3) },
  commit: { direct: n(40, 3), ctrd: n(20, 3), ref: n(15, 3) },
  remove: { direct: n(60, 3), ctrd: n(25, 3), ref: n(15, 3) },
  read: { direct: n(300, 10), ctrd: n(200, 10), ref: n(200, 10) },
  usage: { direct: n(200, 10), ctrd: n(100, 10), ref: n(20, 5) },
  list: { direct: n(20, 3), ctrd: n(20, 3), ref: n(20, 3) },
  list10k: { snapshots: n(10_000, 200), reps: n(20, 3) },
  chain: { layers: 16, direct: n(3, 1), ctrd: n(3, 1), ref: n(2, 1) },
  conc: { chains: 16, layers: 2 },
  image: { layers: 8, reps: n(2, 1) },
  /** The realistic image: imports per snapshotter; containers run after each import (the first cold, the rest warm). */
  real: { reps: n(3, 1), runs: Math.max(3, n(10, 3)) },
  /** Per-layer replay of the realistic image's unpack on thinsnap direct and a plain directory. */
  unpack: { reps: n(2, 1) },
  /** Pod storm: concurrent container Prepares of one image's top layer. */
  storm: { pods: 64, reps: n(2, 1) },
  /** List (unfiltered) over this many snapshots per side; the reference only at the first size (see bench/sections/list-big.ts). */
  listBig: { sizes: [100, n(1000, 100)], reps: n(10, 3) },
  /** Grown Prepare (max-size): Prepares per kind (plain, two sizes), interleaved; breakdown repetitions on the floor's pool. */
  grow: { prepares: n(10, 3), breakdown: n(3, 2) },
  floor: { parentless: n(40, 3), child: n(60, 3), view: n(40, 3), commit: n(40, 3), usage: n(200, 10), chains: n(3, 1) },
  profile: n(30, 5),
};

export type SideId = "direct" | "ctrd" | "ref";

export function log(msg: string): void {
  process.stderr.write(`[bench ${((now() - T_START) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
}

export const want = (section: string): boolean => ONLY === null || ONLY.has(section);

export type Counts = typeof N;
