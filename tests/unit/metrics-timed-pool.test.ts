/** Kernel-call timing decorators around the snapshotter's pool ports. */
import { describe, expect, test } from "bun:test";
import { Errno } from "../../src/dm/errors.ts";
import { KERNEL_CALLS, Metrics, type KernelCallName } from "../../src/metrics/registry.ts";
import { timedKernelCalls, timedPool } from "../../src/metrics/timed-pool.ts";
import { inlineKernelCalls } from "../../src/snapshotter/pool-api.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { Store } from "../../src/store/store.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";

function recorder() {
  const calls: [KernelCallName, number][] = [];
  return { calls, record: (c: KernelCallName, s: number) => void calls.push([c, s]), names: () => calls.map((c) => c[0]) };
}

describe("timedPool / timedKernelCalls", () => {
  test("each pool call is timed under its metric name; reads pass through", async () => {
    const fake = new FakePool();
    const r = recorder();
    const pool = timedPool(fake, r.record);
    expect(pool.name).toBe("fakepool");
    pool.status();
    pool.createThin(1);
    pool.createSnap(2, 1, null);
    pool.activate("d", 2, 1n << 20n);
    pool.info("d");
    pool.isActive("d");
    pool.mappedBytes("d");
    pool.blockSize();
    pool.flush("d");
    pool.resume("d");
    pool.fsyncDevice("d");
    pool.discardDevice("d");
    pool.deactivate("d");
    pool.deleteThin(2);
    expect(r.names()).toEqual([
      "status",
      "create_thin",
      "create_snap",
      "activate",
      "suspend",
      "resume",
      "fsync",
      "discard",
      "deactivate",
      "delete",
    ]);
    expect(new Set(r.names())).toEqual(new Set(KERNEL_CALLS));
    for (const [, s] of r.calls) expect(s).toBeGreaterThanOrEqual(0);
  });

  test("failures are timed and still thrown", async () => {
    const fake = new FakePool();
    const r = recorder();
    const pool = timedPool(fake, r.record);
    fake.failNext("create_thin", Errno.ENOSPC);
    expect(() => pool.createThin(1)).toThrow();
    expect(r.names()).toEqual(["create_thin"]);
    const calls = timedKernelCalls(inlineKernelCalls(fake), r.record);
    fake.failNext("delete", Errno.EBUSY);
    await expect(calls.deleteThin(9)).rejects.toThrow();
    expect(r.names()).toEqual(["create_thin", "delete"]);
  });

  test("the async calls measure the whole await", async () => {
    const r = recorder();
    const slow = inlineKernelCalls(new FakePool());
    const calls = timedKernelCalls({ ...slow, fsyncDevice: async () => void (await Bun.sleep(30)) }, r.record);
    await calls.fsyncDevice("x");
    expect(r.calls[0]![0]).toBe("fsync");
    expect(r.calls[0]![1]).toBeGreaterThan(0.02);
  });

  test("wired into the snapshotter: a Prepare, Commit, child Prepare and Remove are counted once each", async () => {
    const fake = new FakePool();
    const m = new Metrics({ version: "v", revision: "r", processMetrics: false });
    const record = (c: KernelCallName, s: number) => m.kernelCall(c, s);
    // Worker-thread style: KernelCalls timed, the pool (sync calls) timed, inline calls not wrapped twice.
    const sn = await ThinSnapshotter.open(
      { ...TEST_OPTIONS },
      { store: Store.open(":memory:"), pool: timedPool(fake, record), kernel: timedKernelCalls(inlineKernelCalls(fake), record), format: async () => {}, statusTtlMs: 0 },
    );
    const before = await m.scrape();
    const count = (text: string, call: string): number =>
      Number(new RegExp(`^thinsnap_kernel_call_duration_seconds_count\\{call="${call}"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    await sn.prepare("a", "");
    await sn.commit("c", "a");
    await sn.prepare("b", "c");
    await sn.remove("b");
    const after = await m.scrape();
    const delta = (call: string): number => count(after, call) - count(before, call);
    expect(delta("create_snap")).toBe(2);
    expect(delta("activate")).toBe(2);
    expect(delta("fsync")).toBe(1);
    expect(delta("deactivate")).toBe(2); // commit's, remove's
    expect(delta("delete")).toBe(1);
    expect(delta("status")).toBe(3); // the space check of each Prepare (cache TTL 0), and Commit's out-of-data check
    expect(fake.calls.filter((c) => c === "create_snap")).toHaveLength(2);
    await sn.close();
  });
});
