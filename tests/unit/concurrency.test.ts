/**
 * Writes that overlap in the kernel (KernelCalls that really wait, as on the
 * daemon's worker threads): per-key locking keeps each key's writes in order,
 * different keys overlap, and store and pool stay consistent.
 */
import { describe, expect, test } from "bun:test";
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { inlineKernelCalls, type KernelCalls } from "../../src/snapshotter/pool-api.ts";
import { KeyedLock } from "../../src/keyed-lock.ts";
import { SnapshotterError } from "../../src/errors.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { describeProblem, inspect } from "../../src/consistency/inspect.ts";
import { readPoolView, readStoreView } from "../../src/consistency/views.ts";

/** Each call waits `ms` before it runs on the fake; counts calls in flight. */
function slowCalls(pool: FakePool, ms: number): KernelCalls & { maxInFlight: number } {
  const inline = inlineKernelCalls(pool);
  let inFlight = 0;
  const out = { maxInFlight: 0 } as KernelCalls & { maxInFlight: number };
  for (const name of Object.keys(inline) as (keyof KernelCalls)[]) {
    const fn = inline[name] as (...a: unknown[]) => Promise<void>;
    (out as unknown as Record<string, unknown>)[name] = async (...args: unknown[]) => {
      inFlight++;
      out.maxInFlight = Math.max(out.maxInFlight, inFlight);
      try {
        await Bun.sleep(ms);
        await fn(...args);
      } finally {
        inFlight--;
      }
    };
  }
  return out;
}

async function open(ms = 5) {
  const pool = new FakePool();
  const store = Store.open(":memory:");
  const kernel = slowCalls(pool, ms);
  const sn = await ThinSnapshotter.open(TEST_OPTIONS, { store, pool, format: async () => {}, statusTtlMs: 0, kernel });
  return { sn, pool, store, kernel };
}

const codeOf = async (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => "ok",
    (e: unknown) => (e instanceof SnapshotterError ? e.code : `unexpected: ${String(e)}`),
  );

/** Store and pool agree (src/consistency/inspect.ts): nothing half-made, nothing the other lacks. */
function expectConsistent(store: Store, pool: FakePool): void {
  const sv = readStoreView(store);
  const pv = readPoolView(pool, sv.devices, { mapped: pool.mapped.keys(), thinIds: [...pool.thins.keys()] });
  expect(inspect(sv, pv).map(describeProblem)).toEqual([]);
}

describe("overlapping writes", () => {
  test("different keys overlap in the kernel and all land with distinct thin ids", async () => {
    const { sn, pool, store, kernel } = await open();
    await Promise.all(Array.from({ length: 16 }, (_, i) => sn.prepare(`k${i}`, "")));
    expect(kernel.maxInFlight).toBeGreaterThan(1);
    const ids = new Set(Array.from({ length: 16 }, (_, i) => store.getSnapshot(`k${i}`)!.thinId));
    expect(ids.size).toBe(16);
    await Promise.all(Array.from({ length: 16 }, (_, i) => sn.commit(`c${i}`, `k${i}`)));
    await Promise.all(Array.from({ length: 16 }, (_, i) => sn.prepare(`child${i}`, `c${i}`)));
    await Promise.all(Array.from({ length: 16 }, (_, i) => sn.remove(`child${i}`)));
    expectConsistent(store, pool);
    await sn.close();
  });

  test("the same key twice at once: one Prepare wins, the other is AlreadyExists", async () => {
    const { sn, pool, store } = await open();
    const codes = await Promise.all([codeOf(sn.prepare("same", "")), codeOf(sn.prepare("same", ""))]);
    expect(codes.sort()).toEqual(["already_exists", "ok"]);
    expectConsistent(store, pool);
  });

  test("Commit and Remove of one key at once: in call order, never half of each", async () => {
    const { sn, pool, store } = await open();
    await sn.prepare("a", "");
    const [c, r] = await Promise.all([codeOf(sn.commit("done", "a")), codeOf(sn.remove("a"))]);
    // The commit came first and landed; the Remove then found no key "a".
    expect([c, r]).toEqual(["ok", "not_found"]);
    expect((await sn.stat("done")).kind).toBe("committed");
    await sn.prepare("b", "");
    const [r2, c2] = await Promise.all([codeOf(sn.remove("b")), codeOf(sn.commit("done2", "b"))]);
    expect([r2, c2]).toEqual(["ok", "not_found"]);
    expectConsistent(store, pool);
  });

  test("two Commits to one name at once: one lands, the other is AlreadyExists and its key stays active", async () => {
    const { sn, pool, store } = await open();
    await sn.prepare("x", "");
    await sn.prepare("y", "");
    const codes = await Promise.all([codeOf(sn.commit("name", "x")), codeOf(sn.commit("name", "y"))]);
    expect(codes).toEqual(["ok", "already_exists"]);
    expect((await sn.stat("y")).kind).toBe("active");
    expectConsistent(store, pool);
  });

  test("a Prepare of a key that a running Commit is about to take as its name waits, then is AlreadyExists", async () => {
    const { sn } = await open();
    await sn.prepare("x", "");
    const [c, p] = await Promise.all([codeOf(sn.commit("n", "x")), codeOf(sn.prepare("n", ""))]);
    expect([c, p]).toEqual(["ok", "already_exists"]);
  });

  test("reads of a key wait for its write under way: never a device half made", async () => {
    const { sn } = await open(20);
    const p = sn.prepare("r", "");
    // Issued while the Prepare's create_snap/activate are still waiting.
    const [u, st, m] = await Promise.all([sn.usage("r"), sn.stat("r"), sn.mounts("r")]);
    await p;
    expect(u.size).toBe(0n);
    expect(st.kind).toBe("active");
    expect(m[0]!.source).toContain("-snap-");
    // Without waiting, a read before the Prepare's first step is NotFound.
    const q = sn.prepare("q", "");
    expect(await codeOf(sn.stat("other"))).toBe("not_found");
    await q;
  });

  test("close waits for writes already under way", async () => {
    const { sn, store } = await open(30);
    const p = sn.prepare("late", "");
    await Bun.sleep(1);
    await sn.close();
    expect(await codeOf(p)).toBe("ok");
    expect(() => store.getSnapshot("late")).toThrow(); // closed after the write landed
  });
});

describe("KeyedLock", () => {
  test("sections on one key run one at a time, in call order; other keys do not wait", async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const section = (name: string, keys: string[], ms: number) =>
      lock.run(keys, async () => {
        log.push(`${name}+`);
        await Bun.sleep(ms);
        log.push(`${name}-`);
      });
    await Promise.all([section("a", ["k"], 20), section("b", ["k", "j"], 1), section("c", ["z"], 1), section("d", ["j"], 1)]);
    // c (own key) runs at once; b waits for a; d waits for b (which holds j).
    expect(log.indexOf("c-")).toBeLessThan(log.indexOf("a-"));
    expect(log.indexOf("b+")).toBeGreaterThan(log.indexOf("a-"));
    expect(log.indexOf("d+")).toBeGreaterThan(log.indexOf("b-"));
    expect(lock.size).toBe(0);
  });

  test("after() waits for the key's sections under way, and holds nothing itself", async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const w = lock.run(["k"], async () => {
      await Bun.sleep(10);
      log.push("write");
    });
    const r = lock.after("k", () => log.push("read"));
    await Promise.all([w, r]);
    expect(log).toEqual(["write", "read"]);
    expect(await lock.after("free", () => 5)).toBe(5);
    expect(lock.size).toBe(0);
  });

  test("a failing section releases its keys", async () => {
    const lock = new KeyedLock();
    await expect(lock.run(["k"], async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    expect(await lock.run(["k"], async () => 7)).toBe(7);
    expect(lock.size).toBe(0);
  });
});
