/**
 * containerd's snapshot semantics on a thin-pool.
 *
 * Every snapshot is a thin device snapshotted (create_snap) from its parent's
 * device, or from a pre-formatted base device when it has no parent — so no
 * mkfs ever runs on a request. Each step is recorded in the store before the
 * kernel is asked (device state 'creating' / 'deleting'), so start-up can undo
 * or finish whatever a crash interrupted (see reconcile.ts).
 *
 * The kernel calls that sleep (create_snap, activate, deactivate, fsync,
 * delete) are awaited (KernelCalls: on worker threads in the daemon), so
 * requests overlap there. Each write takes a lock on the snapshot keys it
 * touches for its whole length, so two writes to one key never interleave;
 * its checks and its intent row are made without an await in between, so
 * the store never sees a half-checked write. Fast calls (info, status) stay
 * synchronous.
 */
import { Errno, isErrno } from "../dm/errors.ts";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  resourceExhausted,
  SnapshotterError,
  unavailable,
} from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import type { DeviceRow, SnapshotRow, Store } from "../store/store.ts";
import { MatchBudget, matchesWithin } from "../filters/match.ts";
import { parseFiltersAsync } from "../filters/parser.ts";
import { applyLabelUpdate, FSTYPE_LABEL, validateLabels, withoutEmpty } from "./labels.ts";
import { inlineKernelCalls, type Formatter, type KernelCalls, type MappingInfo, type PoolApi, type PoolStatus } from "./pool-api.ts";
import { KeyedLock } from "../keyed-lock.ts";
import { killPoint } from "./kill-points.ts";
import { isUnpack, mountOptions } from "./mount-options.ts";
import { reconcile, type ReconcileReport } from "./reconcile.ts";
import { Remover } from "./remover.ts";
import type { Info, Kind, Labels, Mount, SnapshotOpts, Snapshotter, Usage } from "./types.ts";

export interface SnapshotterOptions {
  poolName: string;
  baseImageSize: bigint;
  fsType: string;
  fsOptions: string;
  asyncRemove: boolean;
  discardBlocks: boolean;
  /** Refuse new devices when free data space would drop below this many bytes. */
  minFreeSpace: bigint;
  /** …or below this percentage of the pool (null: not used). */
  minFreeSpacePercent: number | null;
}

export interface SnapshotterDeps {
  store: Store;
  pool: PoolApi;
  format: Formatter;
  log?: Logger;
  now?: () => number;
  /** Names of all device-mapper devices, so start-up can remove stray mappings of ours. */
  listDevices?: () => string[];
  /** How long a pool status read serves the space check (default STATUS_TTL_MS). */
  statusTtlMs?: number;
  /** Where the sleeping kernel calls run (default: inline on `pool`). */
  kernel?: KernelCalls;
}

const STATUS_TTL_MS = 500;

/** Metadata blocks (4 KiB) we never let the pool go below: a full metadata device turns the pool read-only. */
const MIN_FREE_METADATA_BLOCKS = 64n;

export class ThinSnapshotter implements Snapshotter {
  readonly remover: Remover;
  private readonly store: Store;
  private readonly pool: PoolApi;
  private readonly calls: KernelCalls;
  private readonly locks = new KeyedLock();
  private readonly log: Logger;
  private readonly now: () => number;
  private base: DeviceRow | null = null;
  private closed = false;

  private constructor(
    readonly opts: SnapshotterOptions,
    private readonly deps: SnapshotterDeps,
  ) {
    this.store = deps.store;
    this.pool = deps.pool;
    this.calls = deps.kernel ?? inlineKernelCalls(deps.pool);
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? Date.now;
    this.remover = new Remover(this.store, this.pool, this.calls, this.log);
  }

  /** Reconciles store and pool, makes sure the base device exists, starts the remover. */
  static async open(opts: SnapshotterOptions, deps: SnapshotterDeps): Promise<ThinSnapshotter> {
    const sn = new ThinSnapshotter(opts, deps);
    sn.lastReconcile = reconcile(sn.store, sn.pool, opts.poolName, sn.log, deps.listDevices);
    await sn.ensureBase();
    sn.remover.kick();
    return sn;
  }

  lastReconcile: ReconcileReport | null = null;

  // ------------------------------------------------------------------ reads

  // Reads of one key wait for a write to it that is under way (its kernel
  // calls may be running): they see the snapshot before or after, never a
  // device half made.

  async stat(key: string): Promise<Info> {
    return this.locks.after(key, () => this.statNow(key));
  }

  private statNow(key: string): Info {
    this.assertOpen();
    const row = this.mustGet(key);
    return this.info(row, this.store.labels(row.id));
  }

  async mounts(key: string): Promise<Mount[]> {
    return this.locks.after(key, () => this.mountsNow(key));
  }

  private mountsNow(key: string): Mount[] {
    this.assertOpen();
    const row = this.mustGet(key);
    if (row.kind === "committed") {
      throw failedPrecondition(`snapshot "${key}" is committed: only active and view snapshots have mounts`);
    }
    return this.mountsOf(row, undefined, row.kind === "active" && isUnpack(key, () => this.store.labels(row.id)));
  }

  async usage(key: string): Promise<Usage> {
    return this.locks.after(key, () => this.usageNow(key));
  }

  private usageNow(key: string): Usage {
    this.assertOpen();
    const row = this.mustGet(key);
    // A parentless snapshot starts as a copy of the base: its filesystem's
    // own blocks are not the snapshot's usage.
    const parentMapped =
      row.parentId === null
        ? BigInt(this.store.getMeta("base_mapped_bytes") ?? "0")
        : (this.store.getSnapshotById(row.parentId)?.mappedBytes ?? 0n);
    let mapped: bigint;
    if (row.kind === "committed") {
      mapped = row.mappedBytes ?? 0n;
    } else {
      const dev = this.store.getDevice(row.thinId);
      mapped = dev ? this.kernel(`usage of "${key}"`, () => this.pool.mappedBytes(dev.dmName)) : 0n;
    }
    const size = mapped - parentMapped;
    return { size: size > 0n ? size : 0n, inodes: 0n };
  }

  /**
   * Lists what is stored when it starts (the store's rows are read in one
   * go): snapshots whose Prepare/View is still in its kernel calls are not
   * listed (Store.select), Commits and Removes show from their one store
   * transaction on. Compiling and matching the filters yield to the event
   * loop, within the limits of src/filters/limits.ts.
   */
  async walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void> {
    this.assertOpen();
    const f = await parseFiltersAsync(filters);
    const { rows, exact } = this.store.select(f);
    const budget = new MatchBudget();
    for (const { row, labels } of rows) {
      const info = this.info(row, labels);
      if (!exact && !(await matchesWithin(f, info, budget))) continue;
      await fn(info);
    }
  }

  // ----------------------------------------------------------------- writes

  async prepare(key: string, parent: string, opts: SnapshotOpts = {}): Promise<Mount[]> {
    return this.locks.run([key], () => this.create("active", key, parent, opts.labels ?? {}));
  }

  async view(key: string, parent: string, opts: SnapshotOpts = {}): Promise<Mount[]> {
    return this.locks.run([key], () => this.create("view", key, parent, opts.labels ?? {}));
  }

  async update(info: Pick<Info, "name" | "labels">, fieldpaths: string[]): Promise<Info> {
    return this.locks.run([info.name], async () => this.updateNow(info, fieldpaths));
  }

  private updateNow(info: Pick<Info, "name" | "labels">, fieldpaths: string[]): Info {
    this.assertOpen();
    validateLabels(info.labels);
    return this.store.tx(() => {
      const row = this.mustGet(info.name);
      const labels = applyLabelUpdate(this.store.labels(row.id), info.labels, fieldpaths, info.name);
      const now = this.now();
      this.store.replaceLabels(row.id, labels);
      this.store.touch(row.id, now);
      return this.info({ ...row, updatedMs: now }, labels);
    });
  }

  async commit(name: string, key: string, opts: SnapshotOpts = {}): Promise<void> {
    return this.locks.run([name, key], () => this.commitNow(name, key, opts));
  }

  private async commitNow(name: string, key: string, opts: SnapshotOpts): Promise<void> {
    this.assertOpen();
    if (name === "") throw invalidArgument("committed snapshot name must not be empty");
    const labels = withoutEmpty(opts.labels ?? {});
    validateLabels(labels);
    // containerd checks the new name first, then the key, then its kind.
    if (this.store.getSnapshot(name)) throw alreadyExists(`snapshot "${name}" already exists`);
    const row = this.mustGet(key);
    if (row.kind !== "active") throw failedPrecondition(`snapshot "${key}" is ${row.kind}, not active: cannot commit it`);
    const dev = this.mustDevice(row);

    // Make the writes durable (pool metadata committed), then measure.
    let open = false;
    const op = `commit "${key}"`;
    this.refuseIfOutOfData(op);
    const mapped = await this.kernelAsync(op, async () => {
      const info = this.pool.info(dev.dmName);
      if (!info || !info.liveTable) return this.reactivate(dev, info !== null);
      // Still mounted (containerd normally unmounts first): a suspend freezes
      // the filesystem, which writes its dirty data to the device.
      open = info.openCount > 0;
      if (open) await this.calls.flush(dev.dmName);
      await this.calls.fsyncDevice(dev.dmName);
      // A filesystem's failed writeback does not fail the device's fsync: if
      // the pool filled meanwhile, some of those writes may be lost.
      if (open) this.refuseIfOutOfData(op);
      return this.pool.mappedBytes(dev.dmName);
    });
    killPoint("commit.after-fsync");
    const now = this.now();
    this.store.tx(() => {
      this.store.commitSnapshot(row.id, name, { ...labels, [FSTYPE_LABEL]: dev.fsType }, now, mapped);
      this.store.setDeviceActive(dev.thinId, false);
    });
    killPoint("commit.after-store");
    // A committed snapshot is never mounted: take it out of /dev/mapper. If
    // something still holds it, the kernel removes it at its last close. The
    // commit has landed: a failure here is logged (reconcile deactivates at
    // the next start), not reported as a failed Commit.
    try {
      if (open) {
        this.log.warn("committed device still open; deferred its removal", { device: dev.dmName });
        await this.calls.deactivate(dev.dmName, { deferred: true });
      } else {
        await this.calls.deactivate(dev.dmName, { retry: true });
      }
    } catch (e) {
      this.log.warn("could not deactivate a committed device", { device: dev.dmName, error: String(e) });
    }
    killPoint("commit.after-deactivate");
  }

  async remove(key: string): Promise<void> {
    return this.locks.run([key], () => this.removeNow(key));
  }

  private async removeNow(key: string): Promise<void> {
    this.assertOpen();
    const row = this.mustGet(key);
    if (this.store.hasChildren(row.id)) {
      throw failedPrecondition(`cannot remove snapshot "${key}": it has children`);
    }
    const dev = this.mustDevice(row);
    let known: MappingInfo | null | undefined;
    if (!this.opts.asyncRemove) {
      // Refuse while mounted, before changing anything.
      const info = this.kernel(`remove "${key}"`, () => this.pool.info(dev.dmName));
      if (info && info.openCount > 0) {
        throw failedPrecondition(`cannot remove snapshot "${key}": its device ${dev.dmName} is in use (mounted?)`);
      }
      known = info;
    }
    this.store.tx(() => {
      this.store.deleteSnapshot(row.id);
      this.store.markDeviceDeleting(dev.thinId, this.opts.discardBlocks);
    });
    killPoint("remove.after-store");
    if (this.opts.asyncRemove) {
      this.remover.kick();
      return;
    }
    try {
      const deleting = { ...dev, state: "deleting" as const, discard: this.opts.discardBlocks };
      if (!(await this.remover.finish(deleting, known))) this.remover.kick(100);
    } catch (e) {
      // The snapshot is gone from the store; the device stays queued.
      this.log.warn("device delete failed; queued for retry", { device: dev.dmName, error: String(e) });
      this.remover.kick(100);
    }
  }

  async cleanup(): Promise<void> {
    this.assertOpen();
    const left = await this.remover.drain();
    if (left > 0) this.log.warn("cleanup: devices still busy, left queued", { pending: left });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.remover.stop();
    // Writes already past their checks finish (their kernel calls cannot be
    // called back); new ones are refused by assertOpen.
    await this.locks.drained();
    this.store.close();
  }

  /** Pool usage, for `pool status` and error messages. */
  poolStatus(): PoolStatus {
    return this.pool.status();
  }

  // ---------------------------------------------------------------- helpers

  private async create(
    kind: Exclude<Kind, "committed">,
    key: string,
    parent: string,
    rawLabels: Labels,
    attempt = 0,
  ): Promise<Mount[]> {
    this.assertOpen();
    // containerd's metadata layer refuses empty keys; "" as a name could never be a parent.
    if (key === "") throw invalidArgument("snapshot key must not be empty");
    validateLabels(rawLabels);
    if (this.store.getSnapshot(key)) throw alreadyExists(`snapshot "${key}" already exists`);
    let parentRow: SnapshotRow | null = null;
    let origin: DeviceRow;
    if (parent !== "") {
      parentRow = this.store.getSnapshot(parent);
      if (!parentRow) throw notFound(`parent snapshot "${parent}" does not exist`);
      if (parentRow.kind !== "committed") {
        throw invalidArgument(`parent snapshot "${parent}" is ${parentRow.kind}, not committed`);
      }
      origin = this.mustDevice(parentRow);
    } else {
      if (!this.base) throw unavailable("the base device is not ready");
      origin = this.base;
    }
    this.checkSpace(`${kind === "view" ? "view" : "prepare"} "${key}"`);

    const now = this.now();
    const fsType = origin.fsType;
    const labels = { ...withoutEmpty(rawLabels), [FSTYPE_LABEL]: fsType };
    // The intent row must be durable before the kernel call, unless its id
    // lies in the reserved window: then start-up deletes the id from the pool
    // if a power cut lost the row (Store.nextThinId).
    const next = this.store.nextThinId();
    const intent = (): DeviceRow => {
      const thinId = this.store.takeThinId(next);
      const d: DeviceRow = {
        thinId,
        dmName: `${this.opts.poolName}-snap-${thinId}`,
        role: "snapshot",
        state: "creating",
        originId: origin.thinId,
        sizeBytes: origin.sizeBytes,
        fsType,
        active: true,
        discard: false,
      };
      this.store.insertDevice(d);
      this.store.insertSnapshot(
        { name: key, parentId: parentRow?.id ?? null, kind, createdMs: now, updatedMs: now, thinId, mappedBytes: null },
        labels,
      );
      return d;
    };
    const dev = next.reserved ? this.store.txRelaxed(intent) : this.store.tx(intent);
    killPoint("prepare.after-intent");
    try {
      // Suspend the origin if it is mapped now, whatever the store says: a
      // parent committed while still mounted stays mapped (deferred removal)
      // although its row is inactive. The origin is committed or the base, so
      // nothing maps it again meanwhile; if it goes away, the suspend's ENXIO
      // means "not mapped" (ThinPool.createSnap).
      const originMapped = this.pool.info(origin.dmName) !== null;
      // Suspending a mapped origin flushes its writes, which a full pool
      // may hold for no_space_timeout.
      if (originMapped) this.refuseIfOutOfData(`${kind === "view" ? "view" : "prepare"} "${key}"`);
      await this.calls.createSnap(dev.thinId, origin.thinId, originMapped ? origin.dmName : null);
      killPoint("prepare.after-create-snap");
      await this.calls.activate(dev.dmName, dev.thinId, dev.sizeBytes);
      killPoint("prepare.after-activate");
      // Not fsynced: lost only on power loss, where reconcile then rolls the
      // Prepare back cleanly (from the intent row, or from the window).
      this.store.txRelaxed(() => this.store.setDeviceState(dev.thinId, "ready"));
      killPoint("prepare.after-ready");
    } catch (e) {
      this.rollbackCreate(dev, e);
      // An id the pool already had is now reserved: try the next one.
      if (isErrno(e, Errno.EEXIST) && attempt < 3) return this.create(kind, key, parent, rawLabels, attempt + 1);
      throw this.mapError(e, `${kind === "view" ? "view" : "prepare"} "${key}"`);
    }
    return this.mountsOf({ kind, thinId: dev.thinId }, dev, isUnpack(key, () => rawLabels));
  }

  /**
   * Undoes a half-made device: deactivate, delete the thin id, drop rows.
   * When the kernel said EEXIST the id belongs to someone else: it is kept
   * reserved as 'foreign' and never deleted.
   */
  private rollbackCreate(dev: DeviceRow, cause?: unknown): void {
    if (isErrno(cause, Errno.EEXIST)) {
      this.log.warn("thin id already used in the pool by something else; reserved it, not deleting", {
        thin_id: dev.thinId,
      });
      this.store.tx(() => {
        const s = this.store.snapshotByThinId(dev.thinId);
        if (s) this.store.deleteSnapshot(s.id);
        this.store.deleteDevice(dev.thinId);
        this.store.insertDevice({ ...dev, role: "foreign", state: "ready", active: false, dmName: `${this.opts.poolName}-foreign-${dev.thinId}` });
      });
      return;
    }
    try {
      this.pool.deactivate(dev.dmName, { retry: true });
      try {
        this.pool.deleteThin(dev.thinId);
      } catch (e) {
        if (!isErrno(e, Errno.ENODATA)) throw e;
      }
      this.store.tx(() => {
        const s = this.store.snapshotByThinId(dev.thinId);
        if (s) this.store.deleteSnapshot(s.id);
        this.store.deleteDevice(dev.thinId);
      });
    } catch (e) {
      // Leave it to the remover (and, failing that, start-up reconciliation).
      this.log.error("roll-back of a failed create failed; queued for deletion", {
        device: dev.dmName,
        error: String(e),
      });
      this.store.tx(() => {
        const s = this.store.snapshotByThinId(dev.thinId);
        if (s) this.store.deleteSnapshot(s.id);
        this.store.markDeviceDeleting(dev.thinId, false);
      });
      this.remover.kick(100);
    }
  }

  private statusCache: { at: number; st: PoolStatus } | null = null;

  /**
   * Pool status for the space check, at most STATUS_TTL_MS old: the reserve
   * is a soft limit, and a status ioctl per Prepare would cost as much as the
   * create_snap itself. The kernel's own ENOSPC is always authoritative.
   */
  private cachedStatus(op: string): PoolStatus {
    const now = performance.now();
    if (this.statusCache && now - this.statusCache.at < (this.deps.statusTtlMs ?? STATUS_TTL_MS)) return this.statusCache.st;
    const st = this.kernel(op, () => this.pool.status());
    this.statusCache = { at: now, st };
    return st;
  }

  /** Refuses new devices on a pool that is full, read-only or below the configured reserve. */
  private checkSpace(op: string): void {
    const refusal = this.spaceRefusal(this.cachedStatus(op));
    if (refusal === null) return;
    // Decide on fresh numbers: space may have been freed since the cached read.
    this.statusCache = null;
    const again = this.spaceRefusal(this.cachedStatus(op));
    if (again !== null) {
      this.statusCache = null;
      throw resourceExhausted(`${op}: ${again}`);
    }
  }

  /**
   * Refuses a step that writes to the pool while it is out of data space:
   * a pool made without error_if_no_space (not by thinsnap) queues such
   * writes for the module's no_space_timeout (60 s), and the thread making
   * the call would sleep that long; with it, they fail. Read fresh: the pool
   * may have filled since the last read.
   */
  private refuseIfOutOfData(op: string): void {
    this.statusCache = null;
    const st = this.cachedStatus(op);
    if (st.mode !== "out_of_data_space") return;
    this.statusCache = null;
    throw resourceExhausted(
      `${op}: pool ${this.pool.name} is out of data space (${this.spaceNumbers(st, this.pool.blockSize())}): ` +
        `writes to it cannot complete; remove snapshots or grow the pool's data device`,
    );
  }

  private spaceRefusal(st: PoolStatus): string | null {
    const bs = this.pool.blockSize();
    const freeData = (st.totalDataBlocks - st.usedDataBlocks) * bs;
    const freeMeta = st.totalMetadataBlocks - st.usedMetadataBlocks;
    const numbers = this.spaceNumbers(st, bs);
    if (st.mode !== "rw") return `pool ${this.pool.name} is ${st.mode} (${numbers})`;
    let reserve = this.opts.minFreeSpace;
    if (this.opts.minFreeSpacePercent !== null) {
      const pct = (st.totalDataBlocks * bs * BigInt(Math.round(this.opts.minFreeSpacePercent * 100))) / 10000n;
      if (pct > reserve) reserve = pct;
    }
    if (freeData <= reserve || freeData === 0n) {
      return `pool ${this.pool.name} has too little free data space (${numbers}; reserve ${reserve} bytes)`;
    }
    if (freeMeta < MIN_FREE_METADATA_BLOCKS) return `pool ${this.pool.name} metadata is nearly full (${numbers})`;
    return null;
  }

  private spaceNumbers(st: PoolStatus, bs: bigint): string {
    return (
      `data ${st.usedDataBlocks}/${st.totalDataBlocks} blocks of ${bs} bytes used, ` +
      `metadata ${st.usedMetadataBlocks}/${st.totalMetadataBlocks} blocks used`
    );
  }

  /** Maps kernel failures to the codes containerd understands. */
  private mapError(e: unknown, op: string): Error {
    this.statusCache = null;
    if (e instanceof SnapshotterError) return e;
    // A write to a full pool with error_if_no_space fails with EIO (an
    // fsync's is a plain Error with that code): out of space all the same.
    const io = isErrno(e, Errno.EIO) || errorCode(e) === "EIO";
    if (isErrno(e, Errno.ENOSPC) || errorCode(e) === "ENOSPC" || io) {
      let st: PoolStatus | null = null;
      try {
        st = this.pool.status();
      } catch {
        // the pool may be unreadable; the errno says enough
      }
      if (!io || st?.mode === "out_of_data_space") {
        const numbers = st ? `: ${this.spaceNumbers(st, this.pool.blockSize())}` : "";
        return resourceExhausted(`${op}: pool ${this.pool.name} is out of space${numbers}`);
      }
    }
    if (isErrno(e, Errno.EOPNOTSUPP) || isErrno(e, Errno.EIO)) {
      // a pool in read-only or failed mode refuses messages this way
      return unavailable(`${op}: pool ${this.pool.name} refuses changes (read-only or failed? see thinsnap pool status, thin_check): ${(e as Error).message}`);
    }
    if (isErrno(e, Errno.ENXIO) || isErrno(e, Errno.ENODEV)) {
      return unavailable(`${op}: pool ${this.pool.name} is not available: ${(e as Error).message}`);
    }
    return new SnapshotterError("internal", `${op}: ${(e as Error).message ?? String(e)}`, { cause: e });
  }

  private kernel<T>(op: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw this.mapError(e, op);
    }
  }

  private async kernelAsync<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.mapError(e, op);
    }
  }

  /** Re-creates the dm mapping of an active/view device that went missing; returns mapped bytes. */
  private reactivate(dev: DeviceRow, stale: boolean): bigint {
    this.log.warn("device was not active; reactivating", { device: dev.dmName });
    if (stale) this.pool.deactivate(dev.dmName);
    this.pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
    this.pool.fsyncDevice(dev.dmName);
    return this.pool.mappedBytes(dev.dmName);
  }

  private async ensureBase(): Promise<void> {
    const want = JSON.stringify({
      size: this.opts.baseImageSize.toString(),
      fsType: this.opts.fsType,
      fsOptions: this.opts.fsOptions,
    });
    const have = this.store.baseDevice();
    if (have && have.state === "ready" && this.store.getMeta("base_config") === want) {
      this.base = have;
      return;
    }
    const t0 = performance.now();
    this.checkSpace("create base device");
    const dev = this.store.tx(() => {
      const thinId = this.store.allocateThinId();
      const d: DeviceRow = {
        thinId,
        dmName: `${this.opts.poolName}-base-${thinId}`,
        role: "base",
        state: "creating",
        originId: null,
        sizeBytes: this.opts.baseImageSize,
        fsType: this.opts.fsType,
        active: true,
        discard: false,
      };
      this.store.insertDevice(d);
      return d;
    });
    killPoint("base.after-intent");
    let baseMapped = 0n;
    try {
      this.pool.createThin(dev.thinId);
      this.pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
      await this.deps.format(`/dev/mapper/${dev.dmName}`, dev.fsType, this.opts.fsOptions);
      killPoint("base.after-format");
      this.pool.fsyncDevice(dev.dmName);
      baseMapped = this.pool.mappedBytes(dev.dmName);
      this.pool.deactivate(dev.dmName, { retry: true });
    } catch (e) {
      this.rollbackCreate(dev, e);
      throw this.mapError(e, "create base device");
    }
    this.store.tx(() => {
      if (have) this.store.markDeviceDeleting(have.thinId, false);
      this.store.setDeviceState(dev.thinId, "ready");
      this.store.setDeviceActive(dev.thinId, false);
      this.store.setMeta("base_config", want);
      this.store.setMeta("base_mapped_bytes", String(baseMapped));
    });
    this.base = { ...dev, state: "ready", active: false };
    this.log.info("base device ready", {
      device: dev.dmName,
      thin_id: dev.thinId,
      fs_type: dev.fsType,
      size: dev.sizeBytes,
      ms: Math.round(performance.now() - t0),
    });
  }

  private mustGet(key: string): SnapshotRow {
    const row = this.store.getSnapshot(key);
    if (!row) throw notFound(`snapshot "${key}" does not exist`);
    return row;
  }

  private mustDevice(row: SnapshotRow): DeviceRow {
    const dev = this.store.getDevice(row.thinId);
    if (!dev) throw new SnapshotterError("internal", `snapshot "${row.name}" has no device record (thin id ${row.thinId})`);
    return dev;
  }

  private mountsOf(row: Pick<SnapshotRow, "kind" | "thinId">, dev?: DeviceRow, unpack = false): Mount[] {
    const d = dev ?? this.store.getDevice(row.thinId);
    if (!d) throw new SnapshotterError("internal", `no device record for thin id ${row.thinId}`);
    // Same shape as containerd's devmapper snapshotter's.
    return [{ type: d.fsType, source: `/dev/mapper/${d.dmName}`, options: mountOptions(d.fsType, row.kind, unpack) }];
  }

  private info(row: SnapshotRow, labels: Labels): Info {
    return {
      kind: row.kind,
      name: row.name,
      parent: row.parentName,
      labels,
      created: new Date(row.createdMs),
      updated: new Date(row.updatedMs),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw unavailable("snapshotter is closed");
  }
}

/** The `code` of a Node-style system error (fs calls throw those), if any. */
function errorCode(e: unknown): string | undefined {
  return e instanceof Error && "code" in e && typeof e.code === "string" ? e.code : undefined;
}
