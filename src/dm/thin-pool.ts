/**
 * A thin-pool and its thin devices, in the pool's own vocabulary: messages
 * (create_thin, create_snap, delete, set_transaction_id, metadata snapshots),
 * and activation of thin devices. No store, no snapshot semantics.
 */
import { fsyncSync, closeSync, openSync, constants } from "node:fs";
import { blockDeviceSize, discardBlocks } from "./blockdev.ts";
import { DeviceMapper, type DeviceInfo } from "./device-mapper.ts";
import { DmError, Errno, isErrno } from "./errors.ts";
import {
  parseThinPoolParams,
  SECTOR,
  thinParams,
  thinPoolParams,
  type ThinPoolStatus,
  type ThinPoolTable,
  type ThinStatus,
} from "./status.ts";
import { blockSizeProblem, defaultLowWaterMark, DEFAULT_LOW_WATER_MARK_MAX } from "../pool/geometry.ts";

export interface CreatePoolOptions {
  metadataDev: string;
  dataDev: string;
  /** Data block size in sectors (bounds: pool/geometry.ts). */
  blockSectors: number;
  /** Free data blocks below which the kernel raises an event (default: geometry's). */
  lowWaterMark?: bigint;
  /** Feature args (default POOL_FEATURES). */
  features?: string[];
}

/**
 * The features of a pool thinsnap creates. skip_block_zeroing, as containerd's
 * devmapper: every thin device is a snapshot of a formatted base, so unwritten
 * blocks are never read. error_if_no_space: once the data device is full,
 * writes fail at once (ENOSPC/EIO) instead of being queued for the module's
 * no_space_timeout (60 s) -- a Commit's fsync, or a suspend that flushes, would
 * otherwise sleep that long on the thread that made it.
 */
export const POOL_FEATURES: readonly string[] = ["skip_block_zeroing", "error_if_no_space"];

export function poolTable(opts: CreatePoolOptions): ThinPoolTable {
  const problem = blockSizeProblem(BigInt(opts.blockSectors) * SECTOR);
  if (problem !== null) throw new RangeError(`block size ${opts.blockSectors} sectors: ${problem}`);
  return {
    metadataDev: opts.metadataDev,
    dataDev: opts.dataDev,
    blockSectors: opts.blockSectors,
    lowWaterMark: opts.lowWaterMark ?? DEFAULT_LOW_WATER_MARK_MAX,
    features: [...(opts.features ?? POOL_FEATURES)],
  };
}

/** Creates a thin-pool device over a metadata and a data block device. */
export function createPool(dm: DeviceMapper, name: string, opts: CreatePoolOptions): void {
  const sectors = blockDeviceSize(opts.dataDev) / SECTOR;
  if (sectors < BigInt(opts.blockSectors)) {
    throw new RangeError(`data device ${opts.dataDev} is ${sectors} sectors: smaller than one ${opts.blockSectors}-sector block`);
  }
  const blockSize = BigInt(opts.blockSectors) * SECTOR;
  const lowWaterMark = opts.lowWaterMark ?? defaultLowWaterMark(sectors * SECTOR, blockSize);
  const table = poolTable({ ...opts, lowWaterMark });
  dm.create(name, [{ start: 0n, length: sectors, type: "thin-pool", params: thinPoolParams(table) }]);
}

export class ThinPool {
  constructor(
    readonly dm: DeviceMapper,
    readonly name: string,
  ) {}

  get devicePath(): string {
    return `/dev/mapper/${this.name}`;
  }

  /** Throws a DmError with a helpful message when the pool is missing or not a pool. */
  table(): ThinPoolTable {
    const t = this.dm.table(this.name)[0];
    if (!t || t.type !== "thin-pool") {
      throw new DmError("table", this.name, Errno.ENXIO, [], "not a thin-pool device");
    }
    return parseThinPoolParams(t.params);
  }

  status(): ThinPoolStatus {
    return this.dm.thinPoolStatus(this.name);
  }

  exists(): boolean {
    return this.dm.info(this.name) !== null;
  }

  createThin(id: number): void {
    this.dm.message(this.name, `create_thin ${id}`);
  }

  /**
   * Snapshots origin into id. The kernel requires an active origin to be
   * suspended around create_snap so that no IO races the metadata copy; an
   * origin that vanished meanwhile (ENXIO on suspend) is simply inactive.
   */
  createSnap(id: number, originId: number, activeOrigin: string | null): void {
    let suspended = false;
    if (activeOrigin) {
      try {
        this.dm.suspend(activeOrigin);
        suspended = true;
      } catch (e) {
        if (!isErrno(e, Errno.ENXIO)) throw e;
      }
    }
    try {
      this.dm.message(this.name, `create_snap ${id} ${originId}`);
    } finally {
      if (suspended && activeOrigin) this.dm.resume(activeOrigin);
    }
  }

  deleteThin(id: number): void {
    this.dm.message(this.name, `delete ${id}`);
  }

  setTransactionId(current: bigint, next: bigint): void {
    this.dm.message(this.name, `set_transaction_id ${current} ${next}`);
  }

  reserveMetadataSnap(): void {
    this.dm.message(this.name, "reserve_metadata_snap");
  }

  releaseMetadataSnap(): void {
    this.dm.message(this.name, "release_metadata_snap");
  }

  /** Activates thin device `id` as /dev/mapper/<name> with `sizeBytes`. */
  activate(name: string, id: number, sizeBytes: bigint): void {
    this.dm.create(name, [{ start: 0n, length: sizeBytes / SECTOR, type: "thin", params: thinParams(this.devicePath, id) }]);
  }

  /** Removes an active thin device; a device that is already gone is fine. */
  deactivate(name: string, opts: { retry?: boolean; deferred?: boolean } = {}): void {
    try {
      this.dm.remove(name, opts);
    } catch (e) {
      if (isErrno(e, Errno.ENXIO) || isErrno(e, Errno.ENODEV)) return;
      throw e;
    }
  }

  /** Flushes outstanding IO of an active thin device (suspend with flush, resume). */
  flush(name: string): void {
    this.dm.suspend(name);
    this.dm.resume(name);
  }

  /**
   * Makes everything written to an active thin device durable: fsync on the
   * block device writes back its page cache and sends a FLUSH, which dm-thin
   * completes only after committing the pool's metadata (the block mappings).
   */
  fsyncDevice(name: string): void {
    const fd = openSync(`/dev/mapper/${name}`, constants.O_RDONLY);
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  discardDevice(name: string): void {
    discardBlocks(`/dev/mapper/${name}`);
  }

  isActive(name: string): boolean {
    return this.dm.info(name) !== null;
  }

  /** Bytes mapped by a thin device (shared blocks included). */
  mappedBytes(name: string): bigint {
    return this.dm.thinStatus(name).mappedSectors * SECTOR;
  }

  info(name: string): DeviceInfo | null {
    return this.dm.info(name);
  }

  resume(name: string): void {
    this.dm.resume(name);
  }

  thinStatus(name: string): ThinStatus {
    return this.dm.thinStatus(name);
  }

  private cachedBlockSize: bigint | null = null;

  /** Data block size of the pool in bytes (fixed for a pool's life: read once). */
  blockSize(): bigint {
    this.cachedBlockSize ??= BigInt(this.table().blockSectors) * SECTOR;
    return this.cachedBlockSize;
  }
}
