/** The shape of a resolved configuration (what src/config/keys.ts describes). */

export type FsType = "ext4" | "xfs" | "ext2";
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";

export const FS_TYPES: readonly FsType[] = ["ext4", "xfs", "ext2"];
export const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error"];
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** A thin-pool that thinsnap creates from two (sparse) loopback files. */
export interface PoolConfig {
  /** Absolute path of the data file. */
  dataFile: string;
  /** Absolute path of the metadata file. */
  metaFile: string;
  /** Bytes; a multiple of blockSize. */
  dataSize: bigint;
  /** Bytes; a multiple of 4 KiB. */
  metaSize: bigint;
  /** Bytes; a multiple of 64 KiB. */
  blockSize: bigint;
  /** In data blocks; below the number of data blocks. */
  lowWaterMark: bigint;
}

export interface Config {
  /** thin-pool device name, without /dev/mapper/. Required. */
  poolName: string;
  /** Absolute directory for thinsnap's metadata. */
  rootPath: string;
  /** Size of every base (parentless) thin device, bytes. */
  baseImageSize: bigint;
  asyncRemove: boolean;
  discardBlocks: boolean;
  fsType: FsType;
  /** Passed to mkfs; "" = the snapshotter's default for the file system. */
  fsOptions: string;
  /** Unix socket path containerd's proxy_plugins entry points at. */
  address: string;
  /** Permission bits of the socket, 0..0o777. */
  socketMode: number;
  /** Group (name or numeric gid) to chown the socket to; null = leave it. */
  socketGroup: string | null;
  /** Free data space (bytes) the pool must keep; in force while minFreeSpacePercent is null. */
  minFreeSpace: bigint;
  /** min_free_space given as "N%" of the pool's data size; null = use bytes. */
  minFreeSpacePercent: number | null;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** Threads for the device-mapper calls that sleep in the kernel; 0 = the main thread. */
  kernelThreads: number;
  /** Largest containerd.io/snapshot/max-size a client may ask for; null = the pool's data size. */
  maxSizeLimit: bigint | null;
  /** Prometheus /metrics address (host:port or a unix socket path); "" = off. */
  metricsAddress: string;
  /** null = use an existing pool named poolName; set = create it from files. */
  pool: PoolConfig | null;
}

/** min_free_space: one key, two fields of Config (bytes, or a percentage). */
export interface MinFree {
  bytes: bigint;
  percent: number | null;
}

/** The values of the top-level keys, one field per key. */
export type MainValues = Omit<Config, "pool" | "minFreeSpace" | "minFreeSpacePercent"> & { minFreeSpace: MinFree };

/** Values given by the caller (e.g. command-line flags); they win over the file. */
export type ConfigOverrides = Partial<Omit<Config, "pool">> & {
  /** null: no [pool] even if the file has one; an object: merged into [pool]. */
  pool?: Partial<PoolConfig> | null;
};
