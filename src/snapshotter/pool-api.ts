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
