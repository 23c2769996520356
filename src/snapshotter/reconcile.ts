/**
 * Start-up reconciliation: makes the pool agree with the store after a crash.
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
 * Finally the pool's transaction id is bound to the store (see bindTransactionId).
 */
import { Errno, isErrno } from "../dm/errors.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/store.ts";
import type { PoolApi } from "./pool-api.ts";

export interface ReconcileReport {
  rolledBack: number;
  orphansDeleted: number;
  deleted: number;
  reactivated: number;
  resumed: number;
  deactivated: number;
  strayMappings: number;
  busy: number;
  failed: number;
}

export function reconcile(
  store: Store,
  pool: PoolApi,
  poolName: string,
  log: Logger,
  listDmDevices?: () => string[],
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
  };
  bindTransactionId(store, pool, log);

  const deleteThin = (id: number): void => {
    try {
      pool.deleteThin(id);
    } catch (e) {
      if (!isErrno(e, Errno.ENODATA)) throw e;
    }
  };

  // Ids of the reserved window without a row: a create whose (not fsynced)
  // intent row a power cut lost. The kernel's create_snap is durable when it
  // returns, so the pool may hold the id: delete it. Then forget the window.
  const window = store.reservedThinIds();
  if (window.length) {
    let unsure = 0;
    for (const id of window) {
      if (store.getDevice(id)) continue;
      try {
        pool.deleteThin(id);
        report.orphansDeleted++;
        log.warn("reconcile: deleted a thin id whose create a power cut made the store forget", { thin_id: id });
      } catch (e) {
        if (isErrno(e, Errno.ENODATA)) continue;
        // Not fatal (one id must not keep the daemon down); the window is
        // kept, so the next start probes it again.
        unsure++;
        report.failed++;
        log.error("reconcile: could not delete a forgotten thin id; will retry at the next start", { thin_id: id, error: String(e) });
      }
    }
    if (unsure === 0) store.tx(() => store.clearThinIdWindow());
  }

  for (const dev of store.devicesInState("creating")) {
    const info = pool.info(dev.dmName);
    if (info && info.openCount > 0) {
      // Held (a mkfs or mount that outlived us): the remover deletes it later.
      store.tx(() => {
        const s = store.snapshotByThinId(dev.thinId);
        if (s) store.deleteSnapshot(s.id);
        store.markDeviceDeleting(dev.thinId, false);
      });
      report.busy++;
      log.warn("reconcile: interrupted create is still open; queued for deletion", { device: dev.dmName });
      continue;
    }
    if (info) pool.deactivate(dev.dmName, { retry: true });
    deleteThin(dev.thinId);
    store.tx(() => {
      const s = store.snapshotByThinId(dev.thinId);
      if (s) store.deleteSnapshot(s.id);
      store.deleteDevice(dev.thinId);
    });
    report.rolledBack++;
    log.warn("reconcile: rolled back an interrupted create", { device: dev.dmName, thin_id: dev.thinId });
  }

  for (const dev of store.devicesInState("deleting")) {
    const info = pool.info(dev.dmName);
    if (info && info.openCount > 0) {
      report.busy++;
      log.warn("reconcile: device to delete is open; left for the remover", { device: dev.dmName });
      continue;
    }
    try {
      if (info) pool.deactivate(dev.dmName, { retry: true });
      deleteThin(dev.thinId);
      store.tx(() => store.deleteDevice(dev.thinId));
      report.deleted++;
      log.info("reconcile: finished an interrupted delete", { device: dev.dmName, thin_id: dev.thinId });
    } catch (e) {
      report.failed++;
      log.warn("reconcile: could not finish a delete; left for the remover", { device: dev.dmName, error: String(e) });
    }
  }

  for (const dev of store.allDevices()) {
    if (dev.state !== "ready" || dev.role === "foreign") continue;
    const snap = dev.role === "snapshot" ? store.snapshotByThinId(dev.thinId) : null;
    if (dev.role === "snapshot" && !snap) {
      // A ready snapshot device without its snapshot row: a Remove whose
      // transaction never ran cannot produce this, so treat it as garbage.
      store.tx(() => store.markDeviceDeleting(dev.thinId, false));
      continue;
    }
    const shouldBeActive = snap !== null && snap.kind !== "committed";
    try {
      const info = pool.info(dev.dmName);
      if (shouldBeActive) {
        if (info && !info.liveTable) {
          // killed inside libdm's create (before its table load): map it again
          pool.deactivate(dev.dmName);
          pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
          report.reactivated++;
        } else if (!info) {
          pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
          report.reactivated++;
          log.info("reconcile: reactivated device", { device: dev.dmName, snapshot: snap?.name });
        } else if (info.suspended) {
          // killed between suspend and resume (a flush or a create_snap)
          pool.resume(dev.dmName);
          report.resumed++;
          log.warn("reconcile: resumed a device left suspended", { device: dev.dmName });
        }
      } else if (info) {
        if (info.suspended) pool.resume(dev.dmName);
        if (info.openCount > 0) {
          pool.deactivate(dev.dmName, { deferred: true });
          report.busy++;
        } else {
          pool.deactivate(dev.dmName, { retry: true });
          report.deactivated++;
        }
      }
      if (dev.active !== shouldBeActive) store.tx(() => store.setDeviceActive(dev.thinId, shouldBeActive));
    } catch (e) {
      // One broken device must not keep the daemon (and every other snapshot) down.
      report.failed++;
      log.error("reconcile: could not fix a device's activation", { device: dev.dmName, snapshot: snap?.name, error: String(e) });
    }
  }

  if (listDmDevices) {
    const known = new Set(store.allDevices().map((d) => d.dmName));
    const ours = new RegExp(`^${escapeRegExp(poolName)}-(snap|base)-\\d+$`);
    for (const name of listDmDevices()) {
      if (!ours.test(name) || known.has(name)) continue;
      try {
        pool.deactivate(name, { retry: true });
        report.strayMappings++;
        log.warn("reconcile: removed a device mapping no snapshot owns", { device: name });
      } catch (e) {
        log.warn("reconcile: could not remove stray mapping", { device: name, error: String(e) });
      }
    }
  }

  const changed = Object.values(report).some((n) => n > 0);
  if (changed) log.info("reconcile: done", { ...report });
  return report;
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
