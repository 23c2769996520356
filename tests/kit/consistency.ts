/**
 * The store compared with the pool itself, for the reliability tests
 * (tests/dm/{crash,space,hostile,load}.test.ts, tests/power): rows read
 * read-only from the daemon's database, thin ids from thin_ls, mappings from
 * the kernel. (Moved unchanged from tests/lib/daemon-for-reliability.ts.)
 */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { poolThinIds } from "../../src/cli/check.ts";
import { thinDevicesOfPool } from "../../src/pool/thin-devices.ts";
import type { DeviceMapper } from "../../src/dm/device-mapper.ts";
import { ThinPool } from "../../src/dm/thin-pool.ts";

// ------------------------------------------------------------ consistency check

export interface StoreDevice {
  thin_id: number;
  dm_name: string;
  role: string;
  state: string;
  active: number;
}

export interface StoreSnapshot {
  id: number;
  name: string;
  parent: string;
  kind: string;
  thin_id: number;
}

export interface StoreView {
  devices: StoreDevice[];
  snapshots: StoreSnapshot[];
  labels: Map<string, Record<string, string>>;
  meta: Map<string, string>;
}

/** Reads the daemon's database read-only (WAL: safe while it runs). */
export function readStore(rootPath: string): StoreView {
  const db = new Database(`${rootPath}/metadata.db`, { readonly: true });
  try {
    const devices = db.query<StoreDevice, []>("SELECT thin_id, dm_name, role, state, active FROM devices ORDER BY thin_id").all();
    const snapshots = db
      .query<StoreSnapshot, []>(
        `SELECT s.id, s.name, COALESCE(p.name, '') AS parent, s.kind, s.thin_id
         FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY s.id`,
      )
      .all();
    const labels = new Map<string, Record<string, string>>();
    const byId = new Map(snapshots.map((s) => [s.id, s.name]));
    for (const l of db.query<{ snapshot_id: number; key: string; value: string }, []>("SELECT snapshot_id, key, value FROM labels").all()) {
      const n = byId.get(l.snapshot_id);
      if (n === undefined) continue;
      const m = labels.get(n) ?? {};
      m[l.key] = l.value;
      labels.set(n, m);
    }
    const meta = new Map(db.query<{ key: string; value: string }, []>("SELECT key, value FROM meta").all().map((r) => [r.key, r.value]));
    return { devices, snapshots, labels, meta };
  } finally {
    db.close();
  }
}

export interface ConsistencyReport {
  problems: string[];
  store: StoreView;
  poolIds: number[];
  activeMappings: string[];
}

/**
 * Compares the store with the pool itself, the way an operator would:
 * thin ids from thin_ls on a metadata snapshot, mappings from the kernel,
 * the transaction id from the pool's status. Meant for an idle daemon (or
 * none). An empty `problems` list means:
 *  - every thin id in the pool belongs to a device row, and every ready row's id is in the pool;
 *  - no row is left 'creating' (or 'deleting', unless allowDeleting);
 *  - every snapshot row has a ready device row, every ready snapshot device a snapshot row;
 *  - active/view devices are mapped in /dev/mapper, committed and base devices are not;
 *  - no thin device of the pool is mapped that no active/view snapshot owns;
 *  - the pool's transaction id equals the store's pool_transaction_id.
 */
export function checkConsistency(
  dm: DeviceMapper,
  poolName: string,
  rootPath: string,
  opts: { allowDeleting?: boolean } = {},
): ConsistencyReport {
  const problems: string[] = [];
  const pool = new ThinPool(dm, poolName);
  const store = readStore(rootPath);
  const ids = poolThinIds(pool);
  if (ids === null) throw new Error("thin_ls is not installed (thin-provisioning-tools)");
  const inPool = new Set(ids);
  const byId = new Map(store.devices.map((d) => [d.thin_id, d]));
  const snapByThin = new Map(store.snapshots.map((s) => [s.thin_id, s]));

  for (const id of ids) if (!byId.has(id)) problems.push(`orphaned thin id ${id}: in the pool, no device row`);
  for (const d of store.devices) {
    if (d.state === "creating") problems.push(`device ${d.thin_id} (${d.dm_name}) still 'creating'`);
    if (d.state === "deleting" && !opts.allowDeleting) problems.push(`device ${d.thin_id} (${d.dm_name}) still 'deleting'`);
    if (d.state === "ready" && !inPool.has(d.thin_id)) problems.push(`device ${d.thin_id} (${d.dm_name}) is ready in the store but not in the pool`);
    if (d.state === "ready" && d.role === "snapshot" && !snapByThin.has(d.thin_id)) {
      problems.push(`ready snapshot device ${d.thin_id} (${d.dm_name}) has no snapshot row`);
    }
  }
  for (const s of store.snapshots) {
    const d = byId.get(s.thin_id);
    if (!d) problems.push(`snapshot "${s.name}" has no device row (thin id ${s.thin_id})`);
    else if (d.state !== "ready") problems.push(`snapshot "${s.name}" has a ${d.state} device (${d.thin_id})`);
  }
  const readyBases = store.devices.filter((d) => d.role === "base" && d.state === "ready");
  if (readyBases.length === 0) problems.push("no ready base device");

  const wantActive = new Set<string>();
  for (const d of store.devices) {
    if (d.state !== "ready") continue;
    const s = snapByThin.get(d.thin_id);
    const want = d.role === "snapshot" && s !== undefined && s.kind !== "committed";
    if (want) wantActive.add(d.dm_name);
    const is = dm.info(d.dm_name) !== null;
    if (want && !existsSync(`/dev/mapper/${d.dm_name}`)) problems.push(`${s?.kind} snapshot "${s?.name}": /dev/mapper/${d.dm_name} missing`);
    if (!want && is) problems.push(`${s ? `${s.kind} snapshot "${s.name}"` : d.role} device ${d.dm_name} is active`);
    if ((d.active === 1) !== want) problems.push(`device ${d.dm_name}: store says active=${d.active}, should be ${want ? 1 : 0}`);
  }
  const mappings = thinDevicesOfPool(dm, poolName);
  for (const n of mappings) {
    if (!wantActive.has(n) && !store.devices.some((d) => d.dm_name === n && d.state === "deleting")) {
      problems.push(`stray mapping ${n}: no active/view snapshot owns it`);
    }
  }
  const txn = pool.status().transactionId;
  const rec = store.meta.get("pool_transaction_id");
  if (rec === undefined || BigInt(rec) !== txn) problems.push(`pool transaction id ${txn} != store's pool_transaction_id ${rec}`);
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
