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
  SnapshotterError,
  unavailable,
} from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import type { DeviceRow, SnapshotRow, Store } from "../store/store.ts";
import { MatchBudget, matchesWithin } from "../filters/match.ts";
import { parseFiltersAsync } from "../filters/parser.ts";
import { applyLabelUpdate, deviceLabels, FSTYPE_LABEL, validateKey, validateLabels, withoutEmpty } from "./labels.ts";
import { inlineKernelCalls, type Formatter, type FsGrower, type KernelCalls, type MappingInfo, type PoolApi, type PoolStatus } from "./pool-api.ts";
import { tmpdir } from "node:os";
import { growFilesystem } from "./grow.ts";
import { requestedSize, targetSize, type SizeLimits } from "./max-size.ts";
import { KeyedLock } from "../keyed-lock.ts";
import { killPoint } from "./kill-points.ts";
import type { SpaceResource } from "./space.ts";
import { PoolGuard, STATUS_TTL_MS } from "./pool-guard.ts";
import { ensureBase } from "./base-device.ts";
import { rollbackCreate, type RollbackContext } from "./rollback.ts";
import { checkCommitParent } from "./commit-parent.ts";
import { BASE_MAPPED_META, exclusiveBytes } from "./usage.ts";
import { isUnpack, mountOptions } from "./mount-options.ts";
import { reconcile, type ReconcileReport } from "./reconcile.ts";
import { Remover } from "./remover.ts";
import type { CommitOpts, Info, Kind, Labels, Mount, SnapshotOpts, Snapshotter, Usage } from "./types.ts";

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
  /**
   * The largest containerd.io/snapshot/max-size a client may ask for (config
   * max_size_limit); null or absent: the pool's data size.
   */
  maxSizeLimit?: bigint | null;
}

export interface SnapshotterDeps {
  store: Store;
  pool: PoolApi;
  format: Formatter;
  /** Grows a filesystem whose snapshot asked for a larger size (default: grow.ts: resize2fs offline or the online ioctl). */
  grow?: FsGrower;
  /** root_path: private mounts (a filesystem growing online) are made under it (default: the temp dir, for tests). */
  rootPath?: string;
  log?: Logger;
  now?: () => number;
  /** Names of all device-mapper devices, so start-up can remove stray mappings of ours. */
  listDevices?: () => string[];
  /** How long a pool status read serves the space check (default STATUS_TTL_MS). */
  statusTtlMs?: number;
  /** Where the sleeping kernel calls run (default: inline on `pool`). */
  kernel?: KernelCalls;
  /** Told of every refusal for space (metrics and the rate-limited warning). */
  onSpaceRefusal?: (resource: SpaceResource, message: string) => void;
}

export class ThinSnapshotter implements Snapshotter {
  readonly remover: Remover;
  private readonly store: Store;
  private readonly pool: PoolApi;
  private readonly calls: KernelCalls;
  private readonly grower: FsGrower;
  private readonly rootPath: string;
  private readonly guard: PoolGuard;
  private readonly locks = new KeyedLock();
  private readonly log: Logger;
  private readonly now: () => number;
  private base: DeviceRow | null = null;
  private closed = false;

  private constructor(
    readonly opts: SnapshotterOptions,
    deps: SnapshotterDeps,
  ) {
    this.store = deps.store;
    this.pool = deps.pool;
    this.calls = deps.kernel ?? inlineKernelCalls(deps.pool);
    const rootPath = deps.rootPath ?? tmpdir();
    this.rootPath = rootPath;
    this.grower = deps.grow ?? ((dev, fs, size) => growFilesystem(dev, fs, size, rootPath));
    this.log = deps.log ?? silentLogger;
    this.now = deps.now ?? Date.now;
    this.remover = new Remover(this.store, this.pool, this.calls, this.log);
    this.guard = new PoolGuard(this.pool, opts, deps.statusTtlMs ?? STATUS_TTL_MS, deps.onSpaceRefusal);
  }

  private rollbackContext(): RollbackContext {
    return { store: this.store, pool: this.pool, log: this.log, poolName: this.opts.poolName, kickRemover: () => this.remover.kick(100) };
  }

  /** Reconciles store and pool, makes sure the base device exists, starts the remover. */
  static async open(opts: SnapshotterOptions, deps: SnapshotterDeps): Promise<ThinSnapshotter> {
    const sn = new ThinSnapshotter(opts, deps);
    sn.lastReconcile = reconcile(sn.store, sn.pool, opts.poolName, sn.log, { listDmDevices: deps.listDevices, rootPath: sn.rootPath });
    sn.base = await ensureBase({ ...sn.rollbackContext(), guard: sn.guard, format: deps.format }, opts, sn.log);
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
    return this.mountsOf(row, undefined, row.kind === "active" && isUnpack(key));
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
        ? BigInt(this.store.getMeta(BASE_MAPPED_META) ?? "0")
        : (this.store.getSnapshotById(row.parentId)?.mappedBytes ?? 0n);
    let mapped: bigint;
    if (row.kind === "committed") {
      mapped = row.mappedBytes ?? 0n;
    } else {
      const dev = this.store.getDevice(row.thinId);
      mapped = dev ? this.guard.call(`usage of "${key}"`, () => this.pool.mappedBytes(dev.dmName)) : 0n;
    }
    return { size: exclusiveBytes(mapped, parentMapped), inodes: 0n }; // issue 14
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
    return this.store.tx(() => {
      const row = this.mustGet(info.name);
      const labels = applyLabelUpdate(this.store.labels(row.id), info.labels, fieldpaths, info.name);
      const now = this.now();
      this.store.replaceLabels(row.id, labels);
      this.store.touch(row.id, now);
      return this.info({ ...row, updatedMs: now }, labels);
    });
  }

  async commit(name: string, key: string, opts: CommitOpts = {}): Promise<void> {
    return this.locks.run([name, key], () => this.commitNow(name, key, opts));
  }

  private async commitNow(name: string, key: string, opts: CommitOpts): Promise<void> {
    this.assertOpen();
    if (name === "") throw invalidArgument("committed snapshot name must not be empty");
    validateKey(name, "name");
    // containerd checks the new name first, then the key, then its kind.
    if (this.store.getSnapshot(name)) throw alreadyExists(`snapshot "${name}" already exists`);
    const row = this.mustGet(key);
    if (row.kind !== "active") throw failedPrecondition(`snapshot "${key}" is ${row.kind}, not active: cannot commit it`);
    checkCommitParent(key, row.parentName, opts.parent ?? "");
    const dev = this.mustDevice(row);
    const labels = { ...withoutEmpty(opts.labels ?? {}), [FSTYPE_LABEL]: dev.fsType };
    validateLabels(labels);

    // Make the writes durable (pool metadata committed), then measure.
    let open = false;
    const op = `commit "${key}"`;
    this.guard.refuseIfOutOfData(op);
    const mapped = await this.guard.callAsync(op, async () => {
      const info = this.pool.info(dev.dmName);
      if (!info || !info.liveTable) return this.reactivate(dev, info !== null);
      // Still mounted (containerd normally unmounts first): a suspend freezes
      // the filesystem, which writes its dirty data to the device.
      open = info.openCount > 0;
      if (open) await this.calls.flush(dev.dmName);
      await this.calls.fsyncDevice(dev.dmName);
      // A filesystem's failed writeback does not fail the device's fsync: if
      // the pool filled meanwhile, some of those writes may be lost.
      if (open) this.guard.refuseIfOutOfData(op);
      return this.pool.mappedBytes(dev.dmName);
    });
    killPoint("commit.after-fsync");
    const now = this.now();
    this.store.tx(() => {
      this.store.commitSnapshot(row.id, name, { ...labels, ...deviceLabels(dev) }, now, mapped);
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
      const info = this.guard.call(`remove "${key}"`, () => this.pool.info(dev.dmName));
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
    validateKey(key);
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
    const op = `${kind === "view" ? "view" : "prepare"} "${key}"`;
    const requested = requestedSize(rawLabels, () => this.sizeLimits(op));
    const sizeBytes = targetSize(requested, origin, parentRow ? `parent "${parent}"` : "the base device");
    const grows = sizeBytes > origin.sizeBytes;
    this.guard.checkSpace(op);

    const now = this.now();
    const fsType = origin.fsType;
    // A grown device's filesystem size is known once grown; children inherit their origin's.
    const fsBytes = grows ? null : origin.fsBytes;
    const labels = { ...withoutEmpty(rawLabels), ...deviceLabels({ fsType, sizeBytes, fsBytes }) };
    let snapshotId = 0;
    validateLabels(labels);
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
        sizeBytes,
        fsType,
        active: true,
        discard: false,
        fsBytes,
      };
      this.store.insertDevice(d);
      snapshotId = this.store.insertSnapshot(
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
      if (originMapped) this.guard.refuseIfOutOfData(`${kind === "view" ? "view" : "prepare"} "${key}"`);
      await this.calls.createSnap(dev.thinId, origin.thinId, originMapped ? origin.dmName : null);
      killPoint("prepare.after-create-snap");
      await this.calls.activate(dev.dmName, dev.thinId, dev.sizeBytes);
      killPoint("prepare.after-activate");
      // The device is mapped at its new size from the start; its filesystem
      // is grown while the device is still 'creating', so a crash in
      // between rolls the whole Prepare back.
      const t0 = performance.now();
      const grown = grows ? await this.grower(`/dev/mapper/${dev.dmName}`, fsType, sizeBytes) : null;
      if (grown !== null) {
        const ms = Math.round(performance.now() - t0);
        this.log.info("grew a snapshot's filesystem (max-size)", { snapshot: key, device: dev.dmName, from: origin.sizeBytes, size: sizeBytes, fs_size: grown, ms });
      }
      // Not fsynced: lost only on power loss, where reconcile then rolls the
      // Prepare back cleanly (from the intent row, or from the window).
      this.store.txRelaxed(() => {
        if (grown === null) {
          this.store.setDeviceState(dev.thinId, "ready");
          return;
        }
        this.store.setDeviceReady(dev.thinId, grown);
        this.store.replaceLabels(snapshotId, { ...labels, ...deviceLabels({ fsType, sizeBytes, fsBytes: grown }) });
      });
      killPoint("prepare.after-ready");
    } catch (e) {
      rollbackCreate(this.rollbackContext(), dev, e);
      // An id the pool already had is now reserved: try the next one.
      if (isErrno(e, Errno.EEXIST) && attempt < 3) return this.create(kind, key, parent, rawLabels, attempt + 1);
      throw this.guard.mapError(e, op);
    }
    return this.mountsOf({ kind, thinId: dev.thinId }, dev, isUnpack(key));
  }

  /** What a max-size label may ask for on this pool. */
  private sizeLimits(op: string): SizeLimits {
    const blockSize = this.pool.blockSize();
    const own = this.opts.maxSizeLimit ?? null;
    if (own !== null) return { blockSize, limit: own, limitSource: "max_size_limit" };
    const poolBytes = this.guard.status(op).totalDataBlocks * blockSize;
    return { blockSize, limit: poolBytes, limitSource: `the pool's data size; set max_size_limit to allow more` };
  }

  /** Re-creates the dm mapping of an active/view device that went missing; returns mapped bytes. */
  private reactivate(dev: DeviceRow, stale: boolean): bigint {
    this.log.warn("device was not active; reactivating", { device: dev.dmName });
    if (stale) this.pool.deactivate(dev.dmName);
    this.pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
    this.pool.fsyncDevice(dev.dmName);
    return this.pool.mappedBytes(dev.dmName);
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
