/**
 * In-memory stand-in for a thin-pool, for host unit tests of the snapshot
 * semantics. It enforces the kernel rules we rely on (ids unique, delete of an
 * unknown id = ENODATA, a name can be mapped once, busy devices refuse remove)
 * and can inject a failure at any operation.
 */
import { DmError, Errno } from "../../../src/dm/errors.ts";
import type { FsGrower, MappingInfo, PoolApi, PoolStatus } from "../../../src/snapshotter/pool-api.ts";

interface Thin {
  mapped: bigint;
  /** The largest length the thin has been mapped with (a snapshot starts with its origin's). */
  size?: bigint;
  /** The size of the filesystem on it, once a grow ran on it (a snapshot starts with its origin's). */
  fsSize?: bigint;
}

/** Bytes a fake grow writes (the new block groups' metadata), and how much smaller than its device the grown filesystem is. */
export const FAKE_GROW_WRITES = 3n << 20n;
export const FAKE_GROW_SLACK = 4096n;

export class FakePool implements PoolApi {
  readonly thins = new Map<number, Thin>();
  readonly mapped = new Map<string, { id: number; openCount: number; size: bigint; suspended?: boolean; liveTable?: boolean }>();
  transactionId = 0n;
  totalDataBlocks = 16384n;
  totalMetadataBlocks = 4096n;
  usedMetadataBlocksExtra = 0n;
  mode: PoolStatus["mode"] = "rw";
  calls: string[] = [];
  private failures = new Map<string, number>();
  /** Called before every operation (crash injection). */
  onCall: ((op: string) => void) | null = null;
  /** Called after every operation that returned normally. */
  afterCall: ((op: string) => void) | null = null;

  constructor(readonly name = "fakepool") {}

  failNext(op: string, errno: number): void {
    this.failures.set(op, errno);
  }

  private enter(op: string, device: string): void {
    this.calls.push(op);
    this.onCall?.(op);
    const errno = this.failures.get(op);
    if (errno !== undefined) {
      this.failures.delete(op);
      throw new DmError(op, device, errno, []);
    }
  }

  /** A deep copy: the pool's state at one instant (a crash image). */
  clone(): FakePool {
    const c = new FakePool(this.name);
    for (const [id, t] of this.thins) c.thins.set(id, { ...t });
    for (const [n, m] of this.mapped) c.mapped.set(n, { ...m, openCount: 0 });
    c.transactionId = this.transactionId;
    c.totalDataBlocks = this.totalDataBlocks;
    c.totalMetadataBlocks = this.totalMetadataBlocks;
    return c;
  }

  private leave(op: string): void {
    this.afterCall?.(op);
  }

  status(): PoolStatus {
    this.enter("status", this.name);
    const used = [...this.thins.values()].reduce((a, t) => a + t.mapped, 0n) / 65536n;
    return {
      transactionId: this.transactionId,
      usedDataBlocks: used,
      totalDataBlocks: this.totalDataBlocks,
      usedMetadataBlocks: BigInt(this.thins.size) + this.usedMetadataBlocksExtra,
      totalMetadataBlocks: this.totalMetadataBlocks,
      mode: this.mode,
      needsCheck: false,
    };
  }

  blockSize(): bigint {
    return 65536n;
  }

  setTransactionId(current: bigint, next: bigint): void {
    this.enter("set_transaction_id", this.name);
    if (current !== this.transactionId) throw new DmError("message", this.name, Errno.EINVAL, []);
    this.transactionId = next;
    this.leave("set_transaction_id");
  }

  createThin(id: number): void {
    this.enter("create_thin", this.name);
    if (this.thins.has(id)) throw new DmError("message", this.name, Errno.EEXIST, []);
    this.thins.set(id, { mapped: 0n });
    this.leave("create_thin");
  }

  createSnap(id: number, originId: number, activeOrigin: string | null): void {
    this.enter("create_snap", this.name);
    // The kernel's rule (thin-provisioning.txt): a mapped origin must be
    // suspended around create_snap, or the snapshot may miss in-flight writes.
    for (const [n, m] of this.mapped) {
      if (m.id === originId && n !== activeOrigin) {
        throw new Error(`fake: create_snap ${id} ${originId} while origin ${n} is mapped and not suspended`);
      }
    }
    const o = this.thins.get(originId);
    if (!o) throw new DmError("message", this.name, Errno.ENODATA, []);
    if (this.thins.has(id)) throw new DmError("message", this.name, Errno.EEXIST, []);
    this.thins.set(id, { ...o });
    this.leave("create_snap");
  }

  deleteThin(id: number): void {
    this.enter("delete", this.name);
    if (!this.thins.delete(id)) throw new DmError("message", this.name, Errno.ENODATA, []);
    for (const [n, m] of this.mapped) if (m.id === id) throw new Error(`fake: deleted thin ${id} still mapped as ${n}`);
    this.leave("delete");
  }

  activate(dmName: string, id: number, sizeBytes: bigint): void {
    this.enter("activate", dmName);
    if (this.mapped.has(dmName)) throw new DmError("create", dmName, Errno.EBUSY, []);
    const t = this.thins.get(id);
    if (!t) throw new DmError("create", dmName, Errno.ENODATA, []);
    // A table shorter than the thin's filesystem (or a length it had) would cut data off.
    if (t.size !== undefined && sizeBytes < t.size) {
      throw new Error(`fake: thin ${id} mapped with ${sizeBytes} bytes, shrunk from ${t.size}`);
    }
    t.size = sizeBytes;
    this.mapped.set(dmName, { id, openCount: 0, size: sizeBytes });
    this.leave("activate");
  }

  deactivate(dmName: string, opts: { retry?: boolean; deferred?: boolean } = {}): void {
    this.enter("deactivate", dmName);
    const m = this.mapped.get(dmName);
    if (m && m.openCount > 0) {
      if (!opts.deferred) throw new DmError("remove", dmName, Errno.EBUSY, []);
    } else if (m) {
      this.mapped.delete(dmName);
    }
    this.leave("deactivate");
  }

  isActive(dmName: string): boolean {
    this.enter("info", dmName);
    return this.mapped.has(dmName);
  }

  info(dmName: string): MappingInfo | null {
    this.enter("info", dmName);
    const m = this.mapped.get(dmName);
    return m ? { openCount: m.openCount, suspended: m.suspended ?? false, liveTable: m.liveTable ?? true } : null;
  }

  resume(dmName: string): void {
    this.enter("resume", dmName);
    const m = this.mapped.get(dmName);
    if (!m) throw new DmError("resume", dmName, Errno.ENXIO, []);
    m.suspended = false;
    this.leave("resume");
  }

  mappedBytes(dmName: string): bigint {
    this.enter("thin_status", dmName);
    const m = this.mapped.get(dmName);
    if (!m) throw new DmError("status", dmName, Errno.ENXIO, []);
    return this.thins.get(m.id)!.mapped;
  }

  fsyncDevice(dmName: string): void {
    this.enter("fsync", dmName);
    if (!this.mapped.has(dmName)) throw new Error(`fake: fsync of unmapped ${dmName}`);
    this.leave("fsync");
  }

  flush(dmName: string): void {
    this.enter("flush", dmName);
    if (!this.mapped.has(dmName)) throw new DmError("suspend", dmName, Errno.ENXIO, []);
    this.leave("flush");
  }

  discardDevice(dmName: string): void {
    this.enter("discard", dmName);
    const m = this.mapped.get(dmName);
    if (m) this.thins.get(m.id)!.mapped = 0n;
    this.leave("discard");
  }

  /**
   * An FsGrower on this pool: the device must be mapped at the size asked
   * for, and its filesystem never shrinks; it writes FAKE_GROW_WRITES new
   * bytes and leaves the filesystem FAKE_GROW_SLACK short of the device.
   */
  readonly grow: FsGrower = async (devicePath, _fsType, sizeBytes) => {
    const dmName = devicePath.replace(/^\/dev\/mapper\//, "");
    this.enter("grow", dmName);
    const m = this.mapped.get(dmName);
    if (!m) throw new Error(`fake: grow of unmapped ${dmName}`);
    if (m.size !== sizeBytes) throw new Error(`fake: grow of ${dmName} to ${sizeBytes} but its table says ${m.size}`);
    const t = this.thins.get(m.id)!;
    const fs = sizeBytes - FAKE_GROW_SLACK;
    if (t.fsSize !== undefined && fs < t.fsSize) throw new Error(`fake: filesystem on ${dmName} shrunk from ${t.fsSize} to ${fs}`);
    t.fsSize = fs;
    t.mapped += FAKE_GROW_WRITES;
    this.leave("grow");
    return fs;
  };

  // ---- test helpers
  /** Simulates a write of `bytes` new bytes to a mapped device. */
  write(dmName: string, bytes: bigint): void {
    const m = this.mapped.get(dmName);
    if (!m) throw new Error(`fake: write to unmapped ${dmName}`);
    this.thins.get(m.id)!.mapped += bytes;
  }

  open(dmName: string, delta = 1): void {
    const m = this.mapped.get(dmName);
    if (m) m.openCount += delta;
  }
}
