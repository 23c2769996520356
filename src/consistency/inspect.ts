/**
 * The store/pool invariants, written once: inspect(store view, pool view)
 * lists every way the two disagree. Pure: the views are plain data read
 * beforehand (views.ts). `thinsnap check` reports these problems, start-up
 * reconciliation repairs them (repair.ts, one function per kind), and the
 * tests assert there are none.
 *
 * When store and pool agree:
 *  - every thin id the pool has belongs to a device row, and every ready
 *    row's id is in the pool;
 *  - no row is 'creating' (a create whose Prepare never returned) or
 *    'deleting' (a delete not finished yet);
 *  - every snapshot row has a ready device, every ready snapshot device a
 *    snapshot row; there is a ready base device;
 *  - active/view snapshots' devices are mapped (live table, not suspended),
 *    committed and base devices are not, and each row's `active` says which;
 *  - no thin device of the pool is mapped that no row knows;
 *  - the pool's transaction id is the one the store recorded.
 */
import type { MappingInfo } from "../snapshotter/pool-api.ts";
import type { DeviceRow, SnapshotRow } from "../store/store.ts";

/** What inspect needs of a snapshot row. */
export type SnapshotBrief = Pick<SnapshotRow, "name" | "kind" | "thinId">;

/** The store's rows at one instant (views.ts reads them through the Store's public methods). */
export interface StoreView {
  readonly devices: readonly DeviceRow[];
  readonly snapshots: readonly SnapshotBrief[];
  /** The reserved thin-id window (Store.reservedThinIds): ids a power cut may have made the store forget. */
  readonly window: readonly number[];
  /** pool_transaction_id as recorded; null before the store first used a pool. */
  readonly transactionId: bigint | null;
}

/** A mapping as the kernel shows it; `node` false when /dev/mapper/<name> is missing (null: not looked at). */
export interface MappingView extends MappingInfo {
  readonly node: boolean | null;
}

/** The pool at one instant. */
export interface PoolView {
  /**
   * Every thin id in the pool (thin_ls on a metadata snapshot), or null when
   * not read (start-up): then only ids of the reserved window are suspects.
   */
  readonly thinIds: ReadonlySet<number> | null;
  /** Mapped devices by dm name: the pool's thin devices, and every device a row names that is mapped. */
  readonly mappings: ReadonlyMap<string, MappingView>;
  /** The pool's transaction id (null: not compared). */
  readonly transactionId: bigint | null;
}

export type Problem =
  /** A thin id the pool has (certain) or may have (a window id, pool not listed) that no row knows. */
  | { kind: "orphan"; thinId: number; certain: boolean }
  | { kind: "interrupted-create"; device: DeviceRow; mapping: MappingView | null }
  | { kind: "interrupted-delete"; device: DeviceRow; mapping: MappingView | null }
  /** A ready row whose thin id the pool lacks: its data is lost. */
  | { kind: "missing-device"; device: DeviceRow; snapshot: SnapshotBrief | null }
  /** A ready snapshot device no snapshot row uses. */
  | { kind: "unowned-device"; device: DeviceRow; mapping: MappingView | null }
  /** A snapshot row whose device row is missing or being deleted. */
  | { kind: "snapshot-without-device"; snapshot: SnapshotBrief; device: DeviceRow | null }
  | { kind: "no-base" }
  /** A ready device mapped when it should not be, or not (properly) mapped when it should. */
  | { kind: "activation"; device: DeviceRow; snapshot: SnapshotBrief | null; want: boolean; mapping: MappingView | null }
  /** A ready device whose row's `active` disagrees with its snapshot's kind. */
  | { kind: "active-flag"; device: DeviceRow; want: boolean }
  /** A mapped thin device of the pool that no row knows. */
  | { kind: "stray-mapping"; dmName: string; mapping: MappingView }
  | { kind: "transaction-id"; store: bigint | null; pool: bigint };

export type ProblemKind = Problem["kind"];

/** Whether a ready device should be mapped: only active and view snapshots are. */
export function wantsActive(device: DeviceRow, snapshot: SnapshotBrief | null): boolean {
  return device.role === "snapshot" && snapshot !== null && snapshot.kind !== "committed";
}

/** A mapping that serves IO: a live table, not suspended, its node present. */
function serving(m: MappingView | null): boolean {
  return m !== null && m.liveTable && !m.suspended && m.node !== false;
}

export function inspect(store: StoreView, pool: PoolView): Problem[] {
  const problems: Problem[] = [];
  const byId = new Map(store.devices.map((d) => [d.thinId, d]));
  const snapByThin = new Map(store.snapshots.map((s) => [s.thinId, s]));
  const mappingOf = (d: DeviceRow): MappingView | null => pool.mappings.get(d.dmName) ?? null;

  if (pool.thinIds === null) {
    for (const id of store.window) if (!byId.has(id)) problems.push({ kind: "orphan", thinId: id, certain: false });
  } else {
    for (const id of [...pool.thinIds].sort((a, b) => a - b)) {
      if (!byId.has(id)) problems.push({ kind: "orphan", thinId: id, certain: true });
    }
  }

  for (const d of store.devices) {
    const snapshot = snapByThin.get(d.thinId) ?? null;
    if (d.state === "creating") {
      problems.push({ kind: "interrupted-create", device: d, mapping: mappingOf(d) });
      continue;
    }
    if (d.state === "deleting") {
      problems.push({ kind: "interrupted-delete", device: d, mapping: mappingOf(d) });
      continue;
    }
    if (pool.thinIds !== null && !pool.thinIds.has(d.thinId)) problems.push({ kind: "missing-device", device: d, snapshot });
    if (d.role === "foreign") continue; // never mapped, never deleted: not ours
    if (d.role === "snapshot" && snapshot === null) {
      problems.push({ kind: "unowned-device", device: d, mapping: mappingOf(d) });
      continue;
    }
    const want = wantsActive(d, snapshot);
    const mapping = mappingOf(d);
    if (want ? !serving(mapping) : mapping !== null) problems.push({ kind: "activation", device: d, snapshot, want, mapping });
    if (d.active !== want) problems.push({ kind: "active-flag", device: d, want });
  }

  for (const s of store.snapshots) {
    const d = byId.get(s.thinId) ?? null;
    // a 'creating' device is its interrupted create's problem
    if (d === null || d.state === "deleting") problems.push({ kind: "snapshot-without-device", snapshot: s, device: d });
  }
  if (!store.devices.some((d) => d.role === "base" && d.state === "ready")) problems.push({ kind: "no-base" });

  const known = new Set(store.devices.map((d) => d.dmName));
  for (const [dmName, mapping] of pool.mappings) {
    if (!known.has(dmName)) problems.push({ kind: "stray-mapping", dmName, mapping });
  }

  if (pool.transactionId !== null && store.transactionId !== pool.transactionId) {
    problems.push({ kind: "transaction-id", store: store.transactionId, pool: pool.transactionId });
  }
  return problems;
}

/** One line for an operator (check) or a test failure. */
export function describeProblem(p: Problem): string {
  const dev = (d: DeviceRow): string => `thin id ${d.thinId} (${d.dmName})`;
  const owner = (d: DeviceRow, s: SnapshotBrief | null): string => (s ? `${s.kind} snapshot "${s.name}"` : d.role);
  switch (p.kind) {
    case "orphan":
      return p.certain
        ? `orphaned thin id ${p.thinId}: in the pool, owned by no snapshot`
        : `thin id ${p.thinId} of the reserved window has no row: a create a power cut made the store forget may have left it in the pool`;
    case "interrupted-create":
      return `interrupted create: ${dev(p.device)}${p.mapping?.openCount ? " (still open)" : ""}`;
    case "interrupted-delete":
      return `interrupted delete: ${dev(p.device)}${p.mapping?.openCount ? " (still open)" : ""}`;
    case "missing-device":
      return `missing device: ${dev(p.device)} of ${owner(p.device, p.snapshot)} is not in the pool (data lost; not repairable)`;
    case "unowned-device":
      return `ready snapshot device ${dev(p.device)} has no snapshot row`;
    case "snapshot-without-device":
      return p.device
        ? `snapshot "${p.snapshot.name}" uses ${dev(p.device)}, which is being deleted (not repairable)`
        : `snapshot "${p.snapshot.name}" has no device row (thin id ${p.snapshot.thinId}; not repairable)`;
    case "no-base":
      return "no ready base device (serve makes one at start-up)";
    case "activation": {
      const m = p.mapping;
      const is = m === null ? "not mapped" : !m.liveTable ? "mapped without a table" : m.suspended ? "suspended" : m.node === false ? `mapped but /dev/mapper/${p.device.dmName} is missing` : "mapped";
      return `${p.device.dmName} is ${is} but its ${owner(p.device, p.snapshot)} wants it ${p.want ? "active" : "inactive"}`;
    }
    case "active-flag":
      return `${p.device.dmName}: the store says active=${p.device.active}, its snapshot wants ${p.want}`;
    case "stray-mapping":
      return `stray mapping ${p.dmName}: a thin device of the pool no row owns`;
    case "transaction-id":
      return `pool transaction id ${p.pool} != the store's pool_transaction_id ${p.store ?? "(none)"}`;
  }
}
