/**
 * SQLite store (bun:sqlite, WAL): one database for snapshots and devices.
 * Every operation step is one short IMMEDIATE transaction; statements are
 * prepared once (db.query caches them).
 */
import { Database } from "bun:sqlite";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { Filter } from "../filters/parser.ts";
import type { Kind, Labels } from "../model.ts";
import { toSql } from "./filter-sql.ts";
import { MIGRATIONS, SCHEMA, SCHEMA_VERSION } from "./schema.ts";
import { MAX_THIN_ID } from "../dm/status.ts";

/** Thin ids reserved per durable commit: at most this many delete probes at start-up. */
export const THIN_ID_WINDOW = 32;

export type DeviceState = "creating" | "ready" | "deleting";
export type DeviceRole = "base" | "snapshot" | "foreign";

export interface DeviceRow {
  thinId: number;
  dmName: string;
  role: DeviceRole;
  state: DeviceState;
  originId: number | null;
  sizeBytes: bigint;
  fsType: string;
  active: boolean;
  discard: boolean;
  /** The filesystem's size when thinsnap grew it (here or in an ancestor); null: the base's, as made. */
  fsBytes: bigint | null;
}

export interface SnapshotRow {
  id: number;
  name: string;
  parentId: number | null;
  parentName: string;
  kind: Kind;
  createdMs: number;
  updatedMs: number;
  thinId: number;
  mappedBytes: bigint | null;
}

interface RawDevice {
  thin_id: number;
  dm_name: string;
  role: DeviceRole;
  state: DeviceState;
  origin_id: number | null;
  size_bytes: number | bigint;
  fs_type: string;
  active: number;
  discard: number;
  fs_bytes: number | bigint | null;
}

interface RawSnapshot {
  id: number;
  name: string;
  parent_id: number | null;
  parent_name: string;
  kind: Kind;
  created_ms: number;
  updated_ms: number;
  thin_id: number;
  mapped_bytes: number | bigint | null;
}

const SNAPSHOT_COLUMNS = `s.id, s.name, s.parent_id, COALESCE(p.name, '') AS parent_name, s.kind,
  s.created_ms, s.updated_ms, s.thin_id, s.mapped_bytes`;
const SNAPSHOT_FROM = `snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

function toDevice(r: RawDevice): DeviceRow {
  return {
    thinId: r.thin_id,
    dmName: r.dm_name,
    role: r.role,
    state: r.state,
    originId: r.origin_id,
    sizeBytes: BigInt(r.size_bytes),
    fsType: r.fs_type,
    active: r.active !== 0,
    discard: r.discard !== 0,
    fsBytes: r.fs_bytes === null ? null : BigInt(r.fs_bytes),
  };
}

function toSnapshot(r: RawSnapshot): SnapshotRow {
  return {
    id: r.id,
    name: r.name,
    parentId: r.parent_id,
    parentName: r.parent_name,
    kind: r.kind,
    createdMs: r.created_ms,
    updatedMs: r.updated_ms,
    thinId: r.thin_id,
    mappedBytes: r.mapped_bytes === null ? null : BigInt(r.mapped_bytes),
  };
}


export class Store {
  private readonly db: Database;

  private constructor(db: Database) {
    this.db = db;
  }

  /** Opens (creating if needed) the database; directory 0700, file 0600. */
  static open(path: string): Store {
    if (path !== ":memory:") {
      const dir = dirname(path);
      if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
    const db = new Database(path, { create: true, strict: true });
    if (path !== ":memory:") chmodSync(path, 0o600);
    return Store.wrap(db, path);
  }

  /** A store over an already open database (tests restore crash images this way). */
  static wrap(db: Database, path = ":memory:"): Store {
    db.exec("PRAGMA journal_mode = WAL");
    // FULL: an intent row must be on disk before the kernel step it describes,
    // or a power loss could leave a pool change the store never heard of.
    db.exec("PRAGMA synchronous = FULL");
    db.exec("PRAGMA foreign_keys = ON");
    db.exec("PRAGMA busy_timeout = 5000");
    const store = new Store(db);
    const hasMeta = db.query("SELECT 1 FROM sqlite_master WHERE name = 'meta'").get() !== null;
    const v = hasMeta ? store.getMeta("schema_version") : null;
    if (v !== null && Number(v) > SCHEMA_VERSION) {
      throw new Error(`database ${path} has schema version ${v}, this thinsnap knows ${SCHEMA_VERSION} (a newer thinsnap wrote it)`);
    }
    // An older database: its tables exist, so SCHEMA (IF NOT EXISTS) would
    // not add new columns; migrate it step by step, in one transaction.
    if (v !== null && Number(v) < SCHEMA_VERSION) {
      store.tx(() => {
        for (let n = Number(v) + 1; n <= SCHEMA_VERSION; n++) db.exec(MIGRATIONS[n]!);
        store.setMeta("schema_version", String(SCHEMA_VERSION));
      });
    }
    db.exec(SCHEMA);
    if (v === null) store.setMeta("schema_version", String(SCHEMA_VERSION));
    return store;
  }

  close(): void {
    this.db.close();
  }

  /** The whole database as bytes (tests take crash images with it; Store.wrap(Database.deserialize(...)) reopens one). */
  serialize(): Uint8Array {
    return this.db.serialize();
  }

  /** Runs fn in one IMMEDIATE transaction (rolled back if fn throws). */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /**
   * A transaction whose commit is not fsynced (synchronous=NORMAL for it):
   * it survives a killed process (the WAL is in the page cache) but may be
   * lost on power loss. Only for "result" records whose loss start-up
   * reconciliation turns into a clean roll-back or an idempotent redo.
   */
  txRelaxed<T>(fn: () => T): T {
    this.db.exec("PRAGMA synchronous = NORMAL");
    try {
      return this.tx(fn);
    } finally {
      this.db.exec("PRAGMA synchronous = FULL");
    }
  }

  getMeta(key: string): string | null {
    const r = this.db.query<{ value: string }, [string]>("SELECT value FROM meta WHERE key = ?").get(key);
    return r ? r.value : null;
  }

  setMeta(key: string, value: string): void {
    this.db
      .query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
      .run(key, value);
  }

  // ---------------------------------------------------------------- devices

  /**
   * Next free 24-bit thin id, round-robin from the last one handed out so an
   * id is not reused soon after its delete (ids still in the table — even
   * 'deleting' ones — are never handed out). Does not change anything.
   */
  peekThinId(): number {
    const last = Number(this.getMeta("last_thin_id") ?? "0");
    const used = this.db.query<{ x: number }, [number]>("SELECT 1 AS x FROM devices WHERE thin_id = ?");
    let id = last;
    for (let i = 0; i < MAX_THIN_ID; i++) {
      id = id >= MAX_THIN_ID ? 1 : id + 1;
      if (!used.get(id)) return id;
    }
    throw new Error("all 16777215 thin device ids are in use");
  }

  /**
   * The id the next create gets (peekThinId) and whether it lies inside the
   * durably recorded window: if so, the transaction that takes it (a create's
   * intent row) may skip its fsync. If a power cut then loses that row while
   * the pool kept the device, start-up finds the id in the window without a
   * row and deletes it (reconcile), so the pool never keeps a thin id the
   * store does not know. Changes nothing.
   */
  nextThinId(): { id: number; reserved: boolean } {
    const id = this.peekThinId();
    return { id, reserved: this.inReservedWindow(id) };
  }

  /**
   * Hands out `next` (from nextThinId, nothing changed in between). An id
   * outside the window opens a new window of THIN_ID_WINDOW ids starting at
   * it, recorded in the same transaction, which must then be a durable one.
   */
  takeThinId(next: { id: number; reserved: boolean }): number {
    this.setMeta("last_thin_id", String(next.id));
    if (!next.reserved) this.setMeta("thin_id_window", `${next.id}+${THIN_ID_WINDOW}`);
    return next.id;
  }

  /** nextThinId + takeThinId, for creates whose transaction is durable anyway. */
  allocateThinId(): number {
    return this.takeThinId(this.nextThinId());
  }

  /** The ids of the current window, in allocation order. */
  reservedThinIds(): number[] {
    const w = this.getMeta("thin_id_window");
    const m = w === null ? null : /^(\d+)\+(\d+)$/.exec(w);
    if (!m) return [];
    const first = Number(m[1]);
    const out: number[] = [];
    for (let i = 0; i < Number(m[2]); i++) out.push(((first - 1 + i) % MAX_THIN_ID) + 1);
    return out;
  }

  /** Forgets the window (start-up, once its ids are accounted for): the next create opens a new one. */
  clearThinIdWindow(): void {
    this.db.query("DELETE FROM meta WHERE key = 'thin_id_window'").run();
  }

  private inReservedWindow(id: number): boolean {
    const w = this.getMeta("thin_id_window");
    const m = w === null ? null : /^(\d+)\+(\d+)$/.exec(w);
    if (!m) return false;
    const offset = (id - Number(m[1]) + MAX_THIN_ID) % MAX_THIN_ID;
    return offset < Number(m[2]);
  }

  insertDevice(d: DeviceRow): void {
    this.db
      .query(
        `INSERT INTO devices (thin_id, dm_name, role, state, origin_id, size_bytes, fs_type, active, discard, fs_bytes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(d.thinId, d.dmName, d.role, d.state, d.originId, d.sizeBytes, d.fsType, d.active ? 1 : 0, d.discard ? 1 : 0, d.fsBytes);
  }

  getDevice(thinId: number): DeviceRow | null {
    const r = this.db.query<RawDevice, [number]>("SELECT * FROM devices WHERE thin_id = ?").get(thinId);
    return r ? toDevice(r) : null;
  }

  baseDevice(): DeviceRow | null {
    const r = this.db
      .query<RawDevice, []>("SELECT * FROM devices WHERE role = 'base' AND state != 'deleting' ORDER BY thin_id DESC LIMIT 1")
      .get();
    return r ? toDevice(r) : null;
  }

  setDeviceState(thinId: number, state: DeviceState): void {
    this.db.query("UPDATE devices SET state = ? WHERE thin_id = ?").run(state, thinId);
  }

  /** A grown device is ready: its filesystem's size is recorded with its state, in one statement. */
  setDeviceReady(thinId: number, fsBytes: bigint | null): void {
    this.db.query("UPDATE devices SET state = 'ready', fs_bytes = ? WHERE thin_id = ?").run(fsBytes, thinId);
  }

  setDeviceActive(thinId: number, active: boolean): void {
    this.db.query("UPDATE devices SET active = ? WHERE thin_id = ?").run(active ? 1 : 0, thinId);
  }

  markDeviceDeleting(thinId: number, discard: boolean): void {
    this.db.query("UPDATE devices SET state = 'deleting', discard = ? WHERE thin_id = ?").run(discard ? 1 : 0, thinId);
  }

  deleteDevice(thinId: number): void {
    this.db.query("DELETE FROM devices WHERE thin_id = ?").run(thinId);
  }

  devicesInState(state: DeviceState): DeviceRow[] {
    return this.db.query<RawDevice, [string]>("SELECT * FROM devices WHERE state = ? ORDER BY thin_id").all(state).map(toDevice);
  }

  allDevices(): DeviceRow[] {
    return this.db.query<RawDevice, []>("SELECT * FROM devices ORDER BY thin_id").all().map(toDevice);
  }

  // -------------------------------------------------------------- snapshots

  getSnapshot(name: string): SnapshotRow | null {
    const r = this.db
      .query<RawSnapshot, [string]>(`SELECT ${SNAPSHOT_COLUMNS} FROM ${SNAPSHOT_FROM} WHERE s.name = ?`)
      .get(name);
    return r ? toSnapshot(r) : null;
  }

  getSnapshotById(id: number): SnapshotRow | null {
    const r = this.db
      .query<RawSnapshot, [number]>(`SELECT ${SNAPSHOT_COLUMNS} FROM ${SNAPSHOT_FROM} WHERE s.id = ?`)
      .get(id);
    return r ? toSnapshot(r) : null;
  }

  snapshotByThinId(thinId: number): SnapshotRow | null {
    const r = this.db
      .query<RawSnapshot, [number]>(`SELECT ${SNAPSHOT_COLUMNS} FROM ${SNAPSHOT_FROM} WHERE s.thin_id = ?`)
      .get(thinId);
    return r ? toSnapshot(r) : null;
  }

  hasChildren(id: number): boolean {
    return this.db.query<{ x: number }, [number]>("SELECT 1 AS x FROM snapshots WHERE parent_id = ? LIMIT 1").get(id) !== null;
  }

  insertSnapshot(s: Omit<SnapshotRow, "id" | "parentName">, labels: Labels): number {
    const r = this.db
      .query<{ id: number }, [string, number | null, string, number, number, number, bigint | null]>(
        `INSERT INTO snapshots (name, parent_id, kind, created_ms, updated_ms, thin_id, mapped_bytes)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`,
      )
      .get(s.name, s.parentId, s.kind, s.createdMs, s.updatedMs, s.thinId, s.mappedBytes);
    const id = r!.id;
    this.replaceLabels(id, labels);
    return id;
  }

  /** Turns an active snapshot into a committed one under a new name, in place. */
  commitSnapshot(id: number, name: string, labels: Labels, nowMs: number, mappedBytes: bigint): void {
    this.db
      .query(
        `UPDATE snapshots SET name = ?, kind = 'committed', created_ms = ?, updated_ms = ?, mapped_bytes = ? WHERE id = ?`,
      )
      .run(name, nowMs, nowMs, mappedBytes, id);
    this.replaceLabels(id, labels);
  }

  deleteSnapshot(id: number): void {
    this.db.query("DELETE FROM snapshots WHERE id = ?").run(id);
  }

  touch(id: number, nowMs: number): void {
    this.db.query("UPDATE snapshots SET updated_ms = ? WHERE id = ?").run(nowMs, id);
  }

  labels(id: number): Labels {
    const out = noProto();
    for (const r of this.db
      .query<{ key: string; value: string }, [number]>("SELECT key, value FROM labels WHERE snapshot_id = ?")
      .all(id)) {
      out[r.key] = r.value;
    }
    return out;
  }

  replaceLabels(id: number, labels: Labels): void {
    this.db.query("DELETE FROM labels WHERE snapshot_id = ?").run(id);
    const ins = this.db.query("INSERT INTO labels (snapshot_id, key, value) VALUES (?, ?, ?)");
    for (const [k, v] of Object.entries(labels)) {
      if (v !== "") ins.run(id, k, v); // empty values are never stored
    }
  }

  /**
   * The snapshots that may match `filter`, with their labels, in two queries
   * whatever the count. exact=false: a superset (regexps are not evaluated in
   * SQL), each row must be re-checked with the filter's matcher.
   *
   * Never a half-made snapshot: rows whose device is still 'creating' (a
   * Prepare/View in its kernel calls, or one that will be rolled back) are
   * left out, so a snapshot is listed once its device is ready.
   */
  select(filter: Filter): { rows: { row: SnapshotRow; labels: Labels }[]; exact: boolean } {
    const { where, params, exact } = toSql(filter);
    const made = `${where} AND s.thin_id NOT IN (SELECT thin_id FROM devices WHERE state = 'creating')`;
    const rows = this.db
      .query<RawSnapshot, string[]>(`SELECT ${SNAPSHOT_COLUMNS} FROM ${SNAPSHOT_FROM} WHERE ${made} ORDER BY s.id`)
      .all(...params);
    const byId = new Map<number, { row: SnapshotRow; labels: Labels }>();
    for (const r of rows) byId.set(r.id, { row: toSnapshot(r), labels: noProto() });
    if (byId.size === 0) return { rows: [], exact };
    const lrows = this.db
      .query<{ snapshot_id: number; key: string; value: string }, string[]>(
        `SELECT l.snapshot_id, l.key, l.value FROM labels l
         JOIN snapshots s ON s.id = l.snapshot_id LEFT JOIN snapshots p ON p.id = s.parent_id WHERE ${made}`,
      )
      .all(...params);
    for (const l of lrows) {
      const e = byId.get(l.snapshot_id);
      if (e) e.labels[l.key] = l.value;
    }
    return { rows: [...byId.values()], exact };
  }

  /** Every snapshot row, in id order (consistency checks: src/consistency/inspect.ts). */
  allSnapshots(): SnapshotRow[] {
    return this.db.query<RawSnapshot, []>(`SELECT ${SNAPSHOT_COLUMNS} FROM ${SNAPSHOT_FROM} ORDER BY s.id`).all().map(toSnapshot);
  }

  countSnapshots(): number {
    return this.db.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM snapshots").get()?.n ?? 0;
  }

  // ------------------------------------------------ issue 14: `thinsnap ls`

  /**
   * Every snapshot with its device and its parent's mapped bytes, in id
   * order, for `thinsnap ls`; `kind` and a name prefix narrow it. Read-only.
   */
  inventory(filter: { kind?: Kind; prefix?: string } = {}): InventoryRow[] {
    const kind = filter.kind ?? null;
    const prefix = filter.prefix ?? null;
    const rows = this.db
      .query<RawSnapshot & RawInventory, [string | null, string | null, string | null, string | null, string | null]>(
        `SELECT ${SNAPSHOT_COLUMNS}, p.mapped_bytes AS parent_mapped_bytes,
                d.dm_name, d.size_bytes, d.state AS device_state
         FROM ${SNAPSHOT_FROM} LEFT JOIN devices d ON d.thin_id = s.thin_id
         WHERE (? IS NULL OR s.kind = ?) AND (? IS NULL OR substr(s.name, 1, length(?)) = ?)
         ORDER BY s.id`,
      )
      .all(kind, kind, prefix, prefix, prefix);
    return rows.map((r) => ({
      ...toSnapshot(r),
      parentMappedBytes: r.parent_mapped_bytes === null ? null : BigInt(r.parent_mapped_bytes),
      dmName: r.dm_name,
      sizeBytes: r.size_bytes === null ? null : BigInt(r.size_bytes),
      deviceState: r.device_state,
    }));
  }

  /**
   * Snapshots by kind and devices by state (the metrics gauges at each
   * scrape, pool status): one pass over each table, no sort (a GROUP BY
   * costs several times more at 10,000 rows).
   */
  counts(): { snapshots: Record<Kind, number>; devices: Record<DeviceState, number> } {
    const sn = this.db
      .query<Record<Kind, number | null>, []>(
        `SELECT SUM(kind = 'active') AS active, SUM(kind = 'view') AS view, SUM(kind = 'committed') AS committed FROM snapshots`,
      )
      .get();
    const dv = this.db
      .query<Record<DeviceState, number | null>, []>(
        `SELECT SUM(state = 'creating') AS creating, SUM(state = 'ready') AS ready, SUM(state = 'deleting') AS deleting FROM devices`,
      )
      .get();
    return {
      snapshots: { active: sn?.active ?? 0, view: sn?.view ?? 0, committed: sn?.committed ?? 0 },
      devices: { creating: dv?.creating ?? 0, ready: dv?.ready ?? 0, deleting: dv?.deleting ?? 0 },
    };
  }
}

/** A snapshot as `thinsnap ls` shows it (Store.inventory). */
export interface InventoryRow extends SnapshotRow {
  /** The parent's mapped bytes at its Commit; null when parentless. */
  parentMappedBytes: bigint | null;
  /** null: no device record (a store inconsistency `thinsnap check` reports). */
  dmName: string | null;
  sizeBytes: bigint | null;
  deviceState: DeviceState | null;
}

interface RawInventory {
  parent_mapped_bytes: number | bigint | null;
  dm_name: string | null;
  size_bytes: number | bigint | null;
  device_state: DeviceState | null;
}

/** A label map with no prototype: a `__proto__` label is stored, not dropped. */
function noProto(): Labels {
  return Object.create(null) as Labels;
}
