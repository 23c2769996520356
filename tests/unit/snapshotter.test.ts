/** Snapshot semantics on a fake pool (no kernel), plus crash/rollback paths. */
import { describe, expect, test } from "bun:test";
import { Store } from "../../src/store/store.ts";
import { Errno } from "../../src/dm/errors.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { describeSemantics, expectCode } from "../shared/semantics.ts";
import { dmNameOf, openOnFakePool as open, prepareMounted } from "../kit/fakes/open.ts";
import { armCrashAtStep, rethrowUnlessCrash, storeOf } from "../kit/fakes/crash.ts";

for (const asyncRemove of [false, true]) {
  describeSemantics(`fake pool, async_remove=${asyncRemove}`, async () => {
    const { sn, pool, store } = await open(new FakePool(), Store.open(":memory:"), { asyncRemove });
    return {
      sn,
      fsType: "ext4",
      write: async (key, bytes) => pool.write(dmNameOf(store, key), BigInt(bytes)),
      teardown: async () => {
        await sn.cleanup();
        // only the base device is left in the pool
        expect(pool.thins.size).toBe(1);
        expect(pool.mapped.size).toBe(0);
        await sn.close();
      },
    };
  });
}

describe("thin devices on a fake pool", () => {
  test("the base is formatted once and parentless snapshots are create_snap of it", async () => {
    const { sn, pool, formatted } = await open();
    expect(formatted).toHaveLength(1);
    pool.calls = [];
    await sn.prepare("a", "");
    await sn.prepare("b", "");
    expect(formatted).toHaveLength(1);
    expect(pool.calls.filter((c) => c === "create_thin")).toHaveLength(0);
    expect(pool.calls.filter((c) => c === "create_snap")).toHaveLength(2);
  });

  test("the base is recreated when its config changes, and kept otherwise", async () => {
    const pool = new FakePool();
    const store = Store.open(":memory:");
    const first = await open(pool, store);
    await first.sn.prepare("keep", "");
    first.sn.remover.stop();
    const again = await open(pool, store);
    expect(again.formatted).toHaveLength(0);
    again.sn.remover.stop();
    const changed = await open(pool, store, { baseImageSize: 128n << 20n });
    expect(changed.formatted).toHaveLength(1);
    await changed.sn.cleanup();
    expect(pool.thins.size).toBe(2); // new base + "keep"; the old base is deleted
    expect((await changed.sn.stat("keep")).kind).toBe("active");
  });

  test("commit deactivates; children snapshot the inactive origin", async () => {
    const { sn, pool, store } = await open();
    await sn.prepare("a", "");
    const name = dmNameOf(store, "a");
    expect(pool.mapped.has(name)).toBe(true);
    await sn.commit("c", "a");
    expect(pool.mapped.has(name)).toBe(false);
    await sn.prepare("b", "c");
    expect(pool.calls).toContain("fsync");
  });

  test("a commit whose device is still open defers its removal", async () => {
    const { sn, pool, store } = await open();
    await prepareMounted({ sn, pool, store }, "a");
    await sn.commit("c", "a");
    expect((await sn.stat("c")).kind).toBe("committed");
  });

  test("a child of a parent committed while still open is snapshotted with the parent suspended", async () => {
    const { sn, pool, store } = await open();
    const parentDev = await prepareMounted({ sn, pool, store }, "a");
    await sn.commit("c", "a");
    // The store now says inactive, but the kernel still maps the device.
    expect(pool.mapped.has(parentDev)).toBe(true);
    await sn.prepare("child", "c");
    expect((await sn.stat("child")).parent).toBe("c");
  });

  test("sync remove of a mounted snapshot is refused and changes nothing", async () => {
    const { sn, pool, store } = await open();
    await prepareMounted({ sn, pool, store }, "a");
    await expectCode(sn.remove("a"), "failed_precondition", "in use");
    expect((await sn.stat("a")).kind).toBe("active");
  });

  test("async remove returns at once; a busy device is retried until Cleanup finds it free", async () => {
    const { sn, pool, store } = await open(new FakePool(), Store.open(":memory:"), { asyncRemove: true });
    const name = await prepareMounted({ sn, pool, store }, "a");
    await sn.remove("a");
    await expectCode(sn.stat("a"), "not_found");
    expect(pool.mapped.has(name)).toBe(true);
    expect(await sn.remover.drain(300)).toBe(1);
    pool.open(name, -1);
    await sn.cleanup();
    expect(pool.mapped.has(name)).toBe(false);
    expect(pool.thins.size).toBe(1);
  });

  test("a failing kernel step rolls back completely", async () => {
    const { sn, pool } = await open();
    const thins = pool.thins.size;
    pool.failNext("activate", Errno.EBUSY);
    await expectCode(sn.prepare("a", ""), "internal");
    await expectCode(sn.stat("a"), "not_found");
    expect(pool.thins.size).toBe(thins);
    pool.failNext("create_snap", Errno.ENOSPC);
    await expectCode(sn.prepare("a", ""), "resource_exhausted", "out of space");
    expect(pool.thins.size).toBe(thins);
    await sn.prepare("a", ""); // and then it works
  });

  test("a full or read-only pool refuses new devices with its numbers", async () => {
    const { sn, pool } = await open(new FakePool(), Store.open(":memory:"), { minFreeSpacePercent: 10 });
    await sn.prepare("a", "");
    pool.write(`fakepool-snap-2`, 16384n * 65536n * 95n / 100n);
    await expectCode(sn.prepare("b", ""), "resource_exhausted", "blocks of 65536 bytes used");
    pool.write(`fakepool-snap-2`, -(16384n * 65536n * 95n) / 100n);
    await sn.prepare("b", "");
    pool.mode = "ro";
    await expectCode(sn.prepare("c", ""), "resource_exhausted", "is ro");
    pool.mode = "rw";
    pool.usedMetadataBlocksExtra = pool.totalMetadataBlocks - 10n;
    await expectCode(sn.prepare("c", ""), "resource_exhausted", "metadata");
  });

  test("thin ids are not reused until the pool confirmed the delete", async () => {
    const { sn, pool, store } = await open();
    await sn.prepare("a", "");
    const id = store.getSnapshot("a")!.thinId;
    pool.failNext("delete", Errno.EBUSY);
    await sn.remove("a");
    expect(store.getDevice(id)?.state).toBe("deleting");
    await sn.prepare("b", "");
    expect(store.getSnapshot("b")!.thinId).not.toBe(id);
    await sn.cleanup();
    expect(store.getDevice(id)).toBeNull();
  });
});

describe("crash at every kernel step, then restart", () => {
  /**
   * A crash image is taken just before or just after the N-th kernel call:
   * the database bytes and the pool's state at that instant. Nothing the
   * dying process would do afterwards (roll-backs, later writes) gets in.
   */
  const ops = ["prepare", "view", "commit", "remove", "remove-async"] as const;

  for (const op of ops) {
    test(`${op}: a crash before/after each kernel step recovers to agreement`, async () => {
      let images = 0;
      for (let crashAt = 0; ; crashAt++) {
        for (const when of ["before", "after"] as const) {
          const pool = new FakePool();
          const store = Store.open(":memory:");
          const { sn } = await open(pool, store, { asyncRemove: op === "remove-async" });
          await sn.prepare("p", "", { labels: { keep: "me" } });
          await sn.commit("parent", "p", { labels: { keep: "me" } });
          await sn.prepare("act", "parent");
          const crash = armCrashAtStep(pool, store, when, crashAt);
          let returned = false;
          try {
            if (op === "prepare") await sn.prepare("new", "parent");
            else if (op === "view") await sn.view("new", "parent");
            else if (op === "commit") await sn.commit("new", "act");
            else {
              await sn.remove("act");
              await sn.cleanup();
            }
            returned = crash.image === null;
          } catch (e) {
            rethrowUnlessCrash(e);
          }
          const image = crash.disarm();
          sn.remover.stop();
          if (!image) {
            expect(returned).toBe(true);
            if (when === "after") return void expect(images).toBeGreaterThan(2);
            continue;
          }
          images++;
          // restart on the crash image
          const store2 = storeOf(image);
          const pool2 = image.pool;
          const re = await open(pool2, store2);
          await re.sn.cleanup();
          // every pool thin id belongs to a store device, and vice versa; nothing half-done
          expect(new Set(pool2.thins.keys())).toEqual(new Set(store2.allDevices().map((d) => d.thinId)));
          for (const d of store2.allDevices()) expect(d.state).toBe("ready");
          // active/view snapshots are mapped, committed ones are not
          let live = 0;
          await re.sn.walk((i) => {
            if (i.kind !== "committed") live++;
            const dev = store2.getDevice(store2.getSnapshot(i.name)!.thinId)!;
            expect(pool2.mapped.has(dev.dmName)).toBe(i.kind !== "committed");
          }, []);
          expect(pool2.mapped.size).toBe(live);
          // the committed parent and its labels always survive
          const parent = await re.sn.stat("parent");
          expect(parent.labels.keep).toBe("me");
          // an interrupted prepare/view is rolled back; commit/remove either landed or not
          if (op === "prepare" || op === "view") await expectCode(re.sn.stat("new"), "not_found");
          if (op === "commit") {
            const landed = store2.getSnapshot("new") !== null;
            expect(store2.getSnapshot("act") !== null).toBe(!landed);
          }
          expect(pool2.transactionId.toString()).toBe(store2.getMeta("pool_transaction_id") ?? "missing");
          // and the snapshotter still works
          await re.sn.prepare("after-crash", "parent");
          re.sn.remover.stop();
        }
        if (crashAt > 30) throw new Error("runaway");
      }
    });
  }
});
