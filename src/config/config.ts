/**
 * thinsnap configuration: a TOML file, shaped after containerd's devmapper
 * snapshotter config (snapshots/devmapper/config.go, containerd 1.6), plus
 * thinsnap's own settings and an optional [pool] table for a loopback-backed
 * thin-pool that thinsnap creates itself.
 *
 * Two document forms are read:
 *
 * 1. thinsnap's own file (packaging/config.example.toml documents every key):
 *      pool_name, root_path, base_image_size, async_remove, discard_blocks,
 *      fs_type, fs_options                      (containerd's keys, as-is)
 *      address, socket_mode, socket_group, min_free_space, log_level,
 *      log_format, kernel_threads               (thinsnap's own)
 *      [pool] data_file, meta_file, data_size, meta_size, block_size,
 *             low_water_mark                    (optional)
 *
 * 2. a containerd config.toml: when the document has a `plugins` table, the
 *    devmapper section is read and the rest of the document is ignored:
 *      [plugins."io.containerd.snapshotter.v1.devmapper"]   (config version 2/3)
 *      [plugins.devmapper]                                  (config version 1)
 *    If both are present, `version` picks (>= 2: the long form). Only the
 *    containerd devmapper keys are accepted inside that section.
 *
 * Unknown keys are errors. Every error is a ConfigError naming the file, the
 * line (found by scanning the TOML text for the key), the key and the value.
 */
import { readFile } from "node:fs/promises";
import { parse, TomlError } from "smol-toml";
import type { TomlTable, TomlValue } from "smol-toml";
import { SnapshotterError } from "../errors.ts";
import { formatSize, GiB, KiB, MiB, parseSize } from "./units.ts";

// ---------------------------------------------------------------------------
// Types

export type FsType = "ext4" | "xfs" | "ext2";
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";

export const FS_TYPES: readonly FsType[] = ["ext4", "xfs", "ext2"];
export const LOG_LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warn", "error"];
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** A thin-pool that thinsnap creates from two (sparse) loopback files. */
export interface PoolConfig {
  /** Absolute path of the data file. Default: <root_path>/pool/data. */
  dataFile: string;
  /** Absolute path of the metadata file. Default: <root_path>/pool/metadata. */
  metaFile: string;
  /** Bytes; a multiple of blockSize. Default 100 GiB (sparse). */
  dataSize: bigint;
  /** Bytes; multiple of 4 KiB, 2 MiB..16 GiB. Default: defaultMetaSize(). */
  metaSize: bigint;
  /** Bytes, multiple of 64 KiB, 64 KiB..1 GiB. Default 64 KiB (128 sectors). */
  blockSize: bigint;
  /** In data blocks; < number of data blocks. Default: defaultLowWaterMark(). */
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
  /**
   * Free data space (bytes) the pool must keep: creating a device that would
   * go below it fails. In force only while minFreeSpacePercent is null.
   */
  minFreeSpace: bigint;
  /** min_free_space given as "N%" of the pool's data size; null = use bytes. */
  minFreeSpacePercent: number | null;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /**
   * Threads for the device-mapper calls that sleep in the kernel, so that
   * concurrent requests overlap there; 0 = make them on the main thread. Off
   * by default: in the emulated guest each call's hop to a thread cost more
   * than the overlap won (BENCHMARKS.md, kernel_threads rows).
   */
  kernelThreads: number;
  /** null = use an existing pool named poolName; set = create it from files. */
  pool: PoolConfig | null;
}

/** Values given by the caller (e.g. command-line flags); they win over the file. */
export type ConfigOverrides = Partial<Omit<Config, "pool">> & {
  /** null: no [pool] even if the file has one; an object: merged into [pool]. */
  pool?: Partial<PoolConfig> | null;
};

// ---------------------------------------------------------------------------
// Constants and defaults

export const DEFAULT_CONFIG_PATH = "/etc/thinsnap/config.toml";
/** containerd's plugin URI for its devmapper snapshotter (config version >= 2). */
export const CONTAINERD_PLUGIN_URI = "io.containerd.snapshotter.v1.devmapper";
/** containerd's plugin ID, the section name in a version 1 config. */
export const CONTAINERD_PLUGIN_ID = "devmapper";

export const SECTOR_SIZE = 512n;
/** DM_NAME_LEN is 128 including the terminating NUL. */
export const DM_NAME_MAX = 127;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const SOCKET_PATH_MAX = 107;
/** dm-thin: data block size is a multiple of 64 KiB, between 64 KiB and 1 GiB. */
export const MIN_BLOCK_SIZE = 64n * KiB;
export const MAX_BLOCK_SIZE = GiB;
/** dm-thin's metadata block size. */
export const META_BLOCK_SIZE = 4n * KiB;
/** Kernel guidance: round metadata up to 2 MiB; 16 GiB is the largest supported. */
export const MIN_META_SIZE = 2n * MiB;
/** Floor of the derived metadata size (see defaultMetaSize). */
export const DEFAULT_MIN_META_SIZE = 64n * MiB;
export const MAX_META_SIZE = 16n * GiB;
/**
 * What the kernel actually uses of a metadata device: DM_SM_METADATA_MAX_BLOCKS
 * (255 * (2^14 - 64)) blocks of 4 KiB = 15.875 GiB; anything past it is ignored
 * with a warning. Derived sizes are capped here.
 */
export const KERNEL_META_MAX = 255n * ((1n << 14n) - 64n) * META_BLOCK_SIZE;
/** mkfs.ext4/ext2 handle tiny devices, but below this nothing useful fits. */
export const MIN_BASE_IMAGE_SIZE = MiB;
/** xfsprogs >= 5.19 refuses "Filesystem must be larger than 300MB" (300 MiB). */
export const MIN_XFS_SIZE = 300n * MiB;
/** containerd's docs create the pool with low_water_mark 32768 (blocks). */
export const DEFAULT_LOW_WATER_MARK_MAX = 32768n;
/** Each kernel thread holds a copy of libdevmapper and a JS heap (a few MiB). */
export const MAX_KERNEL_THREADS = 64;

/**
 * Defaults for everything but pool_name, which has no sane default and is
 * required (as in containerd).
 *
 * base_image_size: containerd has no default and requires it; 10 GiB is what
 * Docker's devicemapper driver (containerd's devmapper ancestor) used for
 * dm.basesize. Thin devices are sparse, so unused space costs nothing.
 *
 * min_free_space: "10%", Docker devicemapper's dm.min_free_space default; a
 * thin-pool that runs out of data space stalls or errors every device in it.
 */
export const DEFAULTS: Readonly<Omit<Config, "poolName">> = Object.freeze({
  rootPath: "/var/lib/thinsnap",
  baseImageSize: 10n * GiB,
  asyncRemove: false,
  discardBlocks: false,
  fsType: "ext4",
  fsOptions: "",
  address: "/run/thinsnap/thinsnap.sock",
  socketMode: 0o600,
  socketGroup: null,
  minFreeSpace: 0n,
  minFreeSpacePercent: 10,
  logLevel: "info",
  logFormat: "text",
  kernelThreads: 0,
  pool: null,
});

/** Defaults of the [pool] table that do not depend on other values. */
export const POOL_DEFAULTS: Readonly<Pick<PoolConfig, "dataSize" | "blockSize">> = Object.freeze({
  /** Like containerd's docs (`truncate -s 100G data`); the file is sparse. */
  dataSize: 100n * GiB,
  /** 128 sectors, the block size containerd's docs and tests use. */
  blockSize: 64n * KiB,
});

export function defaultPoolFiles(rootPath: string): Pick<PoolConfig, "dataFile" | "metaFile"> {
  const root = rootPath.replace(/\/+$/, "");
  return { dataFile: `${root}/pool/data`, metaFile: `${root}/pool/metadata` };
}

const roundUp = (n: bigint, m: bigint): bigint => ((n + m - 1n) / m) * m;

/**
 * Metadata size for a pool, after the kernel's guidance (thin-provisioning.rst):
 * 48 bytes per data block, i.e. 48 * data_size / block_size, rounded up to the
 * 4 KiB metadata block, at least DEFAULT_MIN_META_SIZE, and at most what the
 * kernel can use (KERNEL_META_MAX, 15.875 GiB). 100 GiB at 64 KiB blocks: 75 MiB.
 * The formula counts mappings only; every thin device also costs metadata
 * blocks of its own, and a snapshotter keeps thousands of devices, so small
 * pools get 64 MiB (a sparse file costs only what is used).
 */
export function defaultMetaSize(dataSize: bigint, blockSize: bigint): bigint {
  const blocks = blockSize > 0n ? dataSize / blockSize : 0n;
  const size = roundUp(48n * blocks, META_BLOCK_SIZE);
  if (size < DEFAULT_MIN_META_SIZE) return DEFAULT_MIN_META_SIZE;
  if (size > KERNEL_META_MAX) return KERNEL_META_MAX;
  return size;
}

/**
 * Low water mark in blocks: containerd's docs use 32768 (2 GiB at 64 KiB
 * blocks); for pools smaller than 320 000 blocks it is a tenth of the blocks.
 */
export function defaultLowWaterMark(dataSize: bigint, blockSize: bigint): bigint {
  const blocks = blockSize > 0n ? dataSize / blockSize : 0n;
  const tenth = blocks / 10n;
  return tenth < DEFAULT_LOW_WATER_MARK_MAX ? tenth : DEFAULT_LOW_WATER_MARK_MAX;
}

// ---------------------------------------------------------------------------
// Errors

export interface ConfigIssue {
  /** File the problem is in; null when it comes from the overrides. */
  file: string | null;
  /** 1-based line, when known. */
  line: number | null;
  /** 1-based column, for TOML syntax errors. */
  column: number | null;
  /** Key as written in the TOML ("pool_name", "pool.block_size"); null: none. */
  key: string | null;
  /** The offending value, rendered as TOML; null when there is none. */
  value: string | null;
  /** The whole human-readable line: "file:line: key = value: what is wrong". */
  text: string;
}

/** Invalid configuration. The first problem's location is on the error itself. */
export class ConfigError extends SnapshotterError {
  readonly file: string | null;
  readonly line: number | null;
  readonly column: number | null;
  readonly key: string | null;
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[], options?: { cause?: unknown }) {
    super("invalid_argument", issues.map((i) => i.text).join("\n"), options);
    this.name = "ConfigError";
    const first = issues[0];
    this.file = first?.file ?? null;
    this.line = first?.line ?? null;
    this.column = first?.column ?? null;
    this.key = first?.key ?? null;
    this.issues = issues;
  }
}

interface Loc {
  file: string | null;
  line: number | null;
  /** Rendered value, for messages. */
  value: string | null;
}

function makeIssue(
  loc: { file: string | null; line: number | null; column?: number | null },
  key: string | null,
  value: string | null,
  message: string,
  showKey = true,
): ConfigIssue {
  let where = loc.file === null ? "overrides" : loc.file;
  if (loc.file !== null && loc.line !== null) {
    where += `:${loc.line}`;
    if (loc.column !== undefined && loc.column !== null) where += `:${loc.column}`;
  }
  let subject = "";
  if (key !== null && showKey) subject = value !== null ? `${key} = ${value}: ` : `${key}: `;
  return {
    file: loc.file,
    line: loc.line,
    column: loc.column ?? null,
    key,
    value,
    text: `${where}: ${subject}${message}`,
  };
}

/** Thrown by value converters; turned into a ConfigIssue by the caller. */
class ValueError extends Error {}

// ---------------------------------------------------------------------------
// Keys

const CONTAINERD_KEYS = [
  "pool_name",
  "root_path",
  "base_image_size",
  "async_remove",
  "discard_blocks",
  "fs_type",
  "fs_options",
] as const;
const THINSNAP_KEYS = [
  "address",
  "socket_mode",
  "socket_group",
  "min_free_space",
  "log_level",
  "log_format",
  "kernel_threads",
] as const;
const POOL_KEYS = ["data_file", "meta_file", "data_size", "meta_size", "block_size", "low_water_mark"] as const;

type MainKey = (typeof CONTAINERD_KEYS)[number] | (typeof THINSNAP_KEYS)[number];
type PoolKey = (typeof POOL_KEYS)[number];

type Settings = Partial<Omit<Config, "pool">>;
type PoolSettings = Partial<PoolConfig>;

/** Config field -> TOML key, for messages about overrides and derived values. */
const FIELD_KEY: Record<keyof Omit<Config, "pool">, MainKey> = {
  poolName: "pool_name",
  rootPath: "root_path",
  baseImageSize: "base_image_size",
  asyncRemove: "async_remove",
  discardBlocks: "discard_blocks",
  fsType: "fs_type",
  fsOptions: "fs_options",
  address: "address",
  socketMode: "socket_mode",
  socketGroup: "socket_group",
  minFreeSpace: "min_free_space",
  minFreeSpacePercent: "min_free_space",
  logLevel: "log_level",
  logFormat: "log_format",
  kernelThreads: "kernel_threads",
};
const POOL_FIELD_KEY: Record<keyof PoolConfig, PoolKey> = {
  dataFile: "data_file",
  metaFile: "meta_file",
  dataSize: "data_size",
  metaSize: "meta_size",
  blockSize: "block_size",
  lowWaterMark: "low_water_mark",
};

const isMainKey = (k: string): k is MainKey =>
  (CONTAINERD_KEYS as readonly string[]).includes(k) || (THINSNAP_KEYS as readonly string[]).includes(k);
const isContainerdKey = (k: string): boolean => (CONTAINERD_KEYS as readonly string[]).includes(k);
const isPoolKey = (k: string): k is PoolKey => (POOL_KEYS as readonly string[]).includes(k);

// ---------------------------------------------------------------------------
// TOML value helpers

function isTable(v: TomlValue | undefined): v is TomlTable {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Date) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
}

function typeName(v: TomlValue): string {
  if (typeof v === "string") return "a string";
  if (typeof v === "bigint") return "an integer";
  if (typeof v === "number") return "a float";
  if (typeof v === "boolean") return "a boolean";
  if (Array.isArray(v)) return "an array";
  if (isTable(v)) return "a table";
  return "a date-time";
}

/** Renders a TOML value for messages (short, TOML-like). */
function render(v: TomlValue): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint" || typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `[${v.map(render).join(", ")}]`;
  if (isTable(v)) return `{ ${Object.keys(v).map((k) => `${k} = ${render(v[k] as TomlValue)}`).join(", ")} }`;
  if (v instanceof Date) return v.toISOString(); // TomlDate: TOML's own form
  return String(v);
}

function renderTyped(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (v === null) return "null";
  if (typeof v === "bigint" || typeof v === "number" || typeof v === "boolean") return String(v);
  return JSON.stringify(v) ?? String(v);
}

function asString(v: TomlValue): string {
  if (typeof v !== "string") throw new ValueError(`must be a string, not ${typeName(v)}`);
  return v;
}

function asBool(v: TomlValue): boolean {
  if (typeof v !== "boolean") throw new ValueError(`must be true or false, not ${typeName(v)}`);
  return v;
}

function asEnum<T extends string>(v: TomlValue, allowed: readonly T[]): T {
  const s = asString(v);
  const found = allowed.find((a) => a === s);
  if (found === undefined) throw new ValueError(`must be one of ${allowed.map((a) => `"${a}"`).join(", ")}`);
  return found;
}

/** A size: a go-units string ("10GB", "512MiB") or an integer number of bytes. */
function asSize(v: TomlValue): bigint {
  if (typeof v === "bigint") {
    if (v < 0n) throw new ValueError("must not be negative");
    return v;
  }
  if (typeof v === "string") {
    try {
      return parseSize(v);
    } catch (e) {
      throw new ValueError(`${e instanceof Error ? e.message : String(e)} (examples: "10GB", "512MiB", "64k", 1048576)`);
    }
  }
  if (typeof v === "number") {
    throw new ValueError(`must be an integer number of bytes or a size string such as "1.5GB", not a float`);
  }
  throw new ValueError(`must be a size string such as "10GB" or an integer number of bytes, not ${typeName(v)}`);
}

function asCount(v: TomlValue): bigint {
  if (typeof v !== "bigint") throw new ValueError(`must be an integer, not ${typeName(v)}`);
  if (v < 0n) throw new ValueError("must not be negative");
  return v;
}

const PERCENT_RE = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/;

// ---------------------------------------------------------------------------
// Locating keys in the TOML text

interface KeyPath {
  parts: string[];
  end: number;
}

/** Parses a dotted TOML key ("a", "a.b", 'plugins."x.y"') starting at pos. */
function parseKeyPath(s: string, pos: number): KeyPath | null {
  const parts: string[] = [];
  let i = pos;
  for (;;) {
    while (s[i] === " " || s[i] === "\t") i++;
    const c = s[i];
    if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') j += s[j] === "\\" ? 2 : 1;
      if (j >= s.length) return null;
      const raw = s.slice(i, j + 1);
      let part: string;
      try {
        const decoded: unknown = JSON.parse(raw);
        part = typeof decoded === "string" ? decoded : raw.slice(1, -1);
      } catch {
        part = raw.slice(1, -1);
      }
      parts.push(part);
      i = j + 1;
    } else if (c === "'") {
      const j = s.indexOf("'", i + 1);
      if (j < 0) return null;
      parts.push(s.slice(i + 1, j));
      i = j + 1;
    } else {
      const m = /^[A-Za-z0-9_-]+/.exec(s.slice(i));
      if (m === null) return null;
      parts.push(m[0]);
      i += m[0].length;
    }
    while (s[i] === " " || s[i] === "\t") i++;
    if (s[i] !== ".") return { parts, end: i };
    i++;
  }
}

const samePath = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);
const isPrefix = (p: readonly string[], of: readonly string[]): boolean =>
  p.length < of.length && p.every((x, i) => x === of[i]);

/**
 * 1-based line where the key at `path` (table names then key) is defined in
 * the TOML text, or where the table `path` is opened. Understands [table]
 * and [[array]] headers, dotted and quoted keys and multi-line strings.
 * When the exact key is not written out, answers the first line that
 * defines a parent of it (a key inside an inline table: the enclosing key)
 * or a child of it (a table only opened implicitly: its first sub-table).
 * Returns null when the key cannot be found.
 */
export function findKeyLine(text: string, path: readonly string[]): number | null {
  const lines = text.split(/\r?\n/);
  let table: string[] = [];
  let inString: '"""' | "'''" | null = null;
  let fallback: number | null = null;
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n] ?? "";
    if (inString !== null) {
      if (line.includes(inString)) inString = null;
      continue;
    }
    const start = line.length - line.trimStart().length;
    const c = line[start];
    if (c === undefined || c === "#") continue;
    if (c === "[") {
      const open = line[start + 1] === "[" ? start + 2 : start + 1;
      const kp = parseKeyPath(line, open);
      if (kp === null) continue;
      table = kp.parts;
      if (samePath(table, path)) return n + 1;
      if (fallback === null && isPrefix(path, table)) fallback = n + 1;
      continue;
    }
    const kp = parseKeyPath(line, start);
    if (kp === null || line[kp.end] !== "=") continue;
    const full = table.concat(kp.parts);
    if (samePath(full, path)) return n + 1;
    if (fallback === null && (isPrefix(full, path) || isPrefix(path, full))) fallback = n + 1;
    const rest = line.slice(kp.end + 1).trimStart();
    for (const q of ['"""', "'''"] as const) {
      if (rest.startsWith(q) && !rest.slice(3).includes(q)) inString = q;
    }
  }
  return fallback;
}

// ---------------------------------------------------------------------------
// Parsing a document into a layer of settings

interface Layer {
  settings: Settings;
  /** undefined: no [pool]; an object: [pool] given (maybe empty). */
  pool: PoolSettings | undefined;
  /** TOML key ("pool_name", "pool.data_size") -> where it was set. */
  where: Map<string, Loc>;
  /** The file (for issues not tied to a key), null for none. */
  file: string | null;
  /** The (default) file did not exist: defaults were used. */
  missing: boolean;
}

type Section =
  | { kind: "thinsnap"; table: TomlTable; prefix: string[] }
  | { kind: "containerd"; table: TomlTable; prefix: string[] };

function sectionLabel(prefix: readonly string[]): string {
  return prefix.map((p) => (/^[A-Za-z0-9_-]+$/.test(p) ? p : JSON.stringify(p))).join(".");
}

function editDistance(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0] ?? 0;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j] ?? 0;
      d[j] = Math.min((d[j] ?? 0) + 1, (d[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] ?? 0;
}

function suggest(key: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const k of known) {
    const dist = editDistance(key.toLowerCase(), k);
    if (dist < bestD) {
      best = k;
      bestD = dist;
    }
  }
  return best;
}

function pickSection(doc: TomlTable, file: string, text: string): Section {
  if (!("plugins" in doc)) return { kind: "thinsnap", table: doc, prefix: [] };
  const plugins = doc["plugins"];
  const loc = { file, line: findKeyLine(text, ["plugins"]) };
  if (!isTable(plugins)) {
    throw new ConfigError([makeIssue(loc, "plugins", null, "must be a table (a containerd config's [plugins])")]);
  }
  const long = plugins[CONTAINERD_PLUGIN_URI];
  const short = plugins[CONTAINERD_PLUGIN_ID];
  const version = doc["version"];
  let name: string;
  if (long !== undefined && short !== undefined) {
    name = typeof version === "bigint" && version >= 2n ? CONTAINERD_PLUGIN_URI : CONTAINERD_PLUGIN_ID;
  } else if (long !== undefined) {
    name = CONTAINERD_PLUGIN_URI;
  } else if (short !== undefined) {
    name = CONTAINERD_PLUGIN_ID;
  } else {
    throw new ConfigError([
      makeIssue(
        loc,
        null,
        null,
        `looks like a containerd config (it has [plugins]) but has no ` +
          `[plugins."${CONTAINERD_PLUGIN_URI}"] or [plugins.${CONTAINERD_PLUGIN_ID}] section`,
      ),
    ]);
  }
  const prefix = ["plugins", name];
  const table = plugins[name];
  if (!isTable(table)) {
    throw new ConfigError([
      makeIssue({ file, line: findKeyLine(text, prefix) }, sectionLabel(prefix), null, "must be a table"),
    ]);
  }
  return { kind: "containerd", table, prefix };
}

function applyMainKey(key: MainKey, v: TomlValue, s: Settings, lineText: string | null): void {
  switch (key) {
    case "pool_name":
      s.poolName = asString(v);
      return;
    case "root_path":
      s.rootPath = asString(v);
      return;
    case "base_image_size":
      s.baseImageSize = asSize(v);
      return;
    case "async_remove":
      s.asyncRemove = asBool(v);
      return;
    case "discard_blocks":
      s.discardBlocks = asBool(v);
      return;
    case "fs_type":
      s.fsType = asEnum(v, FS_TYPES);
      return;
    case "fs_options":
      s.fsOptions = asString(v);
      return;
    case "address":
      s.address = asString(v);
      return;
    case "socket_mode":
      s.socketMode = parseSocketMode(v, lineText);
      return;
    case "socket_group":
      if (typeof v === "bigint") {
        if (v < 0n || v > 0xfffffffen) throw new ValueError("must be a group name or a gid (0..4294967294)");
        s.socketGroup = v.toString();
      } else {
        const g = asString(v);
        s.socketGroup = g === "" ? null : g;
      }
      return;
    case "min_free_space": {
      if (typeof v === "string") {
        const m = PERCENT_RE.exec(v);
        if (m !== null) {
          s.minFreeSpacePercent = Number(m[1]);
          s.minFreeSpace = 0n;
          return;
        }
      }
      s.minFreeSpace = asSize(v);
      s.minFreeSpacePercent = null;
      return;
    }
    case "log_level":
      s.logLevel = asEnum(v, LOG_LEVELS);
      return;
    case "log_format":
      s.logFormat = asEnum(v, LOG_FORMATS);
      return;
    case "kernel_threads":
      s.kernelThreads = Number(asCount(v));
      return;
  }
}

/**
 * socket_mode: a string of octal digits ("0660", "660", "0o660"), or a TOML
 * integer written in octal (0o660). Decimal integers are refused: 660 would
 * mean 0o1224 and 400 would silently mean 0o620.
 */
function parseSocketMode(v: TomlValue, lineText: string | null): number {
  if (typeof v === "string") {
    const m = /^(?:0o)?([0-7]{1,4})$/.exec(v.trim());
    if (m === null) throw new ValueError(`must be octal permission bits such as "0660"`);
    return parseInt(m[1] ?? "", 8);
  }
  if (typeof v === "bigint") {
    if (lineText !== null) {
      const m = /socket_mode["']?\s*=\s*([-+]?[0-9A-Za-z_]+)/.exec(lineText);
      if (m !== null && !(m[1] ?? "").startsWith("0o")) {
        throw new ValueError(`integers must be written in octal (0o660), or use a string ("0660")`);
      }
    }
    if (v < 0n || v > 0o777n) throw new ValueError("must be permission bits between 0 and 0o777");
    return Number(v);
  }
  throw new ValueError(`must be octal permission bits such as "0660" or 0o660, not ${typeName(v)}`);
}

function applyPoolKey(key: PoolKey, v: TomlValue, p: PoolSettings): void {
  switch (key) {
    case "data_file":
      p.dataFile = asString(v);
      return;
    case "meta_file":
      p.metaFile = asString(v);
      return;
    case "data_size":
      p.dataSize = asSize(v);
      return;
    case "meta_size":
      p.metaSize = asSize(v);
      return;
    case "block_size":
      p.blockSize = asSize(v);
      return;
    case "low_water_mark":
      p.lowWaterMark = asCount(v);
      return;
  }
}

interface Parsed {
  layer: Layer;
  /** Problems with single keys (unknown keys, wrong types, unparsable values). */
  issues: ConfigIssue[];
}

function parseDocument(text: string, file: string): Parsed {
  let doc: TomlTable;
  try {
    doc = parse(text, { integersAsBigInt: true });
  } catch (e) {
    if (e instanceof TomlError) {
      const what = (e.message.split("\n")[0] ?? e.message).replace(/^Invalid TOML document: /, "");
      const issue = makeIssue(
        { file, line: e.line, column: e.column },
        null,
        null,
        `TOML syntax error: ${what}\n${e.codeblock.trimEnd()}`,
      );
      throw new ConfigError([issue], { cause: e });
    }
    throw e;
  }

  const lines = text.split(/\r?\n/);
  const section = pickSection(doc, file, text);
  const layer = emptyLayer(file, false);
  const issues: ConfigIssue[] = [];

  const locate = (path: string[]): number | null => findKeyLine(text, section.prefix.concat(path));

  for (const key of Object.keys(section.table)) {
    const v = section.table[key] as TomlValue;
    const line = locate([key]);
    const loc = { file, line };

    if (section.kind === "thinsnap" && key === "pool") {
      if (!isTable(v)) {
        issues.push(makeIssue(loc, "pool", render(v), `must be a table ([pool]), not ${typeName(v)}`));
        continue;
      }
      const pool: PoolSettings = {};
      layer.pool = pool;
      layer.where.set("pool", { file, line, value: null });
      for (const pk of Object.keys(v)) {
        const pv = v[pk] as TomlValue;
        const pline = locate(["pool", pk]);
        const ploc = { file, line: pline };
        if (!isPoolKey(pk)) {
          const hint = suggest(pk, POOL_KEYS);
          issues.push(
            makeIssue(
              ploc,
              `pool.${pk}`,
              null,
              `unknown key "${pk}" in [pool]` +
                (hint !== null ? ` (did you mean "${hint}"?)` : ` (known: ${POOL_KEYS.join(", ")})`),
              false,
            ),
          );
          continue;
        }
        try {
          applyPoolKey(pk, pv, pool);
          layer.where.set(`pool.${pk}`, { file, line: pline, value: render(pv) });
        } catch (e) {
          if (!(e instanceof ValueError)) throw e;
          issues.push(makeIssue(ploc, `pool.${pk}`, render(pv), e.message));
        }
      }
      continue;
    }

    const allowed = section.kind === "containerd" ? isContainerdKey(key) : isMainKey(key);
    if (!allowed || !isMainKey(key)) {
      if (section.kind === "containerd") {
        const label = `[${sectionLabel(section.prefix)}]`;
        const msg = isMainKey(key)
          ? `"${key}" is a thinsnap setting, not a containerd devmapper one: put it in thinsnap's own config file ` +
            `or pass it as an override (${label} may only hold ${CONTAINERD_KEYS.join(", ")})`
          : `unknown key "${key}" in ${label}` +
            ((h) => (h !== null ? ` (did you mean "${h}"?)` : ` (known: ${CONTAINERD_KEYS.join(", ")})`))(
              suggest(key, CONTAINERD_KEYS),
            );
        issues.push(makeIssue(loc, key, null, msg, false));
      } else {
        const known = [...CONTAINERD_KEYS, ...THINSNAP_KEYS, "pool"];
        const hint = suggest(key, known);
        issues.push(
          makeIssue(
            loc,
            key,
            null,
            `unknown key "${key}"` + (hint !== null ? ` (did you mean "${hint}"?)` : ` (known: ${known.join(", ")})`),
            false,
          ),
        );
      }
      continue;
    }
    try {
      applyMainKey(key, v, layer.settings, line !== null ? (lines[line - 1] ?? null) : null);
      layer.where.set(key, { file, line, value: render(v) });
    } catch (e) {
      if (!(e instanceof ValueError)) throw e;
      issues.push(makeIssue(loc, key, render(v), e.message));
    }
  }

  return { layer, issues };
}

function emptyLayer(file: string | null, missing: boolean): Layer {
  return { settings: {}, pool: undefined, where: new Map(), file, missing };
}

// ---------------------------------------------------------------------------
// Overrides, defaults, validation

function applyOverrides(layer: Layer, o: ConfigOverrides): void {
  const s = layer.settings;
  const set = <K extends keyof Omit<Config, "pool">>(field: K, value: Config[K]): void => {
    s[field] = value;
    layer.where.set(FIELD_KEY[field], { file: null, line: null, value: renderTyped(value) });
  };
  const fields = Object.keys(FIELD_KEY) as (keyof Omit<Config, "pool">)[];
  for (const field of fields) {
    if (field === "minFreeSpace" || field === "minFreeSpacePercent") continue;
    const value = o[field];
    if (value !== undefined) set(field, value as Config[typeof field]);
  }
  // min_free_space is one setting stored in two fields: bytes or a percentage.
  if (o.minFreeSpace !== undefined || o.minFreeSpacePercent !== undefined) {
    s.minFreeSpace = o.minFreeSpace ?? 0n;
    s.minFreeSpacePercent = o.minFreeSpacePercent ?? null;
    const shown =
      o.minFreeSpacePercent !== undefined && o.minFreeSpacePercent !== null
        ? `"${o.minFreeSpacePercent}%"`
        : renderTyped(s.minFreeSpace);
    layer.where.set("min_free_space", { file: null, line: null, value: shown });
  }
  if (o.pool === null) {
    layer.pool = undefined;
  } else if (o.pool !== undefined) {
    const pool: PoolSettings = layer.pool ?? {};
    layer.pool = pool;
    for (const f of Object.keys(POOL_FIELD_KEY) as (keyof PoolConfig)[]) {
      const value = o.pool[f];
      if (value === undefined) continue;
      if (f === "dataFile" || f === "metaFile") pool[f] = value as string;
      else pool[f] = value as bigint;
      layer.where.set(`pool.${POOL_FIELD_KEY[f]}`, { file: null, line: null, value: renderTyped(value) });
    }
  }
}

const utf8Length = (s: string): number => new TextEncoder().encode(s).length;

function validate(cfg: Config, layer: Layer): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const fail = (key: string, message: string, shown?: string): void => {
    const w = layer.where.get(key);
    const loc = w ?? { file: layer.file, line: null, value: null };
    const value = shown ?? w?.value ?? null;
    issues.push(makeIssue(loc, key, value, w === undefined ? `${message} (default or derived value)` : message));
  };

  // pool_name: a device-mapper name.
  const name = cfg.poolName;
  if (name === "") fail("pool_name", "must not be empty");
  else if (name.includes("/")) fail("pool_name", `must not contain "/" (give the name, not /dev/mapper/${name})`);
  else if (name === "." || name === "..") fail("pool_name", `"." and ".." are not valid device-mapper names`);
  else if (/[\s\x00-\x1f\x7f]/.test(name)) fail("pool_name", "must not contain blanks or control characters");
  else if (utf8Length(name) > DM_NAME_MAX) fail("pool_name", `must be at most ${DM_NAME_MAX} bytes long`);

  if (!cfg.rootPath.startsWith("/")) fail("root_path", "must be an absolute path");
  else if (cfg.rootPath.includes("\0")) fail("root_path", "must not contain NUL");

  const bis = cfg.baseImageSize;
  if (bis <= 0n) fail("base_image_size", "must be greater than 0");
  else if (bis % SECTOR_SIZE !== 0n) {
    const down = (bis / SECTOR_SIZE) * SECTOR_SIZE;
    fail(
      "base_image_size",
      `must be a multiple of 512 bytes (device-mapper sectors); got ${bis} bytes, try ${down > 0n ? down : SECTOR_SIZE}`,
    );
  } else if (bis < MIN_BASE_IMAGE_SIZE) fail("base_image_size", `must be at least ${formatSize(MIN_BASE_IMAGE_SIZE)}`);
  else if (cfg.fsType === "xfs" && bis < MIN_XFS_SIZE) {
    fail("base_image_size", `must be at least ${formatSize(MIN_XFS_SIZE)} with fs_type "xfs" (mkfs.xfs refuses smaller)`);
  }

  if (!FS_TYPES.includes(cfg.fsType)) fail("fs_type", `must be one of ${FS_TYPES.join(", ")}`);
  if (cfg.fsOptions.includes("\0")) fail("fs_options", "must not contain NUL");

  if (!cfg.address.startsWith("/")) fail("address", "must be an absolute path of a unix socket");
  else if (utf8Length(cfg.address) > SOCKET_PATH_MAX) {
    fail("address", `must be at most ${SOCKET_PATH_MAX} bytes long (the limit of a unix socket path)`);
  }

  if (!Number.isInteger(cfg.socketMode) || cfg.socketMode < 0 || cfg.socketMode > 0o777) {
    fail("socket_mode", "must be permission bits between 0 and 0o777");
  }
  if (cfg.socketGroup !== null && !/^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d{1,10})$/.test(cfg.socketGroup)) {
    fail("socket_group", "must be a group name or a numeric gid");
  }

  if (cfg.minFreeSpace < 0n) fail("min_free_space", "must not be negative");
  if (cfg.minFreeSpacePercent !== null) {
    const p = cfg.minFreeSpacePercent;
    if (!Number.isFinite(p) || p < 0 || p >= 100) fail("min_free_space", "a percentage must be at least 0% and below 100%");
    else if (cfg.minFreeSpace !== 0n) fail("min_free_space", "give either bytes or a percentage, not both");
  }

  if (!LOG_LEVELS.includes(cfg.logLevel)) fail("log_level", `must be one of ${LOG_LEVELS.join(", ")}`);
  if (!LOG_FORMATS.includes(cfg.logFormat)) fail("log_format", `must be one of ${LOG_FORMATS.join(", ")}`);
  if (!Number.isInteger(cfg.kernelThreads) || cfg.kernelThreads < 0 || cfg.kernelThreads > MAX_KERNEL_THREADS) {
    fail("kernel_threads", `must be an integer from 0 to ${MAX_KERNEL_THREADS}`);
  }

  const pool = cfg.pool;
  if (pool !== null) {
    let blockOk = true;
    const bs = pool.blockSize;
    if (bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || bs % MIN_BLOCK_SIZE !== 0n) {
      fail("pool.block_size", "must be a multiple of 64 KiB between 64 KiB and 1 GiB (dm-thin's limits)");
      blockOk = false;
    }
    const ds = pool.dataSize;
    let dataOk = blockOk;
    if (blockOk && (ds < bs || ds % bs !== 0n)) {
      fail("pool.data_size", `must be a non-zero multiple of block_size (${formatSize(bs)}); got ${ds} bytes`);
      dataOk = false;
    }
    const ms = pool.metaSize;
    if (ms < MIN_META_SIZE || ms > MAX_META_SIZE) fail("pool.meta_size", "must be between 2 MiB and 16 GiB");
    else if (ms % META_BLOCK_SIZE !== 0n) fail("pool.meta_size", "must be a multiple of 4 KiB (the metadata block size)");
    if (dataOk && pool.lowWaterMark >= ds / bs) {
      fail("pool.low_water_mark", `must be below the number of data blocks (${ds / bs})`);
    }
    if (pool.lowWaterMark < 0n) fail("pool.low_water_mark", "must not be negative");
    // Derived file names are absolute whenever root_path is (checked above).
    const given = (k: string): boolean => layer.where.has(k);
    if (given("pool.data_file") && !pool.dataFile.startsWith("/")) fail("pool.data_file", "must be an absolute path");
    if (given("pool.meta_file") && !pool.metaFile.startsWith("/")) fail("pool.meta_file", "must be an absolute path");
    if (pool.dataFile === pool.metaFile) fail("pool.meta_file", "must differ from data_file");
  }
  return issues;
}

function resolve(layer: Layer): Config {
  const s = layer.settings;
  if (s.poolName === undefined) {
    const where = layer.file === null ? null : layer.missing ? `${layer.file} (not found)` : layer.file;
    const issue = makeIssue(
      { file: where, line: null },
      "pool_name",
      null,
      "required: the name of the thin-pool device, without /dev/mapper/ " +
        "(set pool_name in the config file or pass it as an override)",
    );
    throw new ConfigError([{ ...issue, file: layer.file }]);
  }
  const rootPath = s.rootPath ?? DEFAULTS.rootPath;
  let pool: PoolConfig | null = null;
  if (layer.pool !== undefined) {
    const p = layer.pool;
    const files = defaultPoolFiles(rootPath);
    const dataSize = p.dataSize ?? POOL_DEFAULTS.dataSize;
    const blockSize = p.blockSize ?? POOL_DEFAULTS.blockSize;
    pool = {
      dataFile: p.dataFile ?? files.dataFile,
      metaFile: p.metaFile ?? files.metaFile,
      dataSize,
      metaSize: p.metaSize ?? defaultMetaSize(dataSize, blockSize),
      blockSize,
      lowWaterMark: p.lowWaterMark ?? defaultLowWaterMark(dataSize, blockSize),
    };
  }
  const cfg: Config = {
    poolName: s.poolName,
    rootPath,
    baseImageSize: s.baseImageSize ?? DEFAULTS.baseImageSize,
    asyncRemove: s.asyncRemove ?? DEFAULTS.asyncRemove,
    discardBlocks: s.discardBlocks ?? DEFAULTS.discardBlocks,
    fsType: s.fsType ?? DEFAULTS.fsType,
    fsOptions: s.fsOptions ?? DEFAULTS.fsOptions,
    address: s.address ?? DEFAULTS.address,
    socketMode: s.socketMode ?? DEFAULTS.socketMode,
    socketGroup: s.socketGroup !== undefined ? s.socketGroup : DEFAULTS.socketGroup,
    minFreeSpace: s.minFreeSpace ?? DEFAULTS.minFreeSpace,
    minFreeSpacePercent: s.minFreeSpacePercent !== undefined ? s.minFreeSpacePercent : DEFAULTS.minFreeSpacePercent,
    logLevel: s.logLevel ?? DEFAULTS.logLevel,
    logFormat: s.logFormat ?? DEFAULTS.logFormat,
    kernelThreads: s.kernelThreads ?? DEFAULTS.kernelThreads,
    pool,
  };
  const issues = validate(cfg, layer);
  if (issues.length > 0) throw new ConfigError(issues);
  return cfg;
}

// ---------------------------------------------------------------------------
// Entry points

/**
 * Parses and validates a configuration document (thinsnap's own or a
 * containerd config.toml). Pure: `file` is used only in messages.
 * Throws ConfigError.
 */
export function parseConfig(text: string, file: string): Config {
  return finish(parseDocument(text, file));
}

/**
 * Resolves and validates; when some keys could not be read, the validation
 * problems of the other keys are reported with them, in line order.
 */
function finish(parsed: Parsed): Config {
  const { layer, issues } = parsed;
  if (issues.length === 0) return resolve(layer);
  const reported = new Set(issues.map((i) => i.key));
  let more: readonly ConfigIssue[] = [];
  const settings: Settings = { ...layer.settings };
  if (settings.poolName === undefined && reported.has("pool_name")) settings.poolName = "placeholder";
  try {
    resolve({ ...layer, settings });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    more = e.issues.filter((i) => !reported.has(i.key));
  }
  const all = [...issues, ...more].sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  throw new ConfigError(all);
}

/**
 * Reads the configuration file, applies the overrides on top and validates.
 * path null means DEFAULT_CONFIG_PATH, which may be absent (then defaults
 * are used); an explicit path that does not exist is an error.
 * Throws ConfigError.
 */
export async function loadConfig(path: string | null, overrides: ConfigOverrides = {}): Promise<Config> {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string | null = null;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = typeof e === "object" && e !== null && "code" in e ? (e as { code: unknown }).code : undefined;
    if (!(code === "ENOENT" && path === null)) {
      const why =
        code === "ENOENT" ? "config file not found" : `cannot read config file: ${e instanceof Error ? e.message : String(e)}`;
      throw new ConfigError([makeIssue({ file, line: null }, null, null, why)], { cause: e });
    }
  }
  const parsed: Parsed = text !== null ? parseDocument(text, file) : { layer: emptyLayer(file, true), issues: [] };
  applyOverrides(parsed.layer, overrides);
  return finish(parsed);
}
