/**
 * Start-up reconciliation: makes the pool agree with the store after a crash.
 * The problems are those of src/consistency/inspect.ts; each kind has one
 * small repair here, and every repair is per device: one that fails is
 * logged, counted, and (if it is a device to get rid of) queued for the
 * background remover, and start-up goes on.
 *
 * Every kernel change is preceded by an intent row, so:
 *  - ids of the reserved window without a row are deleted from the pool
 *    (a create's intent row a power cut lost, see Store.nextThinId);
 *  - 'creating' devices are rolled back (their Prepare never returned):
 *    deactivate, delete the thin id (ENODATA = it never landed), drop rows;
 *  - 'deleting' devices are finished (their Remove already returned);
 *  - active/view snapshots get their /dev/mapper device back, committed and
 *    base devices are taken out of it;
 *  - dm devices named like ours that no row knows are removed (they can only
 *    be left-overs of a rolled-back create).
 * The pool's transaction id is bound to the store first (see bindTransactionId).
 *
 * Every repair made is one info line saying what was done and to which
 * device (and snapshot): an operator reads what a crash left behind without
 * debug logging. Only a repair that fails is an error.
 */
import { describeProblem, inspect, type Problem, type ProblemKind } from "../consistency/inspect.ts";
import { readPoolView, readStoreView } from "../consistency/views.ts";
import { Errno, isErrno } from "../dm/errors.ts";
import type { Logger } from "../log.ts";
import type { DeviceRow, Store } from "../store/store.ts";
import type { PoolApi } from "./pool-api.ts";
import { unmountInterruptedGrows } from "./grow-repair.ts";

export interface ReconcileReport {
  rolledBack: number;
  orphansDeleted: number;
  deleted: number;
  reactivated: number;
  resumed: number;
  deactivated: number;
  strayMappings: number;
  /** Devices left alone because something holds them open (the remover retries). */
  busy: number;
  /** Repairs that failed (logged; see the log line for the device). */
  failed: number;
  /** Devices handed to the background remover: unowned, or an interrupted create held open or not undone. */
  queued: number;
}

/** The device and snapshot a repair line names (undefined fields are left out). */
function who(dev: DeviceRow, snapshot?: string | null): { device: string; thin_id: number; snapshot: string | undefined } {
  return { device: dev.dmName, thin_id: dev.thinId, snapshot: snapshot ?? undefined };
}

interface Ctx {
  store: Store;
  pool: PoolApi;
  log: Logger;
  report: ReconcileReport;
}

export interface ReconcileOptions {
  /** Names of all dm devices: those named like ours that no row knows are removed. */
  listDmDevices?: () => string[];
  /** The pool's thin ids (thin_ls), when known: then every orphan is deleted, not only the window's. */
  thinIds?: readonly number[] | null;
  /** root_path: mounts of interrupted grows under it are unmounted first (they hold their devices open). */
  rootPath?: string;
}

export function reconcile(
  store: Store,
  pool: PoolApi,
  poolName: string,
  log: Logger,
  o: ReconcileOptions = {},
): ReconcileReport {
  const report: ReconcileReport = {
    rolledBack: 0,
    orphansDeleted: 0,
    deleted: 0,
    reactivated: 0,
    resumed: 0,
    deactivated: 0,
    strayMappings: 0,
    busy: 0,
    failed: 0,
    queued: 0,
  };
  bindTransactionId(store, pool, log);
  if (o.rootPath !== undefined) unmountInterruptedGrows(o.rootPath, poolName, log);

  const ours = new RegExp(`^${escapeRegExp(poolName)}-(snap|base)-\\d+$`);
  const sv = readStoreView(store);
  const pv = readPoolView(pool, sv.devices, {
    mapped: (o.listDmDevices?.() ?? []).filter((n) => ours.test(n)),
    thinIds: o.thinIds ?? null,
    onError: (device, e) => {
      // one unreadable device must not keep the daemon down: it is left as it is, and counted
      report.failed++;
      log.error("reconcile: cannot read a device's mapping", { device, error: String(e) });
    },
  });
  const ctx: Ctx = { store, pool, log, report };
  let orphansLeft = 0;
  const problems = inspect(sv, pv).sort((a, b) => REPAIR_ORDER[a.kind] - REPAIR_ORDER[b.kind]);
  for (const p of problems) {
    try {
      REPAIRS[p.kind](p as never, ctx);
    } catch (e) {
      // One device must not keep the daemon (and every other snapshot) down.
      report.failed++;
      if (p.kind === "orphan") orphansLeft++;
      log.error("reconcile: could not repair", { problem: describeProblem(p), error: String(e), next: NEXT[p.kind] });
      if (p.kind === "interrupted-create") queueForRemover(ctx, p.device, "could not be rolled back");
    }
  }
  // The window's ids are accounted for: forget it (the next create opens a
  // new one). If one could not be deleted, keep it: the next start probes again.
  if (sv.window.length && orphansLeft === 0) store.tx(() => store.clearThinIdWindow());

  if (Object.values(report).some((n) => n > 0)) log.info("reconcile: done", { ...report });
  return report;
}

/** Stray mappings go first: the thin id under one may be an orphan, and a mapped id cannot be deleted. */
const REPAIR_ORDER: Record<ProblemKind, number> = {
  "transaction-id": 0,
  "stray-mapping": 1,
  orphan: 2,
  "interrupted-create": 3,
  "interrupted-delete": 4,
  "unowned-device": 5,
  activation: 6,
  "active-flag": 7,
  "missing-device": 8,
  "snapshot-without-device": 9,
  "no-base": 10,
};

/** What happens to a problem whose repair failed. */
const NEXT: Record<ProblemKind, string> = {
  orphan: "retried at the next start",
  "interrupted-create": "queued for the background remover",
  "interrupted-delete": "left for the background remover",
  "missing-device": "not repairable",
  "unowned-device": "retried at the next start",
  "snapshot-without-device": "not repairable",
  "no-base": "made at start-up",
  activation: "retried at the next start",
  "active-flag": "retried at the next start",
  "stray-mapping": "retried at the next start",
  "transaction-id": "refused at start-up",
};

type Repair<K extends ProblemKind> = (p: Extract<Problem, { kind: K }>, ctx: Ctx) => void;

const REPAIRS: { [K in ProblemKind]: Repair<K> } = {
  orphan: deleteOrphan,
  "interrupted-create": rollBackCreate,
  "interrupted-delete": finishDelete,
  "missing-device": unrepairable,
  "unowned-device": queueUnowned,
  "snapshot-without-device": unrepairable,
  // ensureBase makes one right after reconciling
  "no-base": () => {},
  activation: fixActivation,
  "active-flag": fixActiveFlag,
  "stray-mapping": removeStray,
  // bindTransactionId already ran (and refuses a pool that is not this store's)
  "transaction-id": () => {},
};

/** Delete of a thin id whose absence is fine (ENODATA: never landed, or already gone). */
function deleteThin(pool: PoolApi, id: number): boolean {
  try {
    pool.deleteThin(id);
    return true;
  } catch (e) {
    if (isErrno(e, Errno.ENODATA)) return false;
    throw e;
  }
}

function deleteOrphan(p: Extract<Problem, { kind: "orphan" }>, { pool, log, report }: Ctx): void {
  // A window id: the kernel's create_snap is durable when it returns, so the
  // pool may hold an id whose (not fsynced) intent row a power cut lost.
  if (!deleteThin(pool, p.thinId)) return;
  report.orphansDeleted++;
  log.info(
    p.certain ? "reconcile: deleted an orphaned thin id" : "reconcile: deleted a thin id whose create a power cut made the store forget",
    { thin_id: p.thinId },
  );
}

/** Marks a device 'deleting' (its snapshot row, if any, goes): the remover deletes it when it can. */
function queueForRemover({ store, log, report }: Ctx, dev: DeviceRow, why: string): void {
  try {
    let snapshot: string | null = null;
    store.tx(() => {
      const s = store.snapshotByThinId(dev.thinId);
      if (s) store.deleteSnapshot(s.id);
      snapshot = s?.name ?? null;
      store.markDeviceDeleting(dev.thinId, false);
    });
    report.queued++;
    log.info(`reconcile: ${why}; queued for the background remover`, who(dev, snapshot));
  } catch (e) {
    report.failed++;
    log.error("reconcile: could not queue a device for the remover", { device: dev.dmName, error: String(e) });
  }
}

function rollBackCreate(p: Extract<Problem, { kind: "interrupted-create" }>, ctx: Ctx): void {
  const { store, pool, log, report } = ctx;
  const dev = p.device;
  if (p.mapping && p.mapping.openCount > 0) {
    // Held (a mkfs or mount that outlived us).
    report.busy++;
    queueForRemover(ctx, dev, "interrupted create is still open");
    return;
  }
  if (p.mapping) pool.deactivate(dev.dmName, { retry: true });
  deleteThin(pool, dev.thinId);
  let snapshot: string | null = null;
  store.tx(() => {
    const s = store.snapshotByThinId(dev.thinId);
    if (s) store.deleteSnapshot(s.id);
    snapshot = s?.name ?? null;
    store.deleteDevice(dev.thinId);
  });
  report.rolledBack++;
  log.info("reconcile: rolled back an interrupted create (device deleted, its rows dropped)", who(dev, snapshot));
}

function finishDelete(p: Extract<Problem, { kind: "interrupted-delete" }>, { store, pool, log, report }: Ctx): void {
  const dev = p.device;
  if (p.mapping && p.mapping.openCount > 0) {
    report.busy++;
    log.info("reconcile: interrupted delete of a device still open; left for the background remover", who(dev));
    return;
  }
  if (p.mapping) pool.deactivate(dev.dmName, { retry: true });
  deleteThin(pool, dev.thinId);
  store.tx(() => store.deleteDevice(dev.thinId));
  report.deleted++;
  log.info("reconcile: finished an interrupted delete (device deleted)", who(dev));
}

function queueUnowned(p: Extract<Problem, { kind: "unowned-device" }>, ctx: Ctx): void {
  // A Remove whose transaction never ran cannot produce this: garbage.
  queueForRemover(ctx, p.device, "ready snapshot device without a snapshot row");
}

function unrepairable(p: Extract<Problem, { kind: "missing-device" | "snapshot-without-device" }>, { log, report }: Ctx): void {
  report.failed++;
  log.error("reconcile: cannot repair", { problem: describeProblem(p) });
}

function fixActivation(p: Extract<Problem, { kind: "activation" }>, { pool, log, report }: Ctx): void {
  const dev = p.device;
  const m = p.mapping;
  const at = who(dev, p.snapshot?.name);
  if (p.want) {
    if (m === null) {
      pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
      report.reactivated++;
      log.info("reconcile: reactivated a device that was not mapped", at);
    } else if (!m.liveTable || m.node === false) {
      // killed inside libdm's create (before its table load): map it again
      pool.deactivate(dev.dmName);
      pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
      report.reactivated++;
      log.info("reconcile: mapped again a device left half-mapped (no table or no /dev/mapper node)", at);
    } else if (m.suspended) {
      // killed between suspend and resume (a flush or a create_snap)
      pool.resume(dev.dmName);
      report.resumed++;
      log.info("reconcile: resumed a device left suspended", at);
    }
    return;
  }
  if (m === null) return;
  if (m.suspended) pool.resume(dev.dmName);
  if (m.openCount > 0) {
    pool.deactivate(dev.dmName, { deferred: true });
    report.busy++;
    log.info("reconcile: a device that should not be mapped is still open; deferred its deactivation", at);
  } else {
    pool.deactivate(dev.dmName, { retry: true });
    report.deactivated++;
    log.info("reconcile: deactivated a device that should not be mapped", at);
  }
}

function fixActiveFlag(p: Extract<Problem, { kind: "active-flag" }>, { store, log }: Ctx): void {
  store.tx(() => store.setDeviceActive(p.device.thinId, p.want));
  log.info(`reconcile: set the device's active flag to ${p.want} in the store`, who(p.device));
}

function removeStray(p: Extract<Problem, { kind: "stray-mapping" }>, { pool, log, report }: Ctx): void {
  // Named like ours and unknown: the left-over of a rolled-back create.
  pool.deactivate(p.dmName, { retry: true });
  report.strayMappings++;
  log.info("reconcile: removed a device mapping no snapshot owns", { device: p.dmName });
}

/** The pool and the store do not belong together; the CLI adds which file to move and how to start over. */
export class PoolStoreMismatch extends Error {
  constructor(
    message: string,
    /** The pool holds data the store does not describe (a fresh store does not help). */
    readonly poolUsed: boolean,
  ) {
    super(message);
    this.name = "PoolStoreMismatch";
  }
}

/**
 * The pool's transaction id is thinsnap's generation counter: bumped at every
 * start and recorded in the store. A mismatch means the pool was changed by
 * someone else (or the store is not this pool's), which is worth a loud
 * warning; a used pool with a fresh store is refused outright, because its
 * thin ids are unknown to us and could be overwritten.
 */
export function bindTransactionId(store: Store, pool: PoolApi, log: Logger): bigint {
  const st = pool.status();
  const recorded = store.getMeta("pool_transaction_id");
  if (recorded === null && (st.transactionId !== 0n || st.usedDataBlocks > 0n)) {
    throw new PoolStoreMismatch(
      `pool ${pool.name} is not empty (transaction id ${st.transactionId}, ${st.usedDataBlocks} data blocks used) ` +
        `but this store has never used it: it belongs to another thinsnap store (another root_path) or another ` +
        `tool (e.g. containerd's devmapper); use a fresh pool`,
      true,
    );
  }
  // The store records the next id before the message is sent, so a crash in
  // between leaves the pool one behind: that is not a foreign change.
  if (recorded !== null && BigInt(recorded) !== st.transactionId && BigInt(recorded) - 1n !== st.transactionId) {
    throw new PoolStoreMismatch(
      `pool ${pool.name} has transaction id ${st.transactionId} but this store expects ${recorded}: ` +
        `the pool was re-created or changed outside thinsnap, or the store is not this pool's. ` +
        `Refusing to start rather than touch thin ids the store does not describe.`,
      st.usedDataBlocks > 0n,
    );
  }
  const next = st.transactionId + 1n;
  store.tx(() => store.setMeta("pool_transaction_id", String(next)));
  pool.setTransactionId(st.transactionId, next);
  return next;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
