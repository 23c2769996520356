/**
 * Regressions from the code review: foreign thin ids, busy devices at start-up,
 * commits that land, the remover's timers, and a pool re-created behind a store.
 */
import { describe, expect, test } from "bun:test";
import { Store } from "../../src/store/store.ts";
import { Errno } from "../../src/dm/errors.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { dmNameOf, openOnFakePool as open, prepareMounted, ranBefore } from "../kit/fakes/open.ts";
import { crashAfter, storeOf } from "../kit/fakes/crash.ts";

describe("thin ids the pool already had are never deleted", () => {
  test("a used pool (e.g. containerd's devmapper, transaction id 0) is refused by a fresh store", async () => {
    const pool = new FakePool();
    for (const id of [1, 2, 3]) pool.thins.set(id, { mapped: 123n << 20n });
    await expect(open(pool)).rejects.toThrow("not empty");
    expect([...pool.thins.keys()]).toEqual([1, 2, 3]);
  });

  test("EEXIST on create_snap reserves the id and Prepare goes on with the next one", async () => {
    const { sn, pool, store } = await open();
    const next = Number(store.getMeta("last_thin_id")) + 1;
    pool.thins.set(next, { mapped: 7n }); // someone else's, or a store restored from a backup
    await sn.prepare("a", "");
    expect(pool.thins.get(next)?.mapped).toBe(7n);
    expect(store.getDevice(next)?.role).toBe("foreign");
    expect(store.getSnapshot("a")!.thinId).not.toBe(next);
    await sn.remove("a");
    await sn.cleanup();
    expect(pool.thins.has(next)).toBe(true);
  });
});

describe("start-up survives busy and broken devices", () => {
  test("an interrupted create whose device is still open is queued, not fatal", async () => {
    const { result: img } = await ranBefore(({ sn, pool, store }) => crashAfter(pool, store, "activate", () => sn.prepare("p", "")));
    const name = [...img.pool.mapped.keys()].find((n) => n.includes("snap"))!;
    img.pool.open(name); // a mkfs or mount that outlived the daemon
    const store2 = storeOf(img);
    const re = await open(img.pool, store2);
    expect(re.sn.lastReconcile?.busy).toBeGreaterThanOrEqual(1);
    img.pool.open(name, -1);
    await re.sn.cleanup();
    expect(store2.allDevices().every((d) => d.state === "ready")).toBe(true);
    expect(img.pool.mapped.has(name)).toBe(false);
  });

  test("a device left suspended is resumed; one without a live table is mapped again", async () => {
    const { pool, store } = await ranBefore(async ({ sn }) => {
      await sn.prepare("a", "");
      await sn.prepare("b", "");
    });
    pool.mapped.get(dmNameOf(store, "a"))!.suspended = true;
    pool.mapped.get(dmNameOf(store, "b"))!.liveTable = false;
    const re = await open(pool, store);
    expect(re.sn.lastReconcile).toMatchObject({ resumed: 1, reactivated: 1 });
    expect(pool.info(dmNameOf(store, "a"))).toMatchObject({ suspended: false });
    expect(pool.info(dmNameOf(store, "b"))).toMatchObject({ liveTable: true });
  });

  test("a pool re-created behind an existing store is refused, every time", async () => {
    const { pool, store } = await ranBefore(async ({ sn }) => {
      await sn.prepare("x", "");
      await sn.commit("c", "x");
    });
    (await open(pool, store)).sn.remover.stop();
    const fresh = new FakePool();
    await expect(open(fresh, store)).rejects.toThrow("transaction id");
    await expect(open(fresh, store)).rejects.toThrow("transaction id");
  });
});

describe("operations report what happened", () => {
  test("a Commit that landed is not reported as failed when deactivation fails", async () => {
    const { sn, pool } = await open();
    await sn.prepare("a", "");
    pool.failNext("deactivate", Errno.EINVAL);
    await sn.commit("c", "a");
    expect((await sn.stat("c")).kind).toBe("committed");
  });

  test("async remove never discards a device that is still open", async () => {
    const { sn, pool, store } = await open(new FakePool(), Store.open(":memory:"), { asyncRemove: true, discardBlocks: true });
    await sn.prepare("a", "");
    const name = dmNameOf(store, "a");
    pool.write(name, 8n << 20n);
    pool.open(name);
    const discardsWhileOpen: string[] = [];
    pool.onCall = (op) => {
      if (op === "discard" && (pool.mapped.get(name)?.openCount ?? 0) > 0) discardsWhileOpen.push(op);
    };
    await sn.remove("a");
    await sn.remover.drain(250);
    expect(discardsWhileOpen).toEqual([]);
    pool.open(name, -1);
    await sn.cleanup();
    expect(pool.calls).toContain("discard");
    sn.remover.stop();
  });

  test("Cleanup retries at once instead of waiting for an older, longer backoff", async () => {
    const { sn, pool, store } = await open(new FakePool(), Store.open(":memory:"), { asyncRemove: true });
    const name = await prepareMounted({ sn, pool, store }, "a");
    await sn.remove("a");
    await Bun.sleep(1700); // backoff grows to ~1.6 s
    setTimeout(() => pool.open(name, -1), 50);
    const t0 = performance.now();
    await sn.cleanup();
    expect(performance.now() - t0).toBeLessThan(500);
    expect(store.devicesInState("deleting")).toHaveLength(0);
    sn.remover.stop();
  }, 20_000);

  test("a failed roll-back is handed to the remover right away", async () => {
    const { sn, pool, store } = await open();
    await Bun.sleep(20);
    pool.failNext("activate", Errno.EBUSY);
    pool.failNext("deactivate", Errno.EINVAL);
    await expect(sn.prepare("a", "")).rejects.toThrow();
    expect(store.devicesInState("deleting")).toHaveLength(1);
    await Bun.sleep(400);
    expect(store.devicesInState("deleting")).toHaveLength(0);
    sn.remover.stop();
  });
});

describe("power cut: creates in the reserved thin-id window", () => {
  /** Counts transactions that fsync (tx outside txRelaxed) and relaxed ones. */
  function spyTx(store: Store): { durable: number; relaxed: number } {
    const n = { durable: 0, relaxed: 0 };
    let inRelaxed = false;
    const tx = store.tx.bind(store);
    const relaxed = store.txRelaxed.bind(store);
    store.tx = <T>(fn: () => T): T => {
      if (!inRelaxed) n.durable++;
      return tx(fn);
    };
    store.txRelaxed = <T>(fn: () => T): T => {
      n.relaxed++;
      inRelaxed = true;
      try {
        return relaxed(fn);
      } finally {
        inRelaxed = false;
      }
    };
    return n;
  }

  /**
   * A daemon made snapshot "a" and stopped; then a power cut lost the (not
   * fsynced) intent row of the next create after the kernel made its device:
   * the pool has the id, the store does not.
   */
  async function forgottenCreate(): Promise<{ pool: FakePool; store: Store; lost: number }> {
    const { pool, store } = await ranBefore(async ({ sn }) => void (await sn.prepare("a", "")));
    const lost = store.peekThinId();
    pool.thins.set(lost, { mapped: 0n });
    return { pool, store, lost };
  }

  test("a Prepare whose id is in the durably reserved window commits without fsync; one window per 32 ids", async () => {
    const { sn, store } = await open();
    store.tx(() => store.clearThinIdWindow()); // as after a restart
    const n = spyTx(store);
    await sn.prepare("first", "");
    expect(n).toEqual({ durable: 1, relaxed: 1 }); // opens the window; ready row relaxed
    const first = store.getSnapshot("first")!.thinId;
    expect(store.reservedThinIds()).toHaveLength(32);
    expect(store.reservedThinIds()[0]).toBe(first);
    for (let i = 1; i < 32; i++) await sn.prepare(`k${i}`, "");
    expect(n).toEqual({ durable: 1, relaxed: 63 }); // 31 more, each intent + ready relaxed
    await sn.prepare("k32", "");
    expect(n.durable).toBe(2); // the 33rd id opens the next window
    expect(store.reservedThinIds()[0]).toBe(store.getSnapshot("k32")!.thinId);
  });

  test("start-up deletes window ids the pool has but the store lost, and leaves others alone", async () => {
    const { pool, store, lost } = await forgottenCreate();
    expect(store.reservedThinIds()).toContain(lost);
    const outside = 5000;
    pool.thins.set(outside, { mapped: 0n }); // not an id we could have handed out: not ours to delete
    const again = await open(pool, store);
    expect(again.sn.lastReconcile?.orphansDeleted).toBe(1);
    expect(pool.thins.has(lost)).toBe(false);
    expect(pool.thins.has(outside)).toBe(true);
    expect((await again.sn.stat("a")).kind).toBe("active");
    expect(store.reservedThinIds()).toHaveLength(0); // accounted for; the next create opens a new one
    await again.sn.prepare("b", "");
    expect(store.reservedThinIds()).toContain(store.getSnapshot("b")!.thinId);
    again.sn.remover.stop();
  });

  test("a forgotten id the pool refuses to delete does not stop start-up; the next start retries it", async () => {
    const { pool, store, lost } = await forgottenCreate();
    pool.failNext("delete", Errno.EBUSY);
    const second = await open(pool, store);
    expect(second.sn.lastReconcile?.failed).toBe(1);
    expect(pool.thins.has(lost)).toBe(true);
    expect(store.reservedThinIds()).toContain(lost); // kept for the next start
    second.sn.remover.stop();
    const third = await open(pool, store);
    expect(third.sn.lastReconcile?.orphansDeleted).toBe(1);
    expect(pool.thins.has(lost)).toBe(false);
    third.sn.remover.stop();
  });

  test("the window wraps at the largest thin id", () => {
    const store = Store.open(":memory:");
    store.tx(() => store.setMeta("last_thin_id", String(0xffffff - 2)));
    const id = store.tx(() => store.allocateThinId());
    expect(id).toBe(0xffffff - 1);
    const w = store.reservedThinIds();
    expect(w.slice(0, 4)).toEqual([0xffffff - 1, 0xffffff, 1, 2]);
    expect(w).toHaveLength(32);
    store.tx(() => store.setMeta("last_thin_id", String(0xffffff)));
    expect(store.nextThinId().reserved).toBe(true); // 1
    store.tx(() => store.setMeta("last_thin_id", String(29)));
    expect(store.nextThinId().reserved).toBe(true); // 30 = the 32nd
    store.tx(() => store.setMeta("last_thin_id", String(30)));
    expect(store.nextThinId().reserved).toBe(false);
  });
});
