/**
 * The benchmark's environment in the guest (pools, three thinsnap daemons,
 * containerd with its devmapper, the floor) and the snapshot calls per side,
 * interleaved so that every side sees the same host load.
 */
import { mkdirSync, rmSync } from "node:fs";
import { countListed, snapshotsClient, type SnapshotsClient } from "../tests/kit/client.ts";
import { createFilePool } from "../tests/kit/cli.ts";
import { startContainerd, type Containerd } from "../tests/kit/containerd.ts";
import { Daemon, inDir } from "../tests/kit/daemon.ts";
import { sh, type MountSpec } from "../tests/kit/process.ts";
import { FloorPool } from "./floor.ts";
import { LeasesClient } from "./leases.ts";
import { BIN, GC_ROOT, GEOMETRY, log, type SideId } from "./plan.ts";
import { notes } from "./results.ts";
import { now } from "./stats.ts";

export interface Side {
  id: SideId;
  label: string;
  client: SnapshotsClient;
  /** The `snapshotter` field of every request. */
  snapshotter: string;
  ctrd: boolean;
}

/** What a snapshot call needs of a side; also containerd's overlayfs, which is a column only of some rows. */
export type Caller = Pick<Side, "client" | "snapshotter" | "ctrd">;

/** containerd's overlayfs snapshotter, through containerd's snapshots service (image and storm rows). */
export interface OverlaySide extends Caller {
  id: "ovl";
  label: string;
}

export interface Env {
  dir: string;
  /** The daemon the "direct" column talks to. */
  thinsnap: Daemon;
  /**
   * A second daemon, on its own pool of the same geometry, behind containerd:
   * containerd's GC removes every snapshot of a snapshotter that its own
   * database does not know, so the direct column's snapshots cannot share it.
   */
  thinsnapProxied: Daemon;
  containerd: Containerd;
  sides: Side[];
  overlay: OverlaySide;
  leases: LeasesClient;
  floor: FloorPool;
  /** A third daemon, direct, with kernel_threads = 4 (the others run with the default, 0). */
  threaded: Daemon;
}

export async function setup(): Promise<Env> {
  let dir = "/tmp/thinsnap-bench";
  const disk = process.env.THINSNAP_VM_DATA_DISK;
  if (disk) {
    dir = "/bench";
    mkdirSync(dir, { recursive: true });
    sh("mkfs.ext4", ["-q", "-F", disk]);
    sh("mount", ["-o", "noatime", disk, dir]);
    log(`pools on ${disk} (ext4) at ${dir}`);
  } else {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    notes.push("No data disk: the pools' files were on the guest's tmpfs.");
    log(`no data disk: pools on tmpfs at ${dir}`);
  }
  const pools = ["bench-ts", "bench-tsc", "bench-ref", "bench-floor", "bench-prof", "bench-thr"];
  for (const p of pools) {
    const t0 = now();
    await createFilePool({
      name: p,
      dataFile: `${dir}/pools/${p}/data`,
      dataSize: GEOMETRY.dataSize,
      metaSize: GEOMETRY.metaSize,
      blockSize: GEOMETRY.blockSize,
      binary: BIN,
    });
    log(`pool ${p}: ${GEOMETRY.dataSize} data, ${GEOMETRY.metaSize} metadata, ${GEOMETRY.blockSize} blocks (${((now() - t0) / 1000).toFixed(1)} s)`);
  }
  const startTs = async (pool: string, sub: string, kernelThreads?: number): Promise<Daemon> => {
    const t0 = now();
    const d = await Daemon.serving({
      ...inDir(`${dir}/${sub}`, {
        poolName: pool,
        baseImageSize: GEOMETRY.baseImageSize,
        logLevel: "info",
        fsType: GEOMETRY.fsType,
        asyncRemove: false,
        discardBlocks: false,
        kernelThreads,
      }),
      binary: BIN,
      readyTimeoutMs: 600_000,
    });
    log(`thinsnap serve on ${pool} ready in ${((now() - t0) / 1000).toFixed(1)} s (pid ${d.pid}; includes mkfs of the ${GEOMETRY.baseImageSize} base)`);
    return d;
  };
  const thinsnap = await startTs("bench-ts", "thinsnap");
  const thinsnapProxied = await startTs("bench-tsc", "thinsnap-proxied");
  const threaded = await startTs("bench-thr", "thinsnap-threaded", 4);
  const t0 = now();
  const containerd = await startContainerd({
    dir: `${dir}/containerd`,
    proxySnapshotters: { thinsnap: thinsnapProxied.address },
    devmapper: {
      poolName: "bench-ref",
      rootPath: `${dir}/devmapper`,
      baseImageSize: GEOMETRY.baseImageSize,
      asyncRemove: false,
      discardBlocks: false,
      fsType: GEOMETRY.fsType,
    },
    logLevel: "info",
    eagerGc: false,
    // GC only when we ask for it (leases Delete with sync), never in the middle of a measurement.
    extraConfig: [
      '[plugins."io.containerd.gc.v1.scheduler"]',
      "  pause_threshold = 0.02",
      "  deletion_threshold = 0",
      "  mutation_threshold = 1000000000",
      '  schedule_delay = "0s"',
      '  startup_delay = "100ms"',
    ].join("\n"),
    readyTimeoutMs: 300_000,
  });
  log(`containerd ready in ${((now() - t0) / 1000).toFixed(1)} s (pid ${containerd.pid})`);
  const sides: Side[] = [
    { id: "direct", label: "thinsnap direct", client: snapshotsClient(thinsnap.address), snapshotter: "thinsnap", ctrd: false },
    { id: "ctrd", label: "thinsnap via containerd", client: snapshotsClient(containerd.address, { namespace: "default" }), snapshotter: "thinsnap", ctrd: true },
    { id: "ref", label: "devmapper via containerd", client: snapshotsClient(containerd.address, { namespace: "default" }), snapshotter: "devmapper", ctrd: true },
  ];
  const floor = new FloorPool("bench-floor", GEOMETRY.baseImageBytes);
  await floor.init();
  const overlay: OverlaySide = { id: "ovl", label: "overlayfs via containerd", client: sides[1]!.client, snapshotter: "overlayfs", ctrd: true };
  return { dir, thinsnap, thinsnapProxied, containerd, sides, overlay, leases: new LeasesClient(containerd.address), floor, threaded };
}

// ------------------------------------------------------------------ snapshot calls per side

let keySeq = 0;
export const key = (side: { id: string }, what: string): string => `${what}-${side.id}-${++keySeq}`;

export function labelsFor(side: Caller, extra: Record<string, string> = {}): Record<string, string> {
  // Through containerd, a snapshot nothing refers to is garbage: mark ours as GC roots.
  return side.ctrd ? { [GC_ROOT]: "bench", ...extra } : { ...extra };
}

export async function prepare(side: Caller, k: string, parent = "", labels: Record<string, string> = {}): Promise<MountSpec[]> {
  const r = await side.client.prepare({ snapshotter: side.snapshotter, key: k, parent, labels: labelsFor(side, labels) });
  return r.mounts.map((m) => ({ type: m.type, source: m.source, options: [...m.options] }));
}

export async function view(side: Caller, k: string, parent: string, labels: Record<string, string> = {}): Promise<void> {
  await side.client.view({ snapshotter: side.snapshotter, key: k, parent, labels: labelsFor(side, labels) });
}

export async function commit(side: Caller, name: string, k: string, labels: Record<string, string> = {}): Promise<void> {
  await side.client.commit({ snapshotter: side.snapshotter, name, key: k, labels: labelsFor(side, labels) });
}

/** Remove; through containerd followed by a synchronous GC, so that the snapshotter has really removed it. */
export async function remove(env: Env, side: Caller, k: string): Promise<void> {
  await side.client.remove({ snapshotter: side.snapshotter, key: k });
  if (side.ctrd) await env.leases.gc();
}

/** Removes many (children first), with one GC at the end through containerd. */
export async function removeAll(env: Env, side: Caller, keys: string[]): Promise<void> {
  for (const k of [...keys].reverse()) await side.client.remove({ snapshotter: side.snapshotter, key: k });
  if (side.ctrd) await env.leases.gc();
}

export function list(side: Caller, filters: string[]): Promise<number> {
  return countListed(side.client, filters, side.snapshotter);
}

export interface Parents {
  /** A committed snapshot per side (the parent of child prepares, views, chains). */
  parent: Record<SideId, string>;
}

/**
 * Runs fn count[side] times per side, the sides' samples interleaved and
 * spread evenly over the run (not side after side), so that a change in the
 * host's load while the benchmark runs (other guests, other work) falls on
 * every side alike. Returns each side's durations in ms.
 */
export async function interleaved(
  env: Env,
  count: Record<SideId, number>,
  fn: (side: Side, i: number) => Promise<void>,
  floor?: { count: number; fn: (i: number) => unknown },
): Promise<Record<SideId | "floor", number[]>> {
  const plan: { at: number; side: Side | null; i: number }[] = [];
  for (const side of env.sides) {
    const c = count[side.id];
    for (let i = 0; i < c; i++) plan.push({ at: (i + 0.5) / c, side, i });
  }
  for (let i = 0; floor && i < floor.count; i++) plan.push({ at: (i + 0.5) / floor.count, side: null, i });
  plan.sort((a, b) => a.at - b.at);
  const out: Record<SideId | "floor", number[]> = { direct: [], ctrd: [], ref: [], floor: [] };
  for (const { side, i } of plan) {
    const t0 = now();
    if (side) await fn(side, i);
    else await floor!.fn(i);
    out[side ? side.id : "floor"].push(now() - t0);
  }
  return out;
}

export const countsText = (c: Record<SideId, number>): string => `${c.direct}/${c.ctrd}/${c.ref}`;
