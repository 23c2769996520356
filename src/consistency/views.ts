/**
 * Reads the two sides inspect() compares: the store's rows through its
 * public methods, the pool's mappings and transaction id through PoolApi.
 * Which names and thin ids the pool has is the caller's to find out
 * (start-up: dm names; check and tests: the pool's thin devices and thin_ls).
 */
import type { PoolApi } from "../snapshotter/pool-api.ts";
import type { DeviceRow, SnapshotRow } from "../store/store.ts";
import type { MappingView, PoolView, StoreView } from "./inspect.ts";

/** The store queries a view needs (Store has them). */
export interface StoreReader {
  allDevices(): DeviceRow[];
  allSnapshots(): SnapshotRow[];
  reservedThinIds(): number[];
  getMeta(key: string): string | null;
}

export function readStoreView(store: StoreReader): StoreView {
  const txn = store.getMeta("pool_transaction_id");
  return {
    devices: store.allDevices(),
    snapshots: store.allSnapshots(),
    window: store.reservedThinIds(),
    transactionId: txn === null ? null : BigInt(txn),
  };
}

export interface PoolSight {
  /** dm names seen mapped on the pool (beside the rows' own names, which are always looked up). */
  mapped: Iterable<string>;
  /** The pool's thin ids (thin_ls), or null when not read. */
  thinIds: readonly number[] | null;
  /** Whether /dev/mapper/<name> exists (not looked at when absent). */
  nodeExists?: (dmName: string) => boolean;
  /** A mapping that cannot be read is left out of the view (its repair then fails on its own); told here. Default: throw. */
  onError?: (dmName: string, e: unknown) => void;
}

/** The mappings of `devices` and of `sight.mapped`, with the pool's transaction id. */
export function readPoolView(pool: PoolApi, devices: readonly DeviceRow[], sight: PoolSight): PoolView {
  const mappings = new Map<string, MappingView>();
  const names = new Set<string>(sight.mapped);
  for (const d of devices) if (d.role !== "foreign") names.add(d.dmName);
  for (const name of names) {
    let info;
    try {
      info = pool.info(name);
    } catch (e) {
      if (!sight.onError) throw e;
      sight.onError(name, e);
      continue;
    }
    if (info) mappings.set(name, { ...info, node: sight.nodeExists ? sight.nodeExists(name) : null });
  }
  return {
    thinIds: sight.thinIds === null ? null : new Set(sight.thinIds),
    mappings,
    transactionId: pool.status().transactionId,
  };
}
