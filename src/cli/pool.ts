/** `thinsnap pool create|status|destroy`: thin-pool management without dmsetup (flags and output; the work is in src/pool). */
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Config } from "../config/config.ts";
import { configToml, containerdSnippet } from "../config/render.ts";
import { formatSize } from "../config/units.ts";
import type { ThinPool } from "../dm/thin-pool.ts";
import * as geo from "../pool/geometry.ts";
import { createDevicePool, createFilePool, destroyPool, devPath as devPathOf } from "../pool/provision.ts";
import { thinDevicesOfPool } from "../pool/thin-devices.ts";
import { Store } from "../store/store.ts";
import { didYouMean, flagHelp, type FlagSpec, type Parsed, str, UsageError } from "./args.ts";
import { CONFIG_FLAGS, configFile, configFromFlags, refuseNoRoom } from "./config-flags.ts";
import { CliError, openDeviceMapper, openPool, refuseWhileServing, requireRoot } from "./runtime.ts";
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
  process.stderr.write(`\n# containerd: add to /etc/containerd/config.toml (version = 2), then restart containerd\n` +
    `${containerdSnippet(made.address)}\n`);
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
  const st = pool.status();
  const bs = pool.blockSize();
  const pct = (a: bigint, b: bigint): number => (b === 0n ? 0 : Number((a * 10000n) / b) / 100);
  const active = thinDevicesOfPool(dm, name);
  let snapshots: Record<string, number> | null = null;
  let devicesByState: Record<string, number> | null = null;
  const dbPath = `${cfg.rootPath}/metadata.db`;
  if (existsSync(dbPath)) {
    const store = Store.open(dbPath);
    try {
      snapshots = { ...store.countByKind() };
      devicesByState = {};
      for (const d of store.allDevices()) devicesByState[d.state] = (devicesByState[d.state] ?? 0) + 1;
    } finally {
      store.close();
    }
  }
  const r: PoolReport = {
    pool: name,
    transactionId: st.transactionId.toString(),
    mode: st.mode,
    needsCheck: st.needsCheck,
    blockSize: bs.toString(),
    data: {
      used: st.usedDataBlocks.toString(),
      total: st.totalDataBlocks.toString(),
      usedBytes: (st.usedDataBlocks * bs).toString(),
      totalBytes: (st.totalDataBlocks * bs).toString(),
      percent: pct(st.usedDataBlocks, st.totalDataBlocks),
    },
    metadata: {
      used: st.usedMetadataBlocks.toString(),
      total: st.totalMetadataBlocks.toString(),
      percent: pct(st.usedMetadataBlocks, st.totalMetadataBlocks),
    },
    activeDevices: active,
    snapshots,
    devicesByState,
  };
  if (p.flags.json === true) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    return 0;
  }
  const rows: [string, string][] = [
    ["pool", name],
    ["mode", `${st.mode}${st.needsCheck ? " (needs_check: run thin_check)" : ""}`],
    ["transaction id", r.transactionId],
    ["data", `${formatSize(st.usedDataBlocks * bs)} / ${formatSize(st.totalDataBlocks * bs)} (${r.data.percent}%, ${r.data.used}/${r.data.total} blocks of ${formatSize(bs)})`],
    ["metadata", `${r.metadata.used}/${r.metadata.total} blocks (${r.metadata.percent}%)`],
    ["active thin devices", String(active.length)],
  ];
  if (snapshots) rows.push(["snapshots", Object.entries(snapshots).map(([k, n]) => `${n} ${k}`).join(", ") || "none"]);
  if (devicesByState) rows.push(["devices by state", Object.entries(devicesByState).map(([k, n]) => `${n} ${k}`).join(", ") || "none"]);
  const w = Math.max(...rows.map((x) => x[0].length)) + 2;
  process.stdout.write(rows.map(([k, v]) => `${k.padEnd(w)}${v}`).join("\n") + "\n");
  return 0;
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
  const fileBacked = isFileBacked(pool);
  const files = destroyPool(dm, pool, { force: p.flags.force === true, deleteFiles }, log);
  process.stdout.write(`destroyed thin-pool "${name}"${files.length ? ` (files ${deleteFiles ? "deleted" : "kept"}: ${files.join(", ")})` : ""}\n`);
  process.stdout.write(`${storeAfterDestroy(cfg.rootPath, deleteFiles || !fileBacked, log)}\n`);
  return 0;
}

function isFileBacked(pool: ThinPool): boolean {
  const t = pool.table();
  return [t.metadataDev, t.dataDev].every((d) => /^\/dev\/loop\d+$/.test(devPathOf(d)));
}

/**
 * The store describes the pool's thin devices: when the pool's contents are
 * gone it is moved aside (kept, in case), so that a new pool starts with a
 * new store; when the files are kept it stays with them.
 */
function storeAfterDestroy(rootPath: string, contentsGone: boolean, log: Logger): string {
  const db = `${rootPath}/metadata.db`;
  if (!existsSync(db)) return `no store at ${db}`;
  if (!contentsGone) return `store ${db} kept: it describes the kept files (serve reloads both)`;
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  let aside = `${db}.destroyed-${stamp}`;
  for (let n = 2; existsSync(aside); n++) aside = `${db}.destroyed-${stamp}-${n}`;
  for (const ext of ["", "-wal", "-shm"]) {
    if (existsSync(db + ext)) renameSync(db + ext, aside + ext);
  }
  log.debug("store moved aside", { from: db, to: aside });
  return `store moved aside: ${db} -> ${aside} (a new pool starts with a new store)`;
}
