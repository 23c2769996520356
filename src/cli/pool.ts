/** `thinsnap pool create|status|destroy`: thin-pool management without dmsetup (flags and output; the work is in src/pool). */
import { existsSync } from "node:fs";
import { DEFAULTS } from "../config/config.ts";
import { sizeText } from "../config/kinds.ts";
import { POOL_KEYS, type Entry } from "../config/keys.ts";
import type { PoolConfig } from "../config/types.ts";
import { formatSize, parseSize } from "../config/units.ts";
import type { DeviceMapper } from "../dm/device-mapper.ts";
import type { ThinPool } from "../dm/thin-pool.ts";
import { poolFigures } from "../metrics/pool-watch.ts";
import type { SpaceLimits } from "../snapshotter/space.ts";
import * as geo from "../pool/geometry.ts";
import { createDevicePool, createFilePool, destroyPool } from "../pool/provision.ts";
import { thinDevicesOfPool } from "../dm/pool-contents.ts";
import { Store } from "../store/store.ts";
import { flagHelp, type FlagSpec, type Parsed, str, UsageError } from "./args.ts";
import { CliError, openDeviceMapper, openPool, requireRoot } from "./runtime.ts";
import { createLogger } from "../log.ts";
import { containerdSnippet, defaultPlanOptions, detectContainerd } from "../install/snippets.ts";

export const POOL_FLAGS: Record<string, FlagSpec> = {
  name: { help: "thin-pool device name (pool_name)" },
  "data-dev": { help: "create: block device for data" },
  "meta-dev": { help: "create: block device for metadata" },
  "data-file": { help: "create/destroy: file for data (sparse, on a loop device)" },
  "meta-file": { help: "create/destroy: file for metadata", default: "<data-file>.meta" },
  "data-size": { help: "create: size of a new data file (e.g. 100G)", default: sizeText(geo.DEFAULT_DATA_SIZE) },
  "meta-size": { help: "create: size of a new metadata file", default: geo.META_SIZE_RULE },
  "block-size": {
    help: `create: data block size, a multiple of ${formatSize(geo.MIN_BLOCK_SIZE)} up to ${formatSize(geo.MAX_BLOCK_SIZE)}`,
    default: sizeText(geo.DEFAULT_BLOCK_SIZE),
  },
  "low-water-mark": { help: "create: free data blocks that raise a kernel event", default: geo.LOW_WATER_MARK_RULE },
  force: { type: "boolean", help: "create: overwrite devices holding data; destroy: also non-loop pools" },
  "delete-files": { type: "boolean", help: "destroy: also delete the data and metadata files" },
  root: { help: "status: state directory, to show snapshots by kind", default: DEFAULTS.rootPath },
  json: { type: "boolean", help: "status: print JSON" },
  help: { type: "boolean", help: "show this help" },
};

export const POOL_HELP = `Usage:
  thinsnap pool create --name NAME (--data-file FILE [--data-size 100G] | --data-dev DEV --meta-dev DEV) [flags]
  thinsnap pool status --name NAME [--root DIR] [--json]
  thinsnap pool destroy --name NAME [--delete-files]

Flags:
${flagHelp(POOL_FLAGS)}
`;

function need(p: Parsed, flag: string): string {
  const v = str(p, flag);
  if (!v) throw new UsageError(`--${flag} is required`);
  return v;
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
      throw new UsageError(`pool: unknown subcommand ${sub ?? "(none)"}: create, status or destroy`);
  }
}

/** A size flag, or its default; a bad one is a usage error naming the flag. */
function sizeFlag(p: Parsed, flag: string, fallback: bigint): bigint {
  const v = str(p, flag);
  if (v === undefined) return fallback;
  try {
    return parseSize(v);
  } catch (e) {
    throw new UsageError(`--${flag}: ${(e as Error).message}`);
  }
}

const checked = (flag: string, problem: string | null): void => {
  if (problem !== null) throw new UsageError(`--${flag} ${problem}`);
};

function create(p: Parsed): number {
  const name = need(p, "name");
  const blockSize = sizeFlag(p, "block-size", geo.DEFAULT_BLOCK_SIZE);
  checked("block-size", geo.blockSizeProblem(blockSize));
  const mark = str(p, "low-water-mark");
  if (mark !== undefined && !/^\d+$/.test(mark)) throw new UsageError("--low-water-mark is a number of blocks");
  const lowWaterMark = mark === undefined ? undefined : BigInt(mark);
  const force = p.flags.force === true;
  const dataFile = str(p, "data-file");
  const dataDev = str(p, "data-dev");
  const metaDev = str(p, "meta-dev");
  if (dataFile && (dataDev || metaDev)) throw new UsageError("use either --data-file or --data-dev/--meta-dev");
  if (!dataFile && (!dataDev || !metaDev)) throw new UsageError("give --data-file, or both --data-dev and --meta-dev");
  let spec: PoolConfig | null = null;
  if (dataFile) {
    const dataSize = sizeFlag(p, "data-size", geo.DEFAULT_DATA_SIZE);
    checked("data-size", geo.dataSizeProblem(dataSize, blockSize));
    const metaSize = sizeFlag(p, "meta-size", geo.defaultMetaSize(dataSize, blockSize));
    checked("meta-size", geo.metaSizeProblem(metaSize));
    const lwm = lowWaterMark ?? geo.defaultLowWaterMark(dataSize, blockSize);
    checked("low-water-mark", geo.lowWaterMarkProblem(lwm, dataSize, blockSize));
    spec = { dataFile, metaFile: str(p, "meta-file") ?? `${dataFile}.meta`, dataSize, metaSize, blockSize, lowWaterMark: lwm };
  }
  requireRoot("thinsnap pool create");
  const dm = openDeviceMapper();
  const pool =
    spec !== null
      ? createFilePool(dm, name, spec, force, createLogger("warn"))
      : createDevicePool(dm, name, { dataDev: dataDev ?? "", metaDev: metaDev ?? "", blockSize, lowWaterMark }, force);
  process.stdout.write(configSnippet(name, pool, spec));
  return 0;
}

/** `key = value` lines of the [pool] table for a spec, as the config reads them. */
function poolLines(spec: PoolConfig): string {
  const line = <F extends keyof PoolConfig>(e: Entry<PoolConfig, F>): string => `${e.key} = ${e.kind.literal(spec[e.field])}`;
  return POOL_KEYS.map((e) => line(e)).join("\n");
}

function configSnippet(name: string, pool: ThinPool, spec: PoolConfig | null): string {
  const st = pool.status();
  const bs = pool.blockSize();
  return `created thin-pool "${name}": ${formatSize(st.totalDataBlocks * bs)} data in ${formatSize(bs)} blocks, ` +
    `${st.totalMetadataBlocks} metadata blocks

# /etc/thinsnap/config.toml
pool_name = "${name}"
root_path = "${DEFAULTS.rootPath}"${spec !== null ? `\n\n[pool]\n${poolLines(spec)}` : ""}

${containerdSnippet(defaultPlanOptions(detectContainerd()))}`;
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

function status(p: Parsed): number {
  const name = need(p, "name");
  requireRoot("thinsnap pool status");
  const dm = openDeviceMapper();
  const pool = openPool(dm, name);
  const dbPath = `${str(p, "root") ?? DEFAULTS.rootPath}/metadata.db`;
  // TODO(lead, merging operators): pass the loaded config (Config satisfies SpaceLimits) instead of DEFAULTS.
  const r = poolReport(dm, pool, name, dbPath, DEFAULTS);
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

function destroy(p: Parsed): number {
  const name = need(p, "name");
  requireRoot("thinsnap pool destroy");
  const dm = openDeviceMapper();
  const deleteFiles = p.flags["delete-files"] === true;
  const files = destroyPool(dm, openPool(dm, name), { force: p.flags.force === true, deleteFiles });
  process.stdout.write(`destroyed thin-pool "${name}"${files.length ? ` (files ${deleteFiles ? "deleted" : "kept"}: ${files.join(", ")})` : ""}\n`);
  return 0;
}
