/**
 * Start-up reconciliation repairs per device: one that cannot be repaired
 * now is queued for the background remover, logged and counted, and the
 * snapshotter opens and serves. After it, inspect() finds nothing.
 */
import { describe, expect, test } from "bun:test";
import { describeProblem, inspect } from "../../src/consistency/inspect.ts";
import { readPoolView, readStoreView } from "../../src/consistency/views.ts";
import { Errno } from "../../src/dm/errors.ts";
import { createLogger } from "../../src/log.ts";
import { reconcile } from "../../src/snapshotter/reconcile.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { Store } from "../../src/store/store.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { crashAfter, storeOf } from "../kit/fakes/crash.ts";
import { ranBefore } from "../kit/fakes/open.ts";

function problems(store: Store, pool: FakePool): string[] {
  const sv = readStoreView(store);
  return inspect(sv, readPoolView(pool, sv.devices, { mapped: pool.mapped.keys(), thinIds: [...pool.thins.keys()] })).map(describeProblem);
}

async function open(pool: FakePool, store: Store, lines: string[] = []) {
  const log = createLogger("info", "text", (l) => lines.push(l));
  return ThinSnapshotter.open(TEST_OPTIONS, { store, pool, format: async () => {}, statusTtlMs: 0, log });
}

/** A daemon with snapshot "kept" killed inside Prepare("half") right after its device was mapped. */
async function interruptedCreate(): Promise<{ pool: FakePool; store: Store; half: string }> {
  const { result: img } = await ranBefore(async ({ sn, pool, store }) => {
    await sn.prepare("kept", "");
    return crashAfter(pool, store, "activate", () => sn.prepare("half", ""));
  });
  const again = storeOf(img);
  const half = again.devicesInState("creating")[0]!.dmName;
  expect(img.pool.mapped.has(half)).toBe(true);
  return { pool: img.pool, store: again, half };
}

describe("reconcile repairs per device", () => {
  test("an interrupted create that cannot be rolled back (EBUSY) is queued for the remover; the snapshotter serves", async () => {
    const { pool, store, half } = await interruptedCreate();
    const thinId = store.devicesInState("creating")[0]!.thinId;
    pool.failNext("deactivate", Errno.EBUSY); // the first deactivate of start-up is the roll-back's
    const lines: string[] = [];
    const sn = await open(pool, store, lines);
    expect(sn.lastReconcile).toMatchObject({ failed: 1, queued: 1, rolledBack: 0 });
    expect(store.getDevice(thinId)?.state).toBe("deleting");
    expect(store.getSnapshot("half")).toBeNull();
    expect(lines.some((l) => l.includes("level=error") && l.includes(half) && l.includes("queued for the background remover"))).toBe(true);
    // it serves: the other snapshot is there and new ones can be made
    expect((await sn.stat("kept")).kind).toBe("active");
    await sn.prepare("after", "");
    // the remover deletes the queued device once it can
    await sn.cleanup();
    expect(pool.thins.has(thinId)).toBe(false);
    expect(store.getDevice(thinId)).toBeNull();
    expect(problems(store, pool)).toEqual([]);
    sn.remover.stop();
  });

  test("the same crash without the failure is rolled back at once, in one info line naming the device and snapshot", async () => {
    const { pool, store, half } = await interruptedCreate();
    const lines: string[] = [];
    const sn = await open(pool, store, lines);
    expect(sn.lastReconcile).toMatchObject({ failed: 0, queued: 0, rolledBack: 1 });
    const repairs = lines.filter((l) => l.includes("msg=\"reconcile: ") && !l.includes("reconcile: done"));
    expect(repairs).toHaveLength(1);
    expect(repairs[0]).toContain("level=info");
    expect(repairs[0]).toContain("rolled back an interrupted create");
    expect(repairs[0]).toContain(`device=${half}`);
    expect(repairs[0]).toContain("snapshot=half");
    expect(problems(store, pool)).toEqual([]);
    sn.remover.stop();
  });

  test("a broken activation of one device does not stop the others from being repaired", async () => {
    const { pool, store } = await ranBefore(async ({ sn }) => {
      for (const k of ["a", "b"]) await sn.prepare(k, "");
    });
    pool.mapped.clear(); // a reboot
    pool.failNext("activate", Errno.EINVAL);
    const sn = await open(pool, store);
    expect(sn.lastReconcile).toMatchObject({ failed: 1, reactivated: 1 });
    expect(pool.mapped.size).toBe(1);
    sn.remover.stop();
    // the next start repairs it, and says so at info
    const lines: string[] = [];
    const again = await open(pool, store, lines);
    expect(again.lastReconcile).toMatchObject({ failed: 0, reactivated: 1 });
    const line = lines.find((l) => l.includes("reactivated a device"));
    expect(line).toContain("level=info");
    expect(line).toMatch(/ device=fakepool-snap-\d+ thin_id=\d+ snapshot=[ab]$/);
    expect(lines.filter((l) => /level=(warn|error)/.test(l))).toEqual([]);
    expect(problems(store, pool)).toEqual([]);
    again.remover.stop();
  });

  test("with the pool's thin ids known (check --repair): a mapped orphan is unmapped, then deleted", async () => {
    const { pool, store } = await ranBefore(async ({ sn }) => void (await sn.prepare("a", "")));
    pool.thins.set(500, { mapped: 0n });
    pool.activate("fakepool-snap-500", 500, 64n << 20n);
    pool.calls = [];
    const lines: string[] = [];
    const report = reconcile(store, pool, "fakepool", createLogger("info", "text", (l) => lines.push(l)), {
      listDmDevices: () => [...pool.mapped.keys()],
      thinIds: [...pool.thins.keys()],
    });
    expect(report).toMatchObject({ strayMappings: 1, orphansDeleted: 1, failed: 0 });
    expect(pool.calls.indexOf("deactivate")).toBeLessThan(pool.calls.indexOf("delete"));
    expect(pool.thins.has(500)).toBe(false);
    expect(problems(store, pool)).toEqual([]);
    // each repair one info line naming what it touched
    expect(lines.filter((l) => l.includes("level=info") && l.includes("device=fakepool-snap-500") && l.includes("removed a device mapping"))).toHaveLength(1);
    expect(lines.filter((l) => l.includes("level=info") && l.includes("thin_id=500") && l.includes("deleted an orphaned thin id"))).toHaveLength(1);
    expect(lines.filter((l) => /level=(warn|error)/.test(l))).toEqual([]);
  });

  test("a device whose mapping cannot be read is logged and counted; start-up goes on", async () => {
    const { pool, store } = await interruptedCreate();
    pool.failNext("info", Errno.EIO);
    const lines: string[] = [];
    const sn = await open(pool, store, lines);
    expect(sn.lastReconcile).toMatchObject({ failed: 1, rolledBack: 1 });
    expect(lines.some((l) => l.includes("level=error") && l.includes("cannot read a device's mapping"))).toBe(true);
    await sn.prepare("after", "");
    sn.remover.stop();
  });
});
