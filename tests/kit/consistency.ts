/**
 * The store compared with the pool itself, for the reliability tests
 * (tests/dm/{crash,space,hostile,load}.test.ts, tests/power): the store read
 * through its own queries, thin ids from thin_ls, mappings from the kernel,
 * judged by the same invariants as `thinsnap check` (src/consistency/inspect.ts).
 */
import { existsSync } from "node:fs";
import { describeProblem, inspect, type StoreView } from "../../src/consistency/inspect.ts";
import { readPoolView, readStoreView } from "../../src/consistency/views.ts";
import { poolThinIds, thinDevicesOfPool } from "../../src/dm/pool-contents.ts";
import type { DeviceMapper } from "../../src/dm/device-mapper.ts";
import { ThinPool } from "../../src/dm/thin-pool.ts";
import { Store } from "../../src/store/store.ts";

// ------------------------------------------------------------ consistency check

/** The daemon's store rows (its own queries; WAL: safe while it runs). */
export function readStore(rootPath: string): StoreView {
  const store = Store.open(`${rootPath}/metadata.db`);
  try {
    return readStoreView(store);
  } finally {
    store.close();
  }
}

export interface ConsistencyReport {
  /** inspect()'s problems, described (src/consistency/inspect.ts lists the invariants). */
  problems: string[];
  store: StoreView;
  poolIds: number[];
  activeMappings: string[];
}

/**
 * Compares the store with the pool itself, the way `thinsnap check` does:
 * thin ids from thin_ls on a metadata snapshot, mappings (and their
 * /dev/mapper nodes) from the kernel, the transaction id from the pool's
 * status. Meant for an idle daemon (or none). allowDeleting: devices the
 * async remover has not deleted yet are no problem.
 */
export function checkConsistency(
  dm: DeviceMapper,
  poolName: string,
  rootPath: string,
  opts: { allowDeleting?: boolean } = {},
): ConsistencyReport {
  const pool = new ThinPool(dm, poolName);
  const store = readStore(rootPath);
  const ids = poolThinIds(pool);
  if (ids === null) throw new Error("thin_ls is not installed (thin-provisioning-tools)");
  const mappings = thinDevicesOfPool(dm, poolName);
  const view = readPoolView(pool, store.devices, {
    mapped: mappings,
    thinIds: ids,
    nodeExists: (n) => existsSync(`/dev/mapper/${n}`),
  });
  const problems = inspect(store, view)
    .filter((p) => !(opts.allowDeleting && p.kind === "interrupted-delete"))
    .map(describeProblem);
  return { problems, store, poolIds: ids, activeMappings: mappings };
}

/** Polls until no device row is 'deleting' (the async remover caught up), or the budget runs out. */
export async function waitNoDeleting(rootPath: string, budgetMs = 20_000): Promise<boolean> {
  const t0 = performance.now();
  while (performance.now() - t0 < budgetMs) {
    if (!readStore(rootPath).devices.some((d) => d.state === "deleting")) return true;
    await Bun.sleep(100);
  }
  return false;
}
