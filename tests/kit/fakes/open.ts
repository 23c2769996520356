/** A ThinSnapshotter on the fake pool and a SQLite store (in memory unless given): the host tests' and benchmarks' harness. */
import { Store } from "../../../src/store/store.ts";
import { ThinSnapshotter, type SnapshotterOptions } from "../../../src/snapshotter/snapshotter.ts";
import { FakePool } from "./fake-pool.ts";
import { TEST_OPTIONS } from "./options.ts";

export interface OnFakePool {
  sn: ThinSnapshotter;
  pool: FakePool;
  store: Store;
  /** Devices the snapshotter asked to format (nothing is formatted). */
  formatted: string[];
}

/**
 * Opens the snapshotter with TEST_OPTIONS overridden by `opts`. The pool's
 * status is not cached (statusTtlMs 0) unless `statusTtlMs` says otherwise.
 */
export async function openOnFakePool(
  pool = new FakePool(),
  store = Store.open(":memory:"),
  opts: Partial<SnapshotterOptions> = {},
  statusTtlMs: number | undefined = 0,
): Promise<OnFakePool> {
  const formatted: string[] = [];
  const sn = await ThinSnapshotter.open(
    { ...TEST_OPTIONS, ...opts },
    { store, pool, format: async (p) => void formatted.push(p), ...(statusTtlMs === undefined ? {} : { statusTtlMs }) },
  );
  return { sn, pool, store, formatted };
}
