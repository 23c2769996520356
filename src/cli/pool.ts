/** `thinsnap pool create|status|destroy`: thin-pool management without dmsetup (flags and output; the work is in src/pool). */
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Config } from "../config/config.ts";
import { configToml } from "../config/render.ts";
import { hostSnippet } from "../install/snippets.ts";
import { formatSize } from "../config/units.ts";
import type { DeviceMapper } from "../dm/device-mapper.ts";
import type { ThinPool } from "../dm/thin-pool.ts";
import { poolFigures } from "../metrics/pool-watch.ts";
import type { SpaceLimits } from "../snapshotter/space.ts";
import * as geo from "../pool/geometry.ts";
import { createDevicePool, createFilePool, destroyPool, poolLoops } from "../pool/provision.ts";
import { thinDevicesOfPool } from "../dm/pool-contents.ts";
import { Store } from "../store/store.ts";
import { didYouMean, flagHelp, type FlagSpec, type Parsed, str, UsageError } from "./args.ts";
import { CONFIG_FLAGS, configFile, configFromFlags, refuseNoRoom } from "./config-flags.ts";
import { openDeviceMapper, openPool, refuseWhileServing, requireRoot } from "./runtime.ts";
import { createLogger, type Logger } from "../log.ts";

export const POOL_FLAGS: Record<string, FlagSpec> = {
  ...CONFIG_FLAGS,
  name: { help: "same as --pool-name" },
  "data-dev": { help: "create: block device for data (instead of a data file)" },
  "meta-dev": { help: "create: block device for metadata (with --data-dev)" },
  "write-config": { help: "create: also write the config it made to this file (refused if it exists, unless --force)" },
  force: {
    type: "boolean",
    help: "create: overwrite devices/files holding data, and the --write-config file; destroy: also a pool not on loop devices",
  },
  "delete-files": { type: "boolean", help: "destroy: also delete the data and metadata files (the store is then moved aside)" },
  json: { type: "boolean", help: "status: print JSON" },
  help: { type: "boolean", help: "show this help" },
};

export const POOL_HELP = `Usage:
  thinsnap pool create [--config FILE] [--pool-name NAME] [--data-file FILE] [--data-size SIZE] [--meta-file FILE]
                       [--meta-size SIZE] [--block-size SIZE] [--low-water-mark N] [--root DIR] [--address SOCKET]
                       [--write-config FILE] [--force]
  thinsnap pool create --data-dev DEV --meta-dev DEV [--pool-name NAME] [--block-size SIZE] [--low-water-mark N]
                       [--write-config FILE] [--force]
  thinsnap pool status [--config FILE] [--pool-name NAME] [--root DIR] [--json]
  thinsnap pool destroy [--config FILE] [--pool-name NAME] [--root DIR] [--address SOCKET] [--delete-files] [--force]

Every subcommand reads the config (--config, else /etc/thinsnap/config.toml,
else the embedded default) and the flags override it: without flags, "pool
create" makes the [pool] of the config. "pool create" prints the config it
made on stdout (valid TOML: "thinsnap pool create > config.toml" works) and
its progress and the containerd snippet on stderr. "pool destroy" is refused
while thinsnap serve runs on the pool or a thin device of it is in use.

Flags:
${flagHelp(POOL_FLAGS)}
`;

/** --name is --pool-name (kept for scripts); giving both different is an error. */
function poolConfig(p: Parsed): Promise<Config> {
  const name = str(p, "name");
  const poolName = str(p, "pool-name");
  if (name !== undefined && poolName !== undefined && name !== poolName) {
    throw new UsageError(`--name ${name} and --pool-name ${poolName} disagree (they are the same flag)`);
  }
  if (name !== undefined) p.flags["pool-name"] = name;
  return configFromFlags(p);
}

export async function poolCommand(sub: string | undefined, p: Parsed): Promise<number> {
  switch (sub) {
    case "create":
      return create(p);
    case "status":
      return status(p);
    case "destroy":
      return destroy(p);
    default:
      throw new UsageError(
        sub === undefined
          ? "which one? create, status or destroy"
          : `unknown subcommand "${sub}"${didYouMean(sub, ["create", "status", "destroy"])}`,
      );
  }
}

const POOL_TABLE_FLAGS = ["data-file", "meta-file", "data-size", "meta-size"];

async function create(p: Parsed): Promise<number> {
  const dataDev = str(p, "data-dev");
  const metaDev = str(p, "meta-dev");
  const onDevices = dataDev !== undefined || metaDev !== undefined;
  if (onDevices) {
    const fileFlag = POOL_TABLE_FLAGS.find((f) => str(p, f) !== undefined);
    if (fileFlag !== undefined) throw new UsageError(`use either --${fileFlag} or --data-dev/--meta-dev`);
    if (dataDev === undefined || metaDev === undefined) throw new UsageError("--data-dev and --meta-dev go together");
  }
  const cfg = await poolConfig(p);
  const force = p.flags.force === true;
  const out = str(p, "write-config");
  if (out !== undefined && existsSync(out) && !force) {
    throw new UsageError(`--write-config ${out}: the file exists; use --force to overwrite it`);
  }
  const spec = onDevices ? null : cfg.pool;
  if (!onDevices && spec === null) {
    throw new UsageError(
      `${configFile(p) ?? "the config"} has no [pool] table: give --data-file (and --data-size), or --data-dev and --meta-dev`,
    );
  }
  if (spec !== null) refuseNoRoom(p, cfg);
  requireRoot("thinsnap pool create");
  const log = createLogger(cfg.logLevel, cfg.logFormat);
  const dm = openDeviceMapper();
  const t0 = performance.now();
  const blockSize = spec?.blockSize ?? cfg.pool?.blockSize ?? geo.DEFAULT_BLOCK_SIZE;
  const lowWaterMark = str(p, "low-water-mark") !== undefined ? cfg.pool?.lowWaterMark : undefined;
  const pool =
    spec !== null
      ? createFilePool(dm, cfg.poolName, spec, force, log)
      : createDevicePool(dm, cfg.poolName, { dataDev: dataDev ?? "", metaDev: metaDev ?? "", blockSize, lowWaterMark }, force);
  const made = madeConfig(cfg, pool, spec !== null);
  const toml = configToml(made);
  process.stderr.write(`${summary(cfg.poolName, pool, performance.now() - t0)}
`);
  if (out !== undefined) {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, toml, { mode: 0o644 });
    process.stderr.write(`wrote the config to ${out}
`);
  }
  process.stderr.write(`\n${hostSnippet(made)}`);
  process.stdout.write(`# thinsnap config for pool "${cfg.poolName}" (thinsnap pool create)\n${toml}`);
  return 0;
}

/** The config that serves the pool just made: base_image_size suited to its size unless one was given. */
function madeConfig(cfg: Config, pool: ThinPool, fileBacked: boolean): Config {
  if (fileBacked) return cfg; // base_image_size is derived from [pool] data_size already
  const dataBytes = pool.status().totalDataBlocks * pool.blockSize();
  return { ...cfg, pool: null, baseImageSize: geo.baseImageSizeFor(dataBytes) };
}

function summary(name: string, pool: ThinPool, ms: number): string {
  const st = pool.status();
  const bs = pool.blockSize();
  return `created thin-pool "${name}": ${formatSize(st.totalDataBlocks * bs)} data in ${formatSize(bs)} blocks, ` +
    `${st.totalMetadataBlocks} metadata blocks (${Math.round(ms)} ms)`;
}

/** The JSON of `thinsnap pool status --json`. */
export interface PoolReport {
  pool: string;
  transactionId: string;
  mode: string;
  needsCheck: boolean;
  blockSize: string;
  data: { used: string; total: string; usedBytes: string; totalBytes: string; percent: number };
  metadata: { used: string; total: string; percent: number };
  /** The pool watcher's thresholds (src/metrics/pool-watch.ts): null where the pool has none. */
  thresholds: {
    freeBytes: string;
    lowWaterMark: { bytes: string; below: boolean } | null;
    minFreeSpace: { bytes: string; below: boolean } | null;
  };
  activeDevices: string[];
  snapshots: Record<string, number> | null;
  devicesByState: Record<string, number> | null;
}

async function status(p: Parsed): Promise<number> {
  const cfg = await poolConfig(p);
  const name = cfg.poolName;
  requireRoot("thinsnap pool status");
  const dm = openDeviceMapper();
  const pool = openPool(dm, name);
  const r = poolReport(dm, pool, name, `${cfg.rootPath}/metadata.db`, cfg);
  process.stdout.write(p.flags.json === true ? `${JSON.stringify(r, null, 2)}\n` : poolReportText(r));
  return 0;
}

/** Reads the pool (kernel) and, if there is one at dbPath, the store. */
function poolReport(dm: DeviceMapper, pool: ThinPool, name: string, dbPath: string, limits: SpaceLimits): PoolReport {
  const st = pool.status();
  const bs = pool.blockSize();
  const f = poolFigures(st, bs, { lowWaterMarkBlocks: pool.table().lowWaterMark, limits });
  let snapshots: Record<string, number> | null = null;
  let devicesByState: Record<string, number> | null = null;
  if (existsSync(dbPath)) {
    const store = Store.open(dbPath);
    try {
      const c = store.counts();
      snapshots = nonZero(c.snapshots);
      devicesByState = nonZero(c.devices);
    } finally {
      store.close();
    }
  }
  const threshold = (bytes: bigint | null, below: boolean | null): { bytes: string; below: boolean } | null =>
    bytes === null ? null : { bytes: bytes.toString(), below: below === true };
  return {
    pool: name,
    transactionId: st.transactionId.toString(),
    mode: st.mode,
    needsCheck: st.needsCheck,
    blockSize: bs.toString(),
    data: {
      used: st.usedDataBlocks.toString(),
      total: st.totalDataBlocks.toString(),
      usedBytes: (st.usedDataBlocks * bs).toString(),
      totalBytes: f.dataSizeBytes.toString(),
      percent: f.dataUsedPercent,
    },
    metadata: {
      used: st.usedMetadataBlocks.toString(),
      total: st.totalMetadataBlocks.toString(),
      percent: f.metadataUsedPercent,
    },
    thresholds: {
      freeBytes: f.freeBytes.toString(),
      lowWaterMark: threshold(f.lowWaterMarkBytes, f.belowLowWater),
      minFreeSpace: threshold(f.minFreeSpaceBytes, f.belowMinFreeSpace),
    },
    activeDevices: thinDevicesOfPool(dm, name),
    snapshots,
    devicesByState,
  };
}

/** Only the kinds/states there are (the report's shape since before Store.counts). */
const nonZero = (c: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(c).filter(([, n]) => n > 0));

export function poolReportText(r: PoolReport): string {
  const bs = BigInt(r.blockSize);
  const size = (s: string): string => formatSize(BigInt(s));
  const threshold = (t: { bytes: string; below: boolean } | null, below: string): string =>
    t === null ? "none" : `at ${size(t.bytes)} free${t.below ? ` (BELOW IT: ${below})` : ""}`;
  const rows: [string, string][] = [
    ["pool", r.pool],
    ["mode", `${r.mode}${r.needsCheck ? " (needs_check: run thin_check)" : ""}`],
    ["transaction id", r.transactionId],
    ["data", `${size(r.data.usedBytes)} / ${size(r.data.totalBytes)} (${r.data.percent}%, ${r.data.used}/${r.data.total} blocks of ${formatSize(bs)})`],
    ["metadata", `${r.metadata.used}/${r.metadata.total} blocks (${r.metadata.percent}%)`],
    ["free data", size(r.thresholds.freeBytes)],
    ["low-water mark", threshold(r.thresholds.lowWaterMark, "extend the data device or free space soon")],
    ["min_free_space", threshold(r.thresholds.minFreeSpace, "new snapshots are refused")],
    ["active thin devices", String(r.activeDevices.length)],
  ];
  const counts = (c: Record<string, number>): string => Object.entries(c).map(([k, n]) => `${n} ${k}`).join(", ") || "none";
  if (r.snapshots) rows.push(["snapshots", counts(r.snapshots)]);
  if (r.devicesByState) rows.push(["devices by state", counts(r.devicesByState)]);
  const w = Math.max(...rows.map((x) => x[0].length)) + 2;
  return rows.map(([k, v]) => `${k.padEnd(w)}${v}`).join("\n") + "\n";
}

async function destroy(p: Parsed): Promise<number> {
  const cfg = await poolConfig(p);
  const name = cfg.poolName;
  requireRoot("thinsnap pool destroy");
  await refuseWhileServing(cfg, "pool destroy");
  const dm = openDeviceMapper();
  const deleteFiles = p.flags["delete-files"] === true;
  const log = createLogger(cfg.logLevel, cfg.logFormat);
  const pool = openPool(dm, name);
  const fileBacked = poolLoops(pool).length === 2;
  const files = destroyPool(dm, pool, { force: p.flags.force === true, deleteFiles }, log);
  process.stdout.write(`destroyed thin-pool "${name}"${files.length ? ` (files ${deleteFiles ? "deleted" : "kept"}: ${files.join(", ")})` : ""}\n`);
  // Removing a pool on block devices erases nothing: the data stays there, and so does its store.
  process.stdout.write(`${storeAfterDestroy(cfg.rootPath, deleteFiles && fileBacked, log)}\n`);
  return 0;
}

/**
 * The store describes the pool's thin devices: when the pool's contents are
 * gone it is moved aside (kept, in case), so that a new pool starts with a
 * new store; when the files are kept it stays with them.
 */
function storeAfterDestroy(rootPath: string, contentsGone: boolean, log: Logger): string {
  const db = `${rootPath}/metadata.db`;
  if (!existsSync(db)) return `no store at ${db}`;
  if (!contentsGone) return `store ${db} kept: it describes the data still on the pool's files or devices (serve reloads both)`;
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  let aside = `${db}.destroyed-${stamp}`;
  for (let n = 2; existsSync(aside); n++) aside = `${db}.destroyed-${stamp}-${n}`;
  for (const ext of ["", "-wal", "-shm"]) {
    if (existsSync(db + ext)) renameSync(db + ext, aside + ext);
  }
  log.debug("store moved aside", { from: db, to: aside });
  return `store moved aside: ${db} -> ${aside} (a new pool starts with a new store)`;
}
