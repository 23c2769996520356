/**
 * List never shows a snapshot half made: while a Prepare/View is in its
 * kernel calls (its device 'creating'), List leaves it out; it appears once
 * the Prepare is done, and never if the Prepare fails and rolls back.
 */
import { describe, expect, test } from "bun:test";
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { inlineKernelCalls, type KernelCalls } from "../../src/snapshotter/pool-api.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";

/** KernelCalls whose createSnap, once armed, waits for the test to release (or fail) it. */
function gatedCreateSnap(pool: FakePool) {
  const inline = inlineKernelCalls(pool);
  const state = { armed: true };
  let entered: () => void = () => {};
  const inKernel = new Promise<void>((r) => (entered = r));
  let release: (err?: Error) => void = () => {};
  const gate = new Promise<void>((resolve, reject) => {
    release = (err) => (err ? reject(err) : resolve());
  });
  const calls: KernelCalls = {
    ...inline,
    createSnap: async (...args: Parameters<KernelCalls["createSnap"]>) => {
      if (state.armed) {
        entered();
        await gate;
      }
      return inline.createSnap(...args);
    },
  };
  return { calls, inKernel, release, state };
}

async function names(sn: ThinSnapshotter, filters: string[] = []): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((i) => void out.push(i.name), filters);
  return out.sort();
}

async function open() {
  const pool = new FakePool();
  const store = Store.open(":memory:");
  const gated = gatedCreateSnap(pool);
  const sn = await ThinSnapshotter.open(TEST_OPTIONS, { store, pool, format: async () => {}, kernel: gated.calls });
  return { sn, store, ...gated };
}

describe("List and a Prepare in its kernel calls", () => {
  for (const kind of ["prepare", "view"] as const) {
    test(`${kind}: not listed while in the kernel, listed once done`, async () => {
      const { sn, inKernel, release } = await open();
      const p = sn[kind]("k", "", { labels: { x: "1" } });
      await inKernel;
      // Every form of List: all, by name, by label, by regexp.
      expect(await names(sn)).toEqual([]);
      expect(await names(sn, ["name==k"])).toEqual([]);
      expect(await names(sn, ["labels.x==1"])).toEqual([]);
      expect(await names(sn, ["name~=^k$"])).toEqual([]);
      release();
      await p;
      expect(await names(sn)).toEqual(["k"]);
      expect(await names(sn, ["labels.x==1"])).toEqual(["k"]);
      await sn.close();
    });
  }

  test("a Prepare that fails in the kernel is never listed", async () => {
    const { sn, store, inKernel, release } = await open();
    const seen: string[][] = [];
    const p = sn.prepare("doomed", "");
    await inKernel;
    seen.push(await names(sn));
    release(new Error("injected kernel failure"));
    await expect(p).rejects.toThrow();
    seen.push(await names(sn));
    expect(seen).toEqual([[], []]);
    expect(store.getSnapshot("doomed")).toBeNull();
    await sn.close();
  });

  test("other snapshots stay listed meanwhile, and Stat still waits for the write", async () => {
    const { sn, inKernel, release, state } = await open();
    state.armed = false;
    await sn.prepare("other", "");
    await sn.commit("committed", "other");
    state.armed = true;
    const p = sn.prepare("slow", "committed");
    await inKernel;
    let statDone = false;
    const stat = sn.stat("slow").then((i) => {
      statDone = true;
      return i.name;
    });
    await Bun.sleep(10);
    expect(statDone).toBe(false);
    expect(await names(sn)).toEqual(["committed"]);
    expect(await names(sn, ['parent==committed'])).toEqual([]);
    release();
    await p;
    expect(await stat).toBe("slow");
    expect(await names(sn)).toEqual(["committed", "slow"]);
    expect(await names(sn, ['parent==committed'])).toEqual(["slow"]);
    await sn.close();
  });
});
