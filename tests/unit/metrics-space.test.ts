/**
 * The space rule shared by the snapshotter and the pool watcher, the
 * snapshotter's onSpaceRefusal hook, and the rate-limited refusal log.
 */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../src/dm/errors.ts";
import { createLogger } from "../../src/log.ts";
import { SpaceLog, spaceLogStep, type SpaceLogState } from "../../src/metrics/space-log.ts";
import type { PoolStatus } from "../../src/snapshotter/pool-api.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { dataReserveBytes, enospcResource, spaceRefusal, type SpaceResource } from "../../src/snapshotter/space.ts";
import { Store } from "../../src/store/store.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";

const BS = 65536n;
function st(used: bigint, total = 1000n, mode: PoolStatus["mode"] = "rw", metaUsed = 10n): PoolStatus {
  return { transactionId: 1n, usedDataBlocks: used, totalDataBlocks: total, usedMetadataBlocks: metaUsed, totalMetadataBlocks: 1000n, mode, needsCheck: false };
}

describe("space rule", () => {
  test("the reserve is the larger of bytes and percent", () => {
    expect(dataReserveBytes(1000n, { minFreeSpace: 50n, minFreeSpacePercent: null })).toBe(50n);
    expect(dataReserveBytes(1000n, { minFreeSpace: 50n, minFreeSpacePercent: 10 })).toBe(100n);
    expect(dataReserveBytes(1000n, { minFreeSpace: 500n, minFreeSpacePercent: 10 })).toBe(500n);
    expect(dataReserveBytes(10000n, { minFreeSpace: 0n, minFreeSpacePercent: 2.5 })).toBe(250n);
  });

  test("each refusal names its resource", () => {
    const pct = { minFreeSpace: 0n, minFreeSpacePercent: 10 };
    expect(spaceRefusal("p", st(899n), BS, pct)).toBeNull();
    expect(spaceRefusal("p", st(900n), BS, pct)?.resource).toBe("min_free_space");
    expect(spaceRefusal("p", st(900n), BS, pct)?.message).toBe(
      `pool p has too little free data space (data 900/1000 blocks of 65536 bytes used, metadata 10/1000 blocks used; reserve ${100n * BS} bytes)`,
    );
    const none = { minFreeSpace: 0n, minFreeSpacePercent: null };
    expect(spaceRefusal("p", st(999n), BS, none)).toBeNull();
    expect(spaceRefusal("p", st(1000n), BS, none)?.resource).toBe("data");
    expect(spaceRefusal("p", st(10n, 1000n, "out_of_data_space"), BS, none)?.resource).toBe("data");
    expect(spaceRefusal("p", st(10n, 1000n, "ro"), BS, none)).toEqual({
      resource: "metadata",
      message: "pool p is ro (data 10/1000 blocks of 65536 bytes used, metadata 10/1000 blocks used)",
    });
    expect(spaceRefusal("p", st(10n, 1000n, "rw", 940n), BS, none)?.resource).toBe("metadata");
    expect(enospcResource(st(10n, 1000n, "rw", 990n))).toBe("metadata");
    expect(enospcResource(st(1000n))).toBe("data");
    expect(enospcResource(null)).toBe("data");
  });

  test("the snapshotter reports each refusal with its resource and numbers", async () => {
    const pool = new FakePool();
    const seen: [SpaceResource, string][] = [];
    const sn = await ThinSnapshotter.open(
      { ...TEST_OPTIONS, minFreeSpacePercent: 10 },
      { store: Store.open(":memory:"), pool, format: async () => {}, statusTtlMs: 0, onSpaceRefusal: (r, m) => seen.push([r, m]) },
    );
    await sn.prepare("a", "");
    pool.write("fakepool-snap-2", (16384n * BS * 95n) / 100n);
    await expect(sn.prepare("b", "")).rejects.toThrow("too little free data space");
    pool.write("fakepool-snap-2", -(16384n * BS * 95n) / 100n);
    pool.failNext("create_snap", Errno.ENOSPC);
    await expect(sn.prepare("c", "")).rejects.toThrow("out of space");
    pool.mode = "out_of_data_space";
    await expect(sn.view("d", "")).rejects.toThrow("is out_of_data_space");
    expect(seen.map(([r]) => r)).toEqual(["min_free_space", "data", "data"]);
    expect(seen[0]![1]).toStartWith('prepare "b": pool fakepool has too little free data space (data ');
    expect(seen[1]![1]).toStartWith('prepare "c": pool fakepool is out of space: data ');
    expect(seen[2]![1]).toStartWith('view "d": pool fakepool is out_of_data_space');
    await sn.close();
  });
});

describe("space refusal log", () => {
  const T = { quietMs: 60_000, summaryMs: 30_000 };

  test("one warning per episode, summaries at most every summaryMs, one line at its end", () => {
    const s: SpaceLogState = new Map();
    const r = (now: number, msg = "m") => spaceLogStep(s, { type: "refused", resource: "min_free_space", message: msg }, now, T);
    const first = r(0, "pool p has too little free data space (numbers)");
    expect(first).toHaveLength(1);
    expect(first[0]!.level).toBe("warn");
    expect(first[0]!.fields).toEqual({ resource: "min_free_space", reason: "pool p has too little free data space (numbers)" });
    // 1000 refusals within the summary interval: no line
    let lines = 0;
    for (let i = 1; i <= 1000; i++) lines += r(i * 29).length;
    expect(lines).toBe(0);
    const summary = r(30_000, "latest numbers");
    expect(summary).toHaveLength(1);
    expect(summary[0]!.msg).toBe("still refusing new snapshots for lack of space");
    expect(summary[0]!.fields).toMatchObject({ refused: 1001, total: 1002, reason: "latest numbers", in_seconds: 30 });
    // nothing refused since the summary: a tick says nothing until the quiet period ends
    expect(spaceLogStep(s, { type: "tick" }, 80_000, T)).toEqual([]);
    const end = spaceLogStep(s, { type: "tick" }, 90_000, T);
    expect(end).toEqual([{ level: "info", msg: "no more space refusals", fields: { resource: "min_free_space", refused: 1002, seconds: 30, quiet_seconds: 60 } }]);
    expect(s.size).toBe(0);
    // the next refusal opens a new episode with a new warning
    expect(r(100_000)[0]!.level).toBe("warn");
  });

  test("a pending count is summarized by a tick, without a new refusal", () => {
    const s: SpaceLogState = new Map();
    spaceLogStep(s, { type: "refused", resource: "data", message: "a" }, 0, T);
    spaceLogStep(s, { type: "refused", resource: "data", message: "b" }, 10, T);
    const l = spaceLogStep(s, { type: "tick" }, 30_000, T);
    expect(l).toHaveLength(1);
    expect(l[0]!.fields).toMatchObject({ resource: "data", refused: 1, reason: "b" });
  });

  test("resources have their own episodes", () => {
    const s: SpaceLogState = new Map();
    expect(spaceLogStep(s, { type: "refused", resource: "data", message: "a" }, 0, T)).toHaveLength(1);
    expect(spaceLogStep(s, { type: "refused", resource: "metadata", message: "b" }, 1, T)).toHaveLength(1);
    expect(spaceLogStep(s, { type: "refused", resource: "data", message: "a" }, 2, T)).toHaveLength(0);
  });

  test("SpaceLog writes through the logger and closes the episode on its timer", async () => {
    const out: string[] = [];
    const log = createLogger("debug", "json", (l) => out.push(l));
    const sl = new SpaceLog(log, { quietMs: 40, summaryMs: 40 });
    for (let i = 0; i < 50; i++) sl.refused("data", "pool p is out of space: numbers");
    expect(out).toHaveLength(1);
    expect(JSON.parse(out[0]!)).toMatchObject({ level: "warn", resource: "data", reason: "pool p is out of space: numbers" });
    await Bun.sleep(80);
    expect(sl.open).toBe(0);
    const last = JSON.parse(out.at(-1)!);
    expect(last).toMatchObject({ level: "info", msg: "no more space refusals", resource: "data", refused: 50 });
    sl.stop();
  });
});
