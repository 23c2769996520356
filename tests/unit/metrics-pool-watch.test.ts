/** The pool watcher: threshold and mode lines (pure step), reading a pool, feeding the gauges. */
import { describe, expect, test } from "bun:test";
import { DmError, Errno } from "../../src/dm/errors.ts";
import { parseThinPoolStatus } from "../../src/dm/status.ts";
import { createLogger } from "../../src/log.ts";
import {
  INITIAL_POOL_WATCH_STATE,
  observe,
  PoolWatch,
  poolFigures,
  poolSample,
  poolWatchStep,
  STATUS_ADVICE,
  type PoolObservation,
  type PoolThresholds,
  type PoolWatchState,
} from "../../src/metrics/pool-watch.ts";
import { Metrics } from "../../src/metrics/registry.ts";
import type { PoolStatus } from "../../src/snapshotter/pool-api.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";

const BS = 65536n;
function obs(used: bigint, extra: Partial<PoolStatus> = {}): PoolObservation {
  return {
    kind: "status",
    blockSize: BS,
    status: {
      transactionId: 1n,
      usedDataBlocks: used,
      totalDataBlocks: 1000n,
      usedMetadataBlocks: 100n,
      totalMetadataBlocks: 400n,
      mode: "rw",
      needsCheck: false,
      ...extra,
    },
  };
}

// low-water mark 100 blocks (free <= 100 = used >= 900); reserve 5% = 50 blocks (used >= 950)
const T: PoolThresholds = { lowWaterMarkBlocks: 100n, limits: { minFreeSpace: 0n, minFreeSpacePercent: 5 } };

/** Runs observations through the step; returns every line as "level msg". */
function run(seq: PoolObservation[], t = T): { lines: string[]; fields: Record<string, unknown>[]; state: PoolWatchState } {
  let state = INITIAL_POOL_WATCH_STATE;
  const lines: string[] = [];
  const fields: Record<string, unknown>[] = [];
  for (const o of seq) {
    const r = poolWatchStep(state, o, t, "p");
    state = r.next;
    for (const l of r.lines) {
      lines.push(`${l.level} ${l.msg}`);
      fields.push(l.fields);
    }
  }
  return { lines, fields, state };
}

describe("poolWatchStep", () => {
  test("a healthy pool says nothing, however often it is read", () => {
    expect(run([obs(0n), obs(10n), obs(500n), obs(899n)]).lines).toEqual([]);
  });

  test("crossing the low-water mark and min_free_space: one warning each way", () => {
    const r = run([obs(800n), obs(900n), obs(920n), obs(950n), obs(960n), obs(940n), obs(899n), obs(850n)]);
    expect(r.lines).toEqual([
      "warn thin-pool free data space fell to its low-water mark: extend the data device or free space soon",
      "warn thin-pool free data space fell below min_free_space: new snapshots are refused (ResourceExhausted) until space is freed or the pool is extended",
      "warn thin-pool free data space is back above min_free_space: new snapshots are accepted again",
      "warn thin-pool free data space is back above its low-water mark",
    ]);
    expect(r.fields[0]).toEqual({
      pool: "p",
      free_bytes: 100n * BS,
      data_used_percent: 90,
      data_size_bytes: 1000n * BS,
      metadata_used_percent: 25,
      low_water_mark_bytes: 100n * BS,
    });
    expect(r.fields[1]).toMatchObject({ free_bytes: 50n * BS, min_free_space_bytes: 50n * BS });
  });

  test("starting below a threshold is said once; no mark, no line", () => {
    expect(run([obs(960n), obs(961n)]).lines).toHaveLength(2);
    const none: PoolThresholds = { lowWaterMarkBlocks: 0n, limits: { minFreeSpace: 0n, minFreeSpacePercent: null } };
    expect(run([obs(0n), obs(999n), obs(0n)], none).lines).toEqual([]);
  });

  test("mode changes are error lines that say what to do, and back to rw is a warning", () => {
    const r = run([
      obs(0n),
      obs(0n, { mode: "out_of_data_space" }),
      obs(0n, { mode: "out_of_data_space" }),
      obs(0n, { mode: "ro" }),
      obs(0n, { mode: "ro", needsCheck: true }),
      { kind: "failed" },
      { kind: "failed" },
      { kind: "unreadable", error: "ENXIO" },
      obs(0n),
    ]);
    expect(r.lines).toEqual([
      `error ${STATUS_ADVICE.out_of_data_space}`,
      `error ${STATUS_ADVICE.ro}`,
      `error ${STATUS_ADVICE.needs_check}`,
      `error ${STATUS_ADVICE.fail}`,
      `error ${STATUS_ADVICE.unreadable}`,
      "warn thin-pool is writable again",
    ]);
    expect(r.fields[0]).toEqual({ pool: "p", status: "out_of_data_space", was: "rw", error: undefined });
    expect(r.fields[4]).toMatchObject({ status: "unreadable", error: "ENXIO", was: "fail" });
    expect(STATUS_ADVICE.needs_check).toContain("thin_check");
    expect(STATUS_ADVICE.out_of_data_space).toContain("Extend the data device");
  });

  test("a pool that starts read-only is an error at once", () => {
    expect(run([obs(0n, { mode: "ro" })]).lines).toEqual([`error ${STATUS_ADVICE.ro}`]);
  });
});

describe("poolFigures", () => {
  test("usage against the thresholds, for the lines and pool status", () => {
    const o = obs(950n);
    if (o.kind !== "status") throw new Error("unreachable");
    expect(poolFigures(o.status, BS, T)).toEqual({
      freeBytes: 50n * BS,
      dataSizeBytes: 1000n * BS,
      dataUsedPercent: 95,
      metadataUsedPercent: 25,
      lowWaterMarkBytes: 100n * BS,
      belowLowWater: true,
      minFreeSpaceBytes: 50n * BS,
      belowMinFreeSpace: true,
    });
    const none = poolFigures(o.status, BS, { lowWaterMarkBlocks: null, limits: { minFreeSpace: 0n, minFreeSpacePercent: null } });
    expect([none.lowWaterMarkBytes, none.belowLowWater, none.minFreeSpaceBytes, none.belowMinFreeSpace]).toEqual([null, null, null, null]);
  });
});

describe("reading the pool", () => {
  test("observe: figures, a failed pool, an unreadable one", () => {
    const pool = new FakePool();
    const o = observe(pool);
    expect(o.kind).toBe("status");
    const failed = { name: "p", blockSize: () => BS, status: () => parseThinPoolStatus("Fail") };
    expect(observe(failed)).toEqual({ kind: "failed" });
    const gone = {
      name: "p",
      blockSize: () => BS,
      status: (): PoolStatus => {
        throw new DmError("status", "p", Errno.ENXIO, []);
      },
    };
    const u = observe(gone);
    expect(u.kind).toBe("unreadable");
  });

  test("samples: bytes from blocks (metadata in 4 KiB blocks); fail and unreadable are status fail", () => {
    expect(poolSample(obs(10n))).toEqual({
      status: "rw",
      dataUsedBytes: 10n * BS,
      dataSizeBytes: 1000n * BS,
      metadataUsedBytes: 100n * 4096n,
      metadataSizeBytes: 400n * 4096n,
    });
    expect(poolSample(obs(10n, { mode: "ro", needsCheck: true })).status).toBe("needs_check");
    expect(poolSample({ kind: "failed" })).toEqual({ status: "fail" });
    expect(poolSample({ kind: "unreadable", error: "x" })).toEqual({ status: "fail" });
  });

  test("PoolWatch polls on its timer, logs transitions, and feeds the gauges without a kernel call at scrape", async () => {
    const pool = new FakePool();
    const out: Record<string, unknown>[] = [];
    const log = createLogger("debug", "json", (l) => out.push(JSON.parse(l)));
    const w = new PoolWatch(pool, { lowWaterMarkBlocks: 1000n, limits: { minFreeSpace: 0n, minFreeSpacePercent: null } }, log, 10);
    const m = new Metrics({ version: "v", revision: "r", processMetrics: false, readers: { pool: () => w.sample() } });
    w.start();
    expect(out).toEqual([]);
    pool.mode = "out_of_data_space";
    await Bun.sleep(40);
    expect(out.filter((l) => l.level === "error")).toHaveLength(1);
    expect(out[0]).toMatchObject({ level: "error", status: "out_of_data_space", pool: "fakepool" });
    pool.calls = [];
    const text = await m.scrape();
    expect(pool.calls).toEqual([]); // the scrape read the cache only
    expect(text).toContain('thinsnap_pool_status{status="out_of_data_space"} 1');
    expect(text).toContain('thinsnap_pool_status{status="rw"} 0');
    expect(text).toContain(`thinsnap_pool_data_size_bytes ${16384 * 65536}`);
    w.stop();
    const n = pool.calls.length;
    await Bun.sleep(30);
    expect(pool.calls.length).toBe(n);
  });
});
