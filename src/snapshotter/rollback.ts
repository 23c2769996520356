/**
 * Undoing a create that failed half way (a Prepare, a View or the base):
 * deactivate, delete the thin id, drop its rows; what cannot be undone now
 * is left to the background remover (and, failing that, start-up).
 */
import { Errno, isErrno } from "../dm/errors.ts";
import type { Logger } from "../log.ts";
import type { DeviceRow, Store } from "../store/store.ts";
import type { PoolApi } from "./pool-api.ts";

export interface RollbackContext {
  store: Store;
  pool: PoolApi;
  log: Logger;
  poolName: string;
  /** Asks the background remover to run soon. */
  kickRemover: () => void;
}

/**
 * When the kernel said EEXIST the id belongs to someone else: it is kept
 * reserved as 'foreign' and never deleted.
 */
export function rollbackCreate(c: RollbackContext, dev: DeviceRow, cause?: unknown): void {
  const { store, pool, log } = c;
  const dropSnapshot = (): void => {
    const s = store.snapshotByThinId(dev.thinId);
    if (s) store.deleteSnapshot(s.id);
  };
  if (isErrno(cause, Errno.EEXIST)) {
    log.warn("thin id already used in the pool by something else; reserved it, not deleting", { thin_id: dev.thinId });
    store.tx(() => {
      dropSnapshot();
      store.deleteDevice(dev.thinId);
      store.insertDevice({ ...dev, role: "foreign", state: "ready", active: false, dmName: `${c.poolName}-foreign-${dev.thinId}` });
    });
    return;
  }
  try {
    pool.deactivate(dev.dmName, { retry: true });
    try {
      pool.deleteThin(dev.thinId);
    } catch (e) {
      if (!isErrno(e, Errno.ENODATA)) throw e;
    }
    store.tx(() => {
      dropSnapshot();
      store.deleteDevice(dev.thinId);
    });
  } catch (e) {
    log.error("roll-back of a failed create failed; queued for deletion", { device: dev.dmName, error: String(e) });
    store.tx(() => {
      dropSnapshot();
      store.markDeviceDeleting(dev.thinId, false);
    });
    c.kickRemover();
  }
}
