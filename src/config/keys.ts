/**
 * Every config key, once: its TOML name, the Config field it sets, how its
 * value is read, its default, its bounds, its documentation, whether
 * containerd's devmapper section accepts it, and its command-line flag.
 * Parsing, validation, flag overrides, `--help`, packaging/config.example.toml
 * and the README table are all derived from KEYS. Adding a key is adding an
 * entry here (and its field to types.ts).
 */
import { formatSize, GiB, MiB } from "./units.ts";
import * as kind from "./kinds.ts";
import type { Kind } from "./kinds.ts";
import { FS_TYPES, LOG_FORMATS, LOG_LEVELS, type MainValues, type PoolConfig } from "./types.ts";
import { DM_NAME_MAX, LONGEST_DEVICE_SUFFIX, MAX_POOL_NAME_BYTES, utf8Length } from "../pool/device-names.ts";
import * as geo from "../pool/geometry.ts";
import { MetricsAddressError, parseMetricsAddress } from "../metrics/address.ts";

/** Values of every key, top-level and [pool] (their field names do not collide). */
export type AllValues = MainValues & PoolConfig;

export interface KeyContext {
  /** The config has a [pool] table (its keys can be asked for). */
  pooled: boolean;
  /** The resolved value of another key. */
  get<K extends keyof AllValues>(field: K): AllValues[K];
  /** The key was set (file or override), not defaulted or derived. */
  given(field: keyof AllValues): boolean;
}

export interface Entry<V, F extends keyof V> {
  /** Key inside its table. */
  key: string;
  field: F;
  kind: Kind<V[F]>;
  /** The default; with neither `default` nor `derive` the key is required. */
  default?: V[F];
  /** A default computed from other keys. */
  derive?(c: KeyContext): V[F];
  /** What is wrong with a value (naming the limit), or null. */
  check?(v: V[F], c: KeyContext): string | null;
  /** containerd's devmapper snapshotter has the key, with this meaning. */
  containerd?: true;
  /** One line: README table, --help. */
  summary: string;
  /** Comment lines for packaging/config.example.toml. */
  doc: string;
  /** Shown in the example file instead of the default. */
  example?: V[F];
  /** Default as documented, when derived. */
  defaultText?: string;
  /** The command-line flag (every subcommand's) that overrides the key. */
  flag?: string;
}

export type MainEntry = { [F in keyof MainValues]: Entry<MainValues, F> & { table: "" } }[keyof MainValues];
export type PoolEntry = { [F in keyof PoolConfig]: Entry<PoolConfig, F> & { table: "pool" } }[keyof PoolConfig];
export type KeyEntry = MainEntry | PoolEntry;

/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const SOCKET_PATH_MAX = 107;
/** mkfs.ext4/ext2 handle tiny devices, but below this nothing useful fits. */
export const MIN_BASE_IMAGE_SIZE = MiB;
/** xfsprogs >= 5.19 refuses "Filesystem must be larger than 300MB" (300 MiB). */
export const MIN_XFS_SIZE = 300n * MiB;
/** Each kernel thread holds a copy of libdevmapper and a JS heap (a few MiB). */
export const MAX_KERNEL_THREADS = 64;
const SECTOR = geo.SECTOR;
/** pool_name of the embedded default (no config file) and of the example file. */
export const DEFAULT_POOL_NAME = "thinsnap-pool";

/** "a", "b" or "c" */
const orList = (items: readonly string[], quote = (s: string) => `"${s}"`): string =>
  items.length < 2 ? items.map(quote).join("") : `${items.slice(0, -1).map(quote).join(", ")} or ${quote(items.at(-1) ?? "")}`;
const code = (s: string): string => `\`${s}\``;

const absolute = (what: string) => (v: string): string | null =>
  !v.startsWith("/") ? `must be an absolute path${what}` : v.includes("\0") ? "must not contain NUL" : null;

const blockOk = (c: KeyContext): boolean => geo.blockSizeProblem(c.get("blockSize")) === null;
const dataOk = (c: KeyContext): boolean => blockOk(c) && geo.dataSizeProblem(c.get("dataSize"), c.get("blockSize")) === null;

export const MAIN_KEYS: readonly MainEntry[] = [
  {
    table: "",
    key: "pool_name",
    field: "poolName",
    kind: kind.string,
    containerd: true,
    flag: "pool-name",
    summary: `the name of the thin-pool device, without /dev/mapper/ (at most ${MAX_POOL_NAME_BYTES} bytes)`,
    example: DEFAULT_POOL_NAME,
    doc: `Name of the thin-pool device, without /dev/mapper/. Required: no default.
A device-mapper name: no "/", no blanks, at most ${MAX_POOL_NAME_BYTES} bytes (thin devices
are named <pool_name>-snap-<id> and the like, up to ${LONGEST_DEVICE_SUFFIX} bytes more, and the
kernel's limit for a name is ${DM_NAME_MAX} bytes).`,
    check(name) {
      if (name === "") return "must not be empty";
      if (name.includes("/")) return `must not contain "/" (give the name, not /dev/mapper/${name})`;
      if (name === "." || name === "..") return `"." and ".." are not valid device-mapper names`;
      if (/[\s\x00-\x1f\x7f]/.test(name)) return "must not contain blanks or control characters";
      if (utf8Length(name) > MAX_POOL_NAME_BYTES) {
        return (
          `must be at most ${MAX_POOL_NAME_BYTES} bytes long: thin devices are named <pool_name>-snap-<id> ` +
          `and the like (up to ${LONGEST_DEVICE_SUFFIX} bytes more), and device-mapper names are at most ${DM_NAME_MAX} bytes`
        );
      }
      return null;
    },
  },
  {
    table: "",
    key: "root_path",
    field: "rootPath",
    kind: kind.string,
    containerd: true,
    flag: "root",
    default: "/var/lib/thinsnap",
    summary: "metadata database directory",
    doc: "Directory for thinsnap's metadata (an absolute path).",
    check: absolute(""),
  },
  {
    table: "",
    key: "base_image_size",
    field: "baseImageSize",
    kind: kind.size,
    containerd: true,
    derive(c) {
      if (!c.pooled || !dataOk(c)) return geo.DEFAULT_BASE_IMAGE_SIZE;
      const suited = geo.baseImageSizeFor(c.get("dataSize"));
      return c.get("fsType") === "xfs" && suited < MIN_XFS_SIZE ? MIN_XFS_SIZE : suited;
    },
    defaultText: `"${kind.sizeText(geo.DEFAULT_BASE_IMAGE_SIZE)}"; with [pool]: ${geo.BASE_IMAGE_SIZE_RULE}`,
    summary: "size of every thin device (go-units: `10GB` = 10 GiB)",
    doc: `Size of every new base (parentless) thin device; snapshots inherit it.
Must be a multiple of ${SECTOR} bytes and at least ${formatSize(MIN_BASE_IMAGE_SIZE)} (${formatSize(MIN_XFS_SIZE)} for xfs, which
mkfs.xfs requires). containerd has no default (it requires the key); 10 GiB is
Docker devicemapper's dm.basesize. Thin devices are sparse, but formatting
the base costs about 2 % of its size in pool data (a 10 GiB ext4 base: 229 MiB),
so with a [pool] table the default suits the pool: ${geo.BASE_IMAGE_SIZE_RULE}.`,
    check(bis, c) {
      if (bis <= 0n) return "must be greater than 0";
      if (bis % SECTOR !== 0n) {
        const down = (bis / SECTOR) * SECTOR;
        return `must be a multiple of ${SECTOR} bytes (device-mapper sectors); got ${bis} bytes, try ${down > 0n ? down : SECTOR}`;
      }
      if (bis < MIN_BASE_IMAGE_SIZE) return `must be at least ${formatSize(MIN_BASE_IMAGE_SIZE)}`;
      if (c.get("fsType") === "xfs" && bis < MIN_XFS_SIZE) {
        return `must be at least ${formatSize(MIN_XFS_SIZE)} with fs_type "xfs" (mkfs.xfs refuses smaller)`;
      }
      return null;
    },
  },
  {
    table: "",
    key: "max_size_limit",
    field: "maxSizeLimit",
    kind: kind.optionalSize,
    default: null,
    defaultText: "the pool's data size",
    example: 100n * GiB,
    summary:
      "largest `containerd.io/snapshot/max-size` a client may ask for (a size); above it Prepare/View is InvalidArgument",
    doc: `Largest containerd.io/snapshot/max-size label a Prepare or View may carry
(a per-container root filesystem size; thinsnap grows the snapshot's device
and filesystem in place). Above it the request is InvalidArgument. Unset: the
pool's data size.`,
    check: (v) => (v !== null && v <= 0n ? "must be greater than 0" : null),
  },
  {
    table: "",
    key: "async_remove",
    field: "asyncRemove",
    kind: kind.boolean,
    containerd: true,
    default: false,
    summary: "Remove returns after the metadata change; devices are deleted in the background (Cleanup waits)",
    doc: "Remove devices in the background (containerd's Cleanup) rather than inline.",
  },
  {
    table: "",
    key: "discard_blocks",
    field: "discardBlocks",
    kind: kind.boolean,
    containerd: true,
    default: false,
    summary: "discard a device's blocks before deleting it (returns space to the data device)",
    doc: "Discard a thin device's blocks before removing it.",
  },
  {
    table: "",
    key: "fs_type",
    field: "fsType",
    kind: kind.oneOf(FS_TYPES),
    containerd: true,
    default: "ext4",
    summary: `${orList(FS_TYPES, code)}; children inherit their parent's`,
    doc: `File system made on base devices: ${orList(FS_TYPES)}.`,
  },
  {
    table: "",
    key: "fs_options",
    field: "fsOptions",
    kind: kind.string,
    containerd: true,
    default: "",
    summary: "mkfs options for the base (ext: `-E` options; default `nodiscard,lazy_itable_init=0,lazy_journal_init=0`)",
    doc: `Options for mkfs ("" = the snapshotter's defaults for that file system;
containerd passes ext4 options with -E, and uses
"nodiscard,lazy_itable_init=0,lazy_journal_init=0" when this is empty).`,
    check: (v) => (v.includes("\0") ? "must not contain NUL" : null),
  },
  {
    table: "",
    key: "address",
    field: "address",
    kind: kind.string,
    flag: "address",
    default: "/run/thinsnap/thinsnap.sock",
    summary: "the unix socket to serve on (mode `socket_mode`, directory 0700)",
    doc: `Unix socket containerd connects to (an absolute path, at most ${SOCKET_PATH_MAX} bytes).`,
    check(v) {
      if (!v.startsWith("/")) return "must be an absolute path of a unix socket";
      if (utf8Length(v) > SOCKET_PATH_MAX) return `must be at most ${SOCKET_PATH_MAX} bytes long (the limit of a unix socket path)`;
      return null;
    },
  },
  {
    table: "",
    key: "socket_mode",
    field: "socketMode",
    kind: kind.octalMode,
    default: 0o600,
    summary: "permission bits of the socket",
    doc: `Permission bits of the socket: a string of octal digits ("0660") or a TOML
octal integer (0o660). Decimal integers are refused (660 would be 0o1224).`,
    check: (v) => (!Number.isInteger(v) || v < 0 || v > 0o777 ? "must be permission bits between 0 and 0o777" : null),
  },
  {
    table: "",
    key: "socket_group",
    field: "socketGroup",
    kind: kind.group,
    default: null,
    defaultText: "unset",
    example: "containerd",
    summary: "group (name or gid) the socket is given to; unset: left as is",
    doc: "Group to give the socket to: a name or a numeric gid. Unset: left as is.",
    check: (v) =>
      v !== null && !/^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10})$/.test(v) ? "must be a group name or a numeric gid" : null,
  },
  {
    table: "",
    key: "min_free_space",
    field: "minFreeSpace",
    kind: kind.sizeOrPercent,
    default: { bytes: 0n, percent: 10 },
    summary: "refuse new devices (ResourceExhausted) below this free data space (size or percent)",
    doc: `Free data space the pool must keep; creating a device fails below it.
Either a size ("20GB") or a percentage of the pool's data size ("10%",
from 0% to below 100%). The default follows Docker devicemapper's
dm.min_free_space.`,
    check(v) {
      if (v.bytes < 0n) return "must not be negative";
      if (v.percent === null) return null;
      if (!Number.isFinite(v.percent) || v.percent < 0 || v.percent >= 100) {
        return "a percentage must be at least 0% and below 100%";
      }
      return v.bytes !== 0n ? "give either bytes or a percentage, not both" : null;
    },
  },
  {
    table: "",
    key: "log_level",
    field: "logLevel",
    kind: kind.oneOf(LOG_LEVELS),
    flag: "log-level",
    default: "info",
    summary: orList(LOG_LEVELS, code),
    doc: `${orList(LOG_LEVELS)}.`,
  },
  {
    table: "",
    key: "log_format",
    field: "logFormat",
    kind: kind.oneOf(LOG_FORMATS),
    flag: "log-format",
    default: "text",
    summary: orList(LOG_FORMATS, code),
    doc: `${orList(LOG_FORMATS)}.`,
  },
  {
    table: "",
    key: "metrics_address",
    field: "metricsAddress",
    kind: kind.string,
    flag: "metrics-address",
    default: "",
    summary:
      "Prometheus metrics at `GET /metrics` on `host:port` (`127.0.0.1:9323`, `[::1]:9323`, `:9323` = every interface) " +
      'or an absolute unix socket path (mode 0600); `""` = off',
    doc: `Prometheus metrics at GET /metrics: host:port (127.0.0.1:9323, [::1]:9323,
":9323" for every interface) or an absolute unix socket path (mode 0600).
Empty (the default) serves none, since it opens a port. A scrape never waits
on the kernel: pool figures come from a status read every 2 s.`,
    check: (v) => {
      try {
        parseMetricsAddress(v);
        return null;
      } catch (e) {
        return e instanceof MetricsAddressError ? e.why : String(e);
      }
    },
  },
  {
    table: "",
    key: "kernel_threads",
    field: "kernelThreads",
    kind: kind.smallCount,
    default: 0,
    summary:
      "threads for the device-mapper calls that sleep in the kernel, so concurrent requests overlap there " +
      "(started on demand, gone after 30 s idle); `0` = all on the main thread " +
      "(measured faster in the emulated guest, see BENCHMARKS.md)",
    doc: `Threads for the device-mapper calls that sleep in the kernel (create_snap,
activate, deactivate, delete, fsync): concurrent requests overlap there
instead of waiting for each other. Started on demand, stopped after 30 s
idle. 0 (the default) makes every call on the main thread: measured in an
emulated guest, a call's hop to a thread cost more than the overlap won
(BENCHMARKS.md); measure your own hosts with \`npm run bench\`. At most ${MAX_KERNEL_THREADS}.`,
    check: (v) =>
      !Number.isInteger(v) || v < 0 || v > MAX_KERNEL_THREADS ? `must be an integer from 0 to ${MAX_KERNEL_THREADS}` : null,
  },
];

/** The default data file of a pool under root_path (trailing slashes of root_path dropped). */
export const dataFileUnder = (rootPath: string): string => `${rootPath.replace(/\/+$/, "")}/pool/data`;
/** The default metadata file of a data file: one rule for [pool] and `pool create`. */
export const metaFileFor = (dataFile: string): string => `${dataFile}.meta`;

export const POOL_KEYS: readonly PoolEntry[] = [
  {
    table: "pool",
    key: "data_file",
    flag: "data-file",
    field: "dataFile",
    kind: kind.string,
    derive: (c) => dataFileUnder(c.get("rootPath")),
    defaultText: "<root_path>/pool/data",
    summary: "data file (sparse, on a loop device)",
    doc: "Data file. Default: <root_path>/pool/data.",
    // A derived path is absolute whenever root_path is (checked there).
    check: (v, c) => (c.given("dataFile") && !v.startsWith("/") ? "must be an absolute path" : null),
  },
  {
    table: "pool",
    key: "meta_file",
    flag: "meta-file",
    field: "metaFile",
    kind: kind.string,
    derive: (c) => metaFileFor(c.get("dataFile")),
    defaultText: "<data_file>.meta",
    summary: "metadata file",
    doc: "Metadata file. Default: the data file's name with .meta appended.",
    check(v, c) {
      if (c.given("metaFile") && !v.startsWith("/")) return "must be an absolute path";
      return v === c.get("dataFile") ? "must differ from data_file" : null;
    },
  },
  {
    table: "pool",
    key: "data_size",
    flag: "data-size",
    field: "dataSize",
    kind: kind.size,
    default: geo.DEFAULT_DATA_SIZE,
    summary: "size of the data file (sparse); a multiple of block_size",
    doc: "Size of the data file; a multiple of block_size.",
    check: (v, c) => (blockOk(c) ? geo.dataSizeProblem(v, c.get("blockSize")) : null),
  },
  {
    table: "pool",
    key: "meta_size",
    flag: "meta-size",
    field: "metaSize",
    kind: kind.size,
    derive: (c) => geo.defaultMetaSize(c.get("dataSize"), c.get("blockSize")),
    defaultText: geo.META_SIZE_RULE,
    summary: "size of the metadata file",
    doc: `Size of the metadata file. Default, after the kernel's guidance
(Documentation/admin-guide/device-mapper/thin-provisioning.rst):
48 * data_size / block_size bytes, rounded up to ${formatSize(geo.META_BLOCK_SIZE)}, at least
${formatSize(geo.DEFAULT_MIN_META_SIZE)} (every thin device needs metadata of its own) and at most
${formatSize(geo.KERNEL_META_MAX)} (all the kernel uses). 100 GB at 64 KiB blocks: 75 MiB.
An explicit value must be a multiple of ${formatSize(geo.META_BLOCK_SIZE)} between ${formatSize(geo.MIN_META_SIZE)} and ${formatSize(geo.MAX_META_SIZE)}.`,
    check: (v) => geo.metaSizeProblem(v),
  },
  {
    table: "pool",
    key: "block_size",
    flag: "block-size",
    field: "blockSize",
    kind: kind.size,
    default: geo.DEFAULT_BLOCK_SIZE,
    summary: `data block size, a multiple of ${formatSize(geo.MIN_BLOCK_SIZE)} up to ${formatSize(geo.MAX_BLOCK_SIZE)}`,
    doc: `Data block size: a multiple of ${formatSize(geo.MIN_BLOCK_SIZE)} from ${formatSize(geo.MIN_BLOCK_SIZE)} to ${formatSize(geo.MAX_BLOCK_SIZE)}. 64 KiB is the
128 sectors containerd's docs use; small blocks share best between
snapshots.`,
    check: (v) => geo.blockSizeProblem(v),
  },
  {
    table: "pool",
    key: "low_water_mark",
    flag: "low-water-mark",
    field: "lowWaterMark",
    kind: kind.count,
    derive: (c) => geo.defaultLowWaterMark(c.get("dataSize"), c.get("blockSize")),
    defaultText: geo.LOW_WATER_MARK_RULE,
    summary: "free data blocks at which the kernel raises an event",
    doc: `Free-space threshold, in data blocks, at which the kernel raises a
device-mapper event. Must be below the number of data blocks. Default:
${geo.DEFAULT_LOW_WATER_MARK_MAX} (containerd's docs; 2 GiB at 64 KiB blocks), or a tenth of the data
blocks when that is less.`,
    check: (v, c) => geo.lowWaterMarkProblem(v, dataOk(c) ? c.get("dataSize") : null, c.get("blockSize")),
  },
];

export const KEYS: readonly KeyEntry[] = [...MAIN_KEYS, ...POOL_KEYS];

/** "pool_name", "pool.data_size": how messages name a key. */
export const keyName = (e: { table: string; key: string }): string => (e.table === "" ? e.key : `${e.table}.${e.key}`);

// Every field has exactly one entry (a compile error otherwise).
type Missing<V, E extends { field: keyof V }> = Exclude<keyof V, E["field"]>;
const mainCovered: Missing<MainValues, MainEntry> extends never ? true : never = true;
const poolCovered: Missing<PoolConfig, PoolEntry> extends never ? true : never = true;
void mainCovered;
void poolCovered;
