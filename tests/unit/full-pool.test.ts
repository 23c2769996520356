/**
 * A pool out of data space (issue 12, "Slow kernel calls"), on the in-memory
 * pool: steps whose writes would meet it are refused with ResourceExhausted
 * before the call that would sleep (a pool without error_if_no_space queues
 * those writes for 60 s), and the EIO a pool with it returns is reported as
 * out of space too. tests/dm/full-pool.test.ts does the same on a real pool.
 */
import { describe, expect, test } from "bun:test";
import { Store } from "../../src/store/store.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { expectCode } from "../shared/semantics.ts";
import { dmNameOf, openOnFakePool, prepareMounted } from "../kit/fakes/open.ts";

const open = (statusTtlMs = 0) => openOnFakePool(new FakePool(), Store.open(":memory:"), {}, statusTtlMs);

describe("a pool out of data space", () => {
  test("Commit is refused before its flush and fsync, and succeeds once there is space", async () => {
    const { sn, pool, store } = await open();
    await prepareMounted({ sn, pool, store }, "a"); // still mounted: Commit would suspend (flush) it
    pool.mode = "out_of_data_space";
    pool.calls = [];
    await expectCode(sn.commit("A", "a"), "resource_exhausted", "out of data space");
    expect(pool.calls).not.toContain("flush");
    expect(pool.calls).not.toContain("fsync");
    expect((await sn.stat("a")).kind).toBe("active");
    pool.mode = "rw";
    pool.open(dmNameOf(store, "a"), -1);
    await sn.commit("A", "a");
    expect((await sn.stat("A")).kind).toBe("committed");
  });

  test("a pool that fills while Commit flushes a mounted device: refused (its writeback may have failed)", async () => {
    const { sn, pool, store } = await open();
    await prepareMounted({ sn, pool, store }, "a");
    pool.onCall = (op) => {
      if (op === "flush") pool.mode = "out_of_data_space";
    };
    await expectCode(sn.commit("A", "a"), "resource_exhausted", "out of data space");
    expect((await sn.stat("a")).kind).toBe("active");
  });

  test("an fsync's EIO (error_if_no_space) on a full pool is ResourceExhausted, not Unavailable", async () => {
    const { sn, pool } = await open();
    await sn.prepare("a", "");
    const fsync = pool.fsyncDevice.bind(pool);
    pool.fsyncDevice = (name: string): void => {
      fsync(name);
      pool.mode = "out_of_data_space";
      throw Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" });
    };
    await expectCode(sn.commit("A", "a"), "resource_exhausted", "out of space");
    // The same EIO on a pool with room is not a space problem.
    pool.mode = "rw";
    pool.fsyncDevice = (name: string): void => {
      fsync(name);
      throw Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" });
    };
    let err: unknown = null;
    await sn.commit("A", "a").catch((e: unknown) => (err = e));
    expect(String(err)).not.toContain("out of space");
  });

  test("Prepare from a still-mapped parent checks fresh status before suspending it", async () => {
    // A long cache: the space check alone would still see the pool as it was.
    const { sn, pool, store } = await open(60_000);
    await sn.prepare("a", "");
    await sn.commit("A", "a");
    const parentDm = dmNameOf(store, "A");
    pool.mapped.set(parentDm, { id: store.getSnapshot("A")!.thinId, openCount: 1, size: 64n << 20n });
    await sn.stat("A");
    pool.mode = "out_of_data_space";
    pool.calls = [];
    await expectCode(sn.prepare("b", "A"), "resource_exhausted", "out of data space");
    expect(pool.calls).not.toContain("create_snap");
    expect(pool.calls).not.toContain("suspend");
    await expectCode(sn.stat("b"), "not_found");
  });
});
