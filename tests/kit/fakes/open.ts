/** A ThinSnapshotter on the fake pool and a SQLite store (in memory unless given): the host tests' and benchmarks' harness. */
import { Store, type DeviceRow } from "../../../src/store/store.ts";
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
 * status is not cached (statusTtlMs 0) unless `statusTtlMs` says otherwise;
 * a max-size grow is the fake pool's.
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
    { store, pool, format: async (p) => void formatted.push(p), grow: pool.grow, ...(statusTtlMs === undefined ? {} : { statusTtlMs }) },
  );
  return { sn, pool, store, formatted };
}

/**
 * What an earlier daemon left: a fresh fake pool and in-memory store on which
 * it ran `fn` and stopped (its remover too: nothing of it runs behind the
 * next open). `fn`'s result is handed on.
 */
export async function ranBefore<T = void>(fn: (first: OnFakePool) => Promise<T>): Promise<{ pool: FakePool; store: Store; result: T }> {
  const first = await openOnFakePool();
  const result = await fn(first);
  first.sn.remover.stop();
  return { pool: first.pool, store: first.store, result };
}

/** Snapshot `key`'s device row. */
export const deviceOf = (store: Store, key: string): DeviceRow => store.getDevice(store.getSnapshot(key)!.thinId)!;
/** The device-mapper name of snapshot `key`'s device. */
export const dmNameOf = (store: Store, key: string): string => deviceOf(store, key).dmName;

/** Prepares active snapshot `key` and holds its device open (as a mount would); returns its device-mapper name. */
export async function prepareMounted({ sn, pool, store }: Omit<OnFakePool, "formatted">, key: string): Promise<string> {
  await sn.prepare(key, "");
  const name = dmNameOf(store, key);
  pool.open(name);
  return name;
}
