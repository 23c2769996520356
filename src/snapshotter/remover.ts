/**
 * Finishes device deletions in the background (async_remove) and on demand:
 * deactivate → discard (if asked) → delete the thin id → drop the row. A busy
 * device is retried with exponential backoff; nothing is forgotten because
 * the 'deleting' rows are the queue.
 */
import { Errno, isErrno } from "../dm/errors.ts";
import type { Logger } from "../log.ts";
import type { DeviceRow, Store } from "../store/store.ts";
import type { KernelCalls, MappingInfo, PoolApi } from "./pool-api.ts";
import { killPoint } from "./kill-points.ts";

const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 30_000;
/** Deletions a background pass runs at once. */
const PASS_LANES = 4;

export class Remover {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private readonly backoff = new Map<number, { delay: number; notBefore: number }>();
  private waiters: (() => void)[] = [];
  /** Devices being deleted right now (by a Remove or a pass): never twice at once. */
  private readonly busy = new Set<number>();
  private passing = false;

  constructor(
    private readonly store: Store,
    private readonly pool: PoolApi,
    private readonly calls: KernelCalls,
    private readonly log: Logger,
  ) {}

  /**
   * Deletes one device now. Returns false when it is still open (left for a
   * retry); throws other errors. `known` is the mapping's info when the
   * caller just read it (undefined: read it here).
   */
  async finish(dev: DeviceRow, known?: MappingInfo | null): Promise<boolean> {
    if (this.busy.has(dev.thinId)) return false;
    this.busy.add(dev.thinId);
    try {
      return await this.finishNow(dev, known);
    } finally {
      this.busy.delete(dev.thinId);
    }
  }

  private async finishNow(dev: DeviceRow, known?: MappingInfo | null): Promise<boolean> {
    const calls = this.calls;
    const info = known !== undefined ? known : this.pool.info(dev.dmName);
    // Still mounted: do not discard under a live filesystem, and do not let
    // libdm's EBUSY retry loop (seconds of sleeping on the JS thread) run.
    if (info && info.openCount > 0) return false;
    let active = info !== null;
    if (dev.discard) {
      // Discard needs a mapping: committed snapshots are inactive, so map
      // them for the discard. It hands the blocks back to the data device
      // (holes in a file-backed pool), which delete alone does not.
      try {
        if (!active) {
          await calls.activate(dev.dmName, dev.thinId, dev.sizeBytes);
          active = true;
        }
        await calls.discardDevice(dev.dmName);
      } catch (e) {
        this.log.warn("discard failed; deleting anyway", { device: dev.dmName, error: String(e) });
      }
    }
    if (active) {
      try {
        await calls.deactivate(dev.dmName, { retry: true });
      } catch (e) {
        if (isErrno(e, Errno.EBUSY)) return false;
        throw e;
      }
    }
    killPoint("remove.after-deactivate");
    try {
      await calls.deleteThin(dev.thinId);
    } catch (e) {
      // ENODATA: the pool never had it, or an earlier attempt deleted it.
      if (!isErrno(e, Errno.ENODATA)) throw e;
    }
    killPoint("remove.after-delete");
    // Not fsynced: if lost (power loss), the redo at start-up gets ENODATA.
    this.store.txRelaxed(() => this.store.deleteDevice(dev.thinId));
    this.backoff.delete(dev.thinId);
    return true;
  }

  private due = Infinity;

  /** Schedules a pass in delayMs, or sooner if one is already due sooner. */
  kick(delayMs = 0): void {
    if (this.stopped) return;
    const due = Date.now() + delayMs;
    if (this.timer && this.due <= due) return;
    if (this.timer) clearTimeout(this.timer);
    this.due = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.due = Infinity;
      void this.pass();
    }, delayMs);
  }

  /** One pass over every pending deletion; reschedules itself while work remains. */
  async pass(): Promise<void> {
    if (this.passing) {
      // The running pass may have listed the devices before a newer one came.
      this.kick(MIN_BACKOFF_MS);
      return;
    }
    this.passing = true;
    try {
      await this.passNow();
    } finally {
      this.passing = false;
    }
  }

  private async passNow(): Promise<void> {
    const now = Date.now();
    let nextWake = Infinity;
    const due: DeviceRow[] = [];
    for (const dev of this.store.devicesInState("deleting")) {
      const b = this.backoff.get(dev.thinId);
      if (this.busy.has(dev.thinId)) {
        // A Remove is finishing it now; look again soon in case it cannot.
        nextWake = Math.min(nextWake, MIN_BACKOFF_MS);
      } else if (b && b.notBefore > now) {
        nextWake = Math.min(nextWake, b.notBefore - now);
      } else {
        due.push(dev);
      }
    }
    // A few at a time: with the kernel calls on worker threads they overlap,
    // so the queue drains as fast as Removes fill it.
    const next = due.values();
    const lane = async (): Promise<void> => {
      for (let it = next.next(); !it.done && !this.stopped; it = next.next()) {
        const dev = it.value;
        const b = this.backoff.get(dev.thinId);
        let done = false;
        try {
          done = await this.finish(dev);
        } catch (e) {
          this.log.warn("device delete failed; will retry", { device: dev.dmName, thin_id: dev.thinId, error: String(e) });
        }
        if (!done) {
          const delay = Math.min(MAX_BACKOFF_MS, (b?.delay ?? MIN_BACKOFF_MS / 2) * 2);
          this.backoff.set(dev.thinId, { delay, notBefore: now + delay });
          nextWake = Math.min(nextWake, delay);
        } else {
          this.log.debug("device deleted", { device: dev.dmName, thin_id: dev.thinId });
        }
      }
    };
    await Promise.all(Array.from({ length: PASS_LANES }, lane));
    if (this.stopped) return;
    if (this.pending() === 0) {
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    } else if (Number.isFinite(nextWake)) {
      this.kick(nextWake);
    }
  }

  pending(): number {
    return this.store.devicesInState("deleting").length;
  }

  /**
   * Waits until every pending deletion is done (Cleanup), or the budget runs
   * out: busy devices then stay queued.
   */
  async drain(budgetMs = 10_000): Promise<number> {
    if (this.stopped) return 0;
    this.backoff.clear();
    await this.pass();
    if (this.pending() === 0) return 0;
    let budget: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((r) => this.waiters.push(r)),
      new Promise<void>((r) => (budget = setTimeout(r, budgetMs))),
    ]);
    clearTimeout(budget);
    return this.stopped ? 0 : this.pending();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const f of this.waiters) f();
    this.waiters = [];
  }
}
