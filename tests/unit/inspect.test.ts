/**
 * inspect(): each kind of problem found in hand-built store and pool views,
 * and none in a consistent pair.
 */
import { describe, expect, test } from "bun:test";
import {
  describeProblem,
  inspect,
  type MappingView,
  type PoolView,
  type Problem,
  type SnapshotBrief,
  type StoreView,
} from "../../src/consistency/inspect.ts";
import type { DeviceRow } from "../../src/store/store.ts";

const P = "tp";
function dev(thinId: number, o: Partial<DeviceRow> = {}): DeviceRow {
  const role = o.role ?? "snapshot";
  return {
    thinId,
    dmName: `${P}-${role === "base" ? "base" : role === "foreign" ? "foreign" : "snap"}-${thinId}`,
    role,
    state: "ready",
    originId: role === "base" ? null : 1,
    fsBytes: null,
    sizeBytes: 64n << 20n,
    fsType: "ext4",
    active: false,
    discard: false,
    ...o,
  };
}
const mapped = (o: Partial<MappingView> = {}): MappingView => ({ openCount: 0, suspended: false, liveTable: true, node: true, ...o });

/**
 * A consistent pair: base 1 (inactive), committed 2 (inactive), active 3 and
 * view 4 (mapped), a foreign id 9 in the pool; transaction id 7.
 */
function consistent(): { store: StoreView; pool: PoolView } {
  const devices = [
    dev(1, { role: "base" }),
    dev(2),
    dev(3, { active: true }),
    dev(4, { active: true }),
    dev(9, { role: "foreign" }),
  ];
  const snapshots: SnapshotBrief[] = [
    { name: "c", kind: "committed", thinId: 2 },
    { name: "a", kind: "active", thinId: 3 },
    { name: "v", kind: "view", thinId: 4 },
  ];
  return {
    store: { devices, snapshots, window: [3, 4, 5, 6], transactionId: 7n },
    pool: {
      thinIds: new Set([1, 2, 3, 4, 9]),
      mappings: new Map([
        [`${P}-snap-3`, mapped()],
        [`${P}-snap-4`, mapped()],
      ]),
      transactionId: 7n,
    },
  };
}

interface MutableStore {
  devices: DeviceRow[];
  snapshots: SnapshotBrief[];
  window: number[];
  transactionId: bigint | null;
}
interface MutablePool {
  thinIds: Set<number> | null;
  mappings: Map<string, MappingView>;
  transactionId: bigint | null;
}

/** inspect() of the consistent pair with `store`/`pool` changed by the callbacks. */
function changed(s: (v: MutableStore) => void, p: (v: MutablePool) => void = () => {}): Problem[] {
  const c = consistent();
  const store: MutableStore = {
    ...c.store,
    devices: c.store.devices.map((d) => ({ ...d })),
    snapshots: [...c.store.snapshots],
    window: [...c.store.window],
  };
  const pool: MutablePool = { ...c.pool, thinIds: new Set(c.pool.thinIds), mappings: new Map(c.pool.mappings) };
  s(store);
  p(pool);
  return inspect(store, pool);
}
const kinds = (ps: Problem[]): string[] => ps.map((x) => x.kind);

describe("inspect", () => {
  test("a consistent pair has no problems, with the pool's ids listed or not", () => {
    const { store, pool } = consistent();
    expect(inspect(store, pool)).toEqual([]);
    expect(inspect({ ...store, window: [] }, { ...pool, thinIds: null })).toEqual([]);
    expect(inspect(store, { ...pool, transactionId: null })).toEqual([]);
  });

  test("orphan: an id in the pool without a row; unlisted pool: the window's ids without a row are suspects", () => {
    const ps = changed(() => {}, (p) => (p.thinIds = new Set([...p.thinIds!, 12])));
    expect(ps).toEqual([{ kind: "orphan", thinId: 12, certain: true }]);
    const { store, pool } = consistent();
    expect(inspect(store, { ...pool, thinIds: null })).toEqual([
      { kind: "orphan", thinId: 5, certain: false },
      { kind: "orphan", thinId: 6, certain: false },
    ]);
  });

  test("interrupted create and delete, with their mappings", () => {
    const ps = changed(
      (s) => {
        s.devices.push(dev(5, { state: "creating", active: true }), dev(6, { state: "deleting" }));
        s.snapshots.push({ name: "half", kind: "active", thinId: 5 });
      },
      (p) => p.mappings.set(`${P}-snap-5`, mapped({ openCount: 1 })),
    );
    expect(kinds(ps)).toEqual(["interrupted-create", "interrupted-delete"]);
    expect(ps[0]).toMatchObject({ device: { thinId: 5 }, mapping: { openCount: 1 } });
    expect(ps[1]).toMatchObject({ device: { thinId: 6 }, mapping: null });
  });

  test("missing device: a ready row whose id the pool lacks (only when the pool is listed)", () => {
    const ps = changed(() => {}, (p) => p.thinIds!.delete(2));
    expect(ps).toEqual([expect.objectContaining({ kind: "missing-device", device: expect.objectContaining({ thinId: 2 }), snapshot: { name: "c", kind: "committed", thinId: 2 } })]);
  });

  test("unowned device: a ready snapshot device without a snapshot row", () => {
    const ps = changed((s) => (s.snapshots = s.snapshots.filter((x) => x.thinId !== 2)));
    expect(ps).toEqual([expect.objectContaining({ kind: "unowned-device", device: expect.objectContaining({ thinId: 2 }) })]);
  });

  test("snapshot without device: its row is gone or being deleted", () => {
    const gone = changed((s) => s.snapshots.push({ name: "lost", kind: "committed", thinId: 40 }));
    expect(gone).toEqual([expect.objectContaining({ kind: "snapshot-without-device", device: null })]);
    const deleting = changed((s) => (s.devices[1]!.state = "deleting"));
    expect(kinds(deleting)).toEqual(["interrupted-delete", "snapshot-without-device"]);
  });

  test("no base: none ready", () => {
    expect(kinds(changed((s) => (s.devices[0]!.state = "deleting")))).toEqual(["interrupted-delete", "no-base"]);
  });

  test("activation: active/view must serve IO, committed and base must not be mapped", () => {
    const unmapped = changed(() => {}, (p) => p.mappings.delete(`${P}-snap-3`));
    expect(unmapped).toEqual([expect.objectContaining({ kind: "activation", want: true, mapping: null, snapshot: { name: "a", kind: "active", thinId: 3 } })]);
    for (const bad of [{ suspended: true }, { liveTable: false }, { node: false }]) {
      const ps = changed(() => {}, (p) => p.mappings.set(`${P}-snap-4`, mapped(bad)));
      expect(ps).toEqual([expect.objectContaining({ kind: "activation", want: true, mapping: expect.objectContaining(bad) })]);
    }
    const committed = changed(() => {}, (p) => p.mappings.set(`${P}-snap-2`, mapped({ openCount: 1 })));
    expect(committed).toEqual([expect.objectContaining({ kind: "activation", want: false, device: expect.objectContaining({ thinId: 2 }) })]);
    const base = changed(() => {}, (p) => p.mappings.set(`${P}-base-1`, mapped()));
    expect(base).toEqual([expect.objectContaining({ kind: "activation", want: false, snapshot: null })]);
  });

  test("active flag: the row's `active` follows its snapshot's kind", () => {
    const ps = changed((s) => {
      s.devices[1]!.active = true;
      s.devices[2]!.active = false;
    });
    expect(ps).toEqual([
      expect.objectContaining({ kind: "active-flag", device: expect.objectContaining({ thinId: 2 }), want: false }),
      expect.objectContaining({ kind: "active-flag", device: expect.objectContaining({ thinId: 3 }), want: true }),
    ]);
  });

  test("stray mapping: a mapped thin device of the pool no row knows", () => {
    const ps = changed(() => {}, (p) => p.mappings.set(`${P}-snap-77`, mapped()));
    expect(ps).toEqual([{ kind: "stray-mapping", dmName: `${P}-snap-77`, mapping: mapped() }]);
  });

  test("transaction id: the pool's must be the store's", () => {
    expect(changed((s) => (s.transactionId = 6n))).toEqual([{ kind: "transaction-id", store: 6n, pool: 7n }]);
    expect(changed((s) => (s.transactionId = null))).toEqual([{ kind: "transaction-id", store: null, pool: 7n }]);
  });

  test("foreign ids are neither orphans nor expected to be mapped", () => {
    const ps = changed((s) => (s.devices[4]!.active = true));
    expect(ps).toEqual([]);
  });

  test("every problem has a description naming what is wrong", () => {
    const all = [
      ...changed(() => {}, (p) => p.thinIds!.add(12)),
      ...changed((s) => s.devices.push(dev(5, { state: "creating" }))),
      ...changed((s) => (s.snapshots = s.snapshots.filter((x) => x.thinId !== 2))),
      ...changed(() => {}, (p) => p.mappings.set(`${P}-snap-4`, mapped({ suspended: true }))),
    ];
    expect(all.map(describeProblem)).toEqual([
      "orphaned thin id 12: in the pool, owned by no snapshot",
      `interrupted create: thin id 5 (${P}-snap-5)`,
      `ready snapshot device thin id 2 (${P}-snap-2) has no snapshot row`,
      `${P}-snap-4 is suspended but its view snapshot "v" wants it active`,
    ]);
  });
});
