/**
 * What the snapshotter needs from a thin-pool. src/dm/thin-pool.ts's
 * ThinPool satisfies it; unit tests use an in-memory fake. Failures are
 * DmError (src/dm/errors.ts) carrying the kernel's errno.
 */
export interface PoolStatus {
  transactionId: bigint;
  usedDataBlocks: bigint;
  totalDataBlocks: bigint;
  usedMetadataBlocks: bigint;
  totalMetadataBlocks: bigint;
  mode: "rw" | "ro" | "out_of_data_space";
  needsCheck: boolean;
}

/** What the snapshotter reads of a dm mapping. */
export interface MappingInfo {
  openCount: number;
  suspended: boolean;
  /** false after a create whose table load never happened (a crash inside libdm's CREATE) */
  liveTable: boolean;
}

export interface PoolApi {
  readonly name: string;
  status(): PoolStatus;
  /** Data block size in bytes. */
  blockSize(): bigint;
  setTransactionId(current: bigint, next: bigint): void;
  createThin(id: number): void;
  createSnap(id: number, originId: number, activeOrigin: string | null): void;
  deleteThin(id: number): void;
  activate(dmName: string, id: number, sizeBytes: bigint): void;
  deactivate(dmName: string, opts?: { retry?: boolean; deferred?: boolean }): void;
  isActive(dmName: string): boolean;
  info(dmName: string): MappingInfo | null;
  resume(dmName: string): void;
  mappedBytes(dmName: string): bigint;
  fsyncDevice(dmName: string): void;
  /** Suspend (flushing, freezing a mounted filesystem) and resume. */
  flush(dmName: string): void;
  discardDevice(dmName: string): void;
}

/** Formats a device with a filesystem once (the base); async because it execs mkfs. */
export type Formatter = (devicePath: string, fsType: string, fsOptions: string) => Promise<void>;

/**
 * Grows the filesystem on a device to fill its new size `sizeBytes`, in place
 * (src/snapshotter/grow.ts); returns the filesystem's size afterwards.
 */
export type FsGrower = (devicePath: string, fsType: string, sizeBytes: bigint) => Promise<bigint>;

/**
 * The pool calls that sleep in the kernel (device suspend/resume/remove wait
 * for in-flight IO and RCU grace periods; messages commit pool metadata),
 * asynchronous so that they can run off the JS thread and overlap with each
 * other and with other requests. src/dm/kernel-workers.ts runs them on
 * worker threads; inlineKernelCalls() runs them on the pool directly.
 */
export interface KernelCalls {
  createSnap(id: number, originId: number, activeOrigin: string | null): Promise<void>;
  deleteThin(id: number): Promise<void>;
  activate(dmName: string, id: number, sizeBytes: bigint): Promise<void>;
  deactivate(dmName: string, opts?: { retry?: boolean; deferred?: boolean }): Promise<void>;
  fsyncDevice(dmName: string): Promise<void>;
  flush(dmName: string): Promise<void>;
  discardDevice(dmName: string): Promise<void>;
}

/** The calls made synchronously on `pool`, on the JS thread (unit tests, or no workers). */
export function inlineKernelCalls(pool: PoolApi): KernelCalls {
  return {
    createSnap: async (id, originId, activeOrigin) => pool.createSnap(id, originId, activeOrigin),
    deleteThin: async (id) => pool.deleteThin(id),
    activate: async (dmName, id, sizeBytes) => pool.activate(dmName, id, sizeBytes),
    deactivate: async (dmName, opts) => pool.deactivate(dmName, opts),
    fsyncDevice: async (dmName) => pool.fsyncDevice(dmName),
    flush: async (dmName) => pool.flush(dmName),
    discardDevice: async (dmName) => pool.discardDevice(dmName),
  };
}
