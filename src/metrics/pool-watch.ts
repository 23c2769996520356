/**
 * Watches the thin-pool off the request path: a status read every few
 * seconds (one cheap ioctl) from a timer, kept for the metrics gauges, and
 * a log line when something an operator must act on changes:
 *  - free data space crossing the pool's low-water mark, either way (warn);
 *  - free data space crossing min_free_space, either way (warn): below it
 *    new snapshots are refused;
 *  - the pool turning ro, out_of_data_space, needs_check or fail, or its
 *    status becoming unreadable (error, saying what to do), and back (warn).
 * Polling rather than waiting for the kernel's low-water event: it needs no
 * thread, sees mode changes too, and is within one interval of the event.
 *
 * poolWatchStep is the decision (figures in, state and lines out); PoolWatch
 * adds the timer and the Logger.
 */
import { StatusParseError } from "../dm/status.ts";
import type { Logger, LogFields } from "../log.ts";
import type { PoolStatus } from "../snapshotter/pool-api.ts";
import { dataReserveBytes, METADATA_BLOCK_BYTES, type SpaceLimits } from "../snapshotter/space.ts";
import type { PoolSample, PoolStatusName } from "./registry.ts";
import type { LogLine } from "./space-log.ts";

export interface PoolThresholds {
  /** The pool table's low_water_mark in data blocks; null or 0: none. */
  lowWaterMarkBlocks: bigint | null;
  limits: SpaceLimits;
}

/** One status read: its figures, a failed pool, or an error reading it. */
export type PoolObservation =
  | { kind: "status"; status: PoolStatus; blockSize: bigint }
  | { kind: "failed" }
  | { kind: "unreadable"; error: string };

export interface PoolWatchState {
  /** null before the first read. */
  status: PoolStatusName | "unreadable" | null;
  /** null when not known (no figures yet, or no low-water mark). */
  belowLowWater: boolean | null;
  belowReserve: boolean | null;
}

export const INITIAL_POOL_WATCH_STATE: PoolWatchState = { status: null, belowLowWater: null, belowReserve: null };

/** What to do, by status: the text of the error line. */
export const STATUS_ADVICE: Record<Exclude<PoolStatusName, "rw"> | "unreadable", string> = {
  ro:
    "thin-pool is read-only: snapshots cannot be created or removed. The kernel does this when metadata " +
    "space runs out or on a metadata error: see dmesg and `thinsnap pool status`; extend the metadata device " +
    "(lvextend --poolmetadatasize, or grow the metadata file and reload the pool) or, after an error, stop " +
    "containerd and thinsnap, deactivate the pool and run thin_check (thin_repair if it fails)",
  out_of_data_space:
    "thin-pool is out of data space: writes to snapshots wait or fail, new snapshots are refused. Extend the " +
    "data device (lvextend, or grow the data file and reload the pool), or remove unused images and containers",
  needs_check:
    "thin-pool metadata needs a check (needs_check): stop containerd and thinsnap, deactivate the pool, run " +
    "thin_check on its metadata device (thin_repair if it reports errors), then start again",
  fail:
    "thin-pool has failed: IO to every snapshot errors. Stop containerd and thinsnap, deactivate the pool, run " +
    "thin_check / thin_repair on its metadata device, then start again",
  unreadable:
    "cannot read the thin-pool's status: is the pool device still there (`thinsnap pool status`, dmsetup ls)?",
};

/** The status label: a failed pool, then needs_check, then the kernel's mode. */
export function statusName(o: PoolObservation): PoolStatusName | "unreadable" {
  if (o.kind === "failed") return "fail";
  if (o.kind === "unreadable") return "unreadable";
  return o.status.needsCheck ? "needs_check" : o.status.mode;
}

/**
 * The gauges' figures of an observation. A pool whose status cannot be read
 * (gone, not a pool) is as useless as a failed one: status "fail", and the
 * byte gauges keep their last values.
 */
export function poolSample(o: PoolObservation): PoolSample {
  if (o.kind !== "status") return { status: "fail" };
  const s = o.status;
  return {
    status: statusName(o) as PoolStatusName,
    dataUsedBytes: s.usedDataBlocks * o.blockSize,
    dataSizeBytes: s.totalDataBlocks * o.blockSize,
    metadataUsedBytes: s.usedMetadataBlocks * METADATA_BLOCK_BYTES,
    metadataSizeBytes: s.totalMetadataBlocks * METADATA_BLOCK_BYTES,
  };
}

/** The warnings of the two space thresholds, crossed downwards and back. */
const LOW_WATER_LINES = {
  below: "thin-pool free data space fell to its low-water mark: extend the data device or free space soon",
  above: "thin-pool free data space is back above its low-water mark",
};
const MIN_FREE_SPACE_LINES = {
  below:
    "thin-pool free data space fell below min_free_space: new snapshots are refused (ResourceExhausted) until space is freed or the pool is extended",
  above: "thin-pool free data space is back above min_free_space: new snapshots are accepted again",
};

const pct = (a: bigint, b: bigint): number => (b === 0n ? 0 : Number((a * 10000n) / b) / 100);

/** Applies one observation; returns the next state and the lines to log. */
export function poolWatchStep(
  prev: PoolWatchState,
  o: PoolObservation,
  t: PoolThresholds,
  pool: string,
): { next: PoolWatchState; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const name = statusName(o);
  const next: PoolWatchState = { status: name, belowLowWater: prev.belowLowWater, belowReserve: prev.belowReserve };

  if (name !== prev.status) {
    if (name === "rw") {
      // First read and healthy: nothing to say.
      if (prev.status !== null) lines.push({ level: "warn", msg: "thin-pool is writable again", fields: { pool, status: "rw", was: prev.status } });
    } else {
      lines.push({
        level: "error",
        msg: STATUS_ADVICE[name],
        fields: { pool, status: name, was: prev.status ?? undefined, error: o.kind === "unreadable" ? o.error : undefined },
      });
    }
  }

  if (o.kind !== "status") return { next, lines };
  const f = poolFigures(o.status, o.blockSize, t);
  const figures = {
    pool,
    free_bytes: f.freeBytes,
    data_used_percent: f.dataUsedPercent,
    data_size_bytes: f.dataSizeBytes,
    metadata_used_percent: f.metadataUsedPercent,
  };
  // A threshold crossed either way since the last read: one warning that says which way.
  const crossed = (below: boolean | null, was: boolean | null, msg: { below: string; above: string }, fields: LogFields): void => {
    if (below !== null && below !== (was ?? false)) lines.push({ level: "warn", msg: below ? msg.below : msg.above, fields: { ...figures, ...fields } });
  };
  crossed(f.belowLowWater, prev.belowLowWater, LOW_WATER_LINES, { low_water_mark_bytes: f.lowWaterMarkBytes ?? undefined });
  next.belowLowWater = f.belowLowWater;
  crossed(f.belowMinFreeSpace, prev.belowReserve, MIN_FREE_SPACE_LINES, { min_free_space_bytes: f.minFreeSpaceBytes ?? undefined });
  next.belowReserve = f.belowMinFreeSpace;
  return { next, lines };
}

/** A pool's usage against its thresholds (the watcher's lines; `pool status` can show the same). */
export interface PoolFigures {
  freeBytes: bigint;
  dataSizeBytes: bigint;
  dataUsedPercent: number;
  metadataUsedPercent: number;
  /** null: no low-water mark. */
  lowWaterMarkBytes: bigint | null;
  belowLowWater: boolean | null;
  /** null: no min_free_space. */
  minFreeSpaceBytes: bigint | null;
  belowMinFreeSpace: boolean | null;
}

export function poolFigures(s: PoolStatus, blockSize: bigint, t: PoolThresholds): PoolFigures {
  const freeBlocks = s.totalDataBlocks - s.usedDataBlocks;
  const freeBytes = freeBlocks * blockSize;
  const lw = t.lowWaterMarkBlocks === null || t.lowWaterMarkBlocks === 0n ? null : t.lowWaterMarkBlocks;
  const reserve = dataReserveBytes(s.totalDataBlocks * blockSize, t.limits);
  return {
    freeBytes,
    dataSizeBytes: s.totalDataBlocks * blockSize,
    dataUsedPercent: pct(s.usedDataBlocks, s.totalDataBlocks),
    metadataUsedPercent: pct(s.usedMetadataBlocks, s.totalMetadataBlocks),
    lowWaterMarkBytes: lw === null ? null : lw * blockSize,
    // The kernel raises its event when free blocks drop to the mark (dm-thin: free <= low_water_blocks).
    belowLowWater: lw === null ? null : freeBlocks <= lw,
    minFreeSpaceBytes: reserve > 0n ? reserve : null,
    // Same rule as the refusal (space.ts): at or below the reserve is refused.
    belowMinFreeSpace: reserve > 0n ? freeBytes <= reserve : null,
  };
}

/** What the watcher reads: PoolApi (src/snapshotter/pool-api.ts) satisfies it. */
export interface PoolStatusSource {
  readonly name: string;
  status(): PoolStatus;
  blockSize(): bigint;
}

/** A failed pool's status line reads "Fail": the parser refuses it (src/dm/status.ts). */
function isPoolFailed(e: unknown): boolean {
  return e instanceof StatusParseError && e.message.includes("(pool failed)");
}

export function observe(pool: PoolStatusSource): PoolObservation {
  try {
    return { kind: "status", status: pool.status(), blockSize: pool.blockSize() };
  } catch (e) {
    if (isPoolFailed(e)) return { kind: "failed" };
    return { kind: "unreadable", error: e instanceof Error ? e.message : String(e) };
  }
}

/** Default poll interval: "within a few seconds", for one ioctl. */
export const POOL_WATCH_INTERVAL_MS = 2000;

export class PoolWatch {
  private state: PoolWatchState = INITIAL_POOL_WATCH_STATE;
  private last: PoolObservation | null = null;
  private lastSample: PoolSample | null = null;
  private lastAt = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly pool: PoolStatusSource,
    private readonly thresholds: PoolThresholds,
    private readonly log: Logger,
    private readonly intervalMs = POOL_WATCH_INTERVAL_MS,
  ) {}

  /** Reads once now, then every interval. */
  start(): void {
    this.poll();
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  poll(): void {
    const o = observe(this.pool);
    const { next, lines } = poolWatchStep(this.state, o, this.thresholds, this.pool.name);
    this.state = next;
    this.last = o;
    this.lastAt = Date.now();
    this.lastSample = poolSample(o);
    for (const l of lines) this.log.log(l.level, l.msg, l.fields);
  }

  /** The metrics reader (MetricsReaders.pool): the last read, at most one interval old. */
  sample(): PoolSample | null {
    return this.lastSample;
  }

  /** The last status read, and when (ms since the epoch); null before the first. */
  latest(): { observation: PoolObservation; at: number } | null {
    return this.last === null ? null : { observation: this.last, at: this.lastAt };
  }
}
