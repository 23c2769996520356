/** `thinsnap pool create|status|destroy`: thin-pool management without dmsetup. */
import { closeSync, existsSync, fsyncSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { parseSize, formatSize } from "../config/units.ts";
import { defaultMetaSize } from "../config/config.ts";
import { blockDeviceSize, detachLoop, devPath, loopBackingFile } from "../dm/blockdev.ts";
import { thinDevicesOfPool } from "../dm/pool-contents.ts";
import { createPool, ThinPool } from "../dm/thin-pool.ts";
import { SECTOR } from "../dm/status.ts";
import { Store } from "../store/store.ts";
import { flagHelp, type FlagSpec, type Parsed, str, UsageError } from "./args.ts";
import { CliError, ensureFilePool, isBlank, openDeviceMapper, openPool, requireRoot } from "./runtime.ts";
import { createLogger } from "../log.ts";

export const POOL_FLAGS: Record<string, FlagSpec> = {
  name: { help: "thin-pool device name (pool_name)" },
  "data-dev": { help: "create: block device for data" },
  "meta-dev": { help: "create: block device for metadata" },
  "data-file": { help: "create/destroy: file for data (sparse, on a loop device)" },
  "meta-file": { help: "create/destroy: file for metadata", default: "<data-file>.meta" },
  "data-size": { help: "create: size of a new data file (e.g. 100G)", default: "100G" },
  "meta-size": { help: "create: size of a new metadata file", default: "48 bytes per data block, ≥ 2 MiB" },
  "block-size": { help: "create: data block size, multiple of 64K", default: "64K" },
  "low-water-mark": { help: "create: free blocks that raise a kernel event", default: "min(32768, blocks/10)" },
  force: { type: "boolean", help: "create: overwrite devices holding data; destroy: also non-loop pools" },
  "delete-files": { type: "boolean", help: "destroy: also delete the data and metadata files" },
  root: { help: "status: state directory, to show snapshots by kind", default: "/var/lib/thinsnap" },
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

function create(p: Parsed): number {
  const name = need(p, "name");
  requireRoot("thinsnap pool create");
  const dm = openDeviceMapper();
  if (dm.info(name)) throw new CliError(`a device named "${name}" already exists; refusing to touch it`);
  const blockSize = parseSize(str(p, "block-size") ?? "64K");
  if (blockSize % 65536n !== 0n || blockSize < 65536n || blockSize > 1n << 30n) {
    throw new UsageError("--block-size must be a multiple of 64K between 64K and 1G");
  }
  const force = p.flags.force === true;
  const dataFile = str(p, "data-file");
  let dataDev = str(p, "data-dev");
  let metaDev = str(p, "meta-dev");
  let snippet: string;
  if (dataFile) {
    if (dataDev || metaDev) throw new UsageError("use either --data-file or --data-dev/--meta-dev");
    const dataSize = parseSize(str(p, "data-size") ?? "100G");
    const metaFile = str(p, "meta-file") ?? `${dataFile}.meta`;
    const metaSize = str(p, "meta-size") ? parseSize(str(p, "meta-size")!) : defaultMetaSize(dataSize, blockSize);
    for (const f of [dataFile, metaFile]) {
      if (existsSync(f) && statSync(f).size > 0 && !isBlank(f) && !force) {
        throw new CliError(`${f} already holds data; use --force to overwrite it (its contents are lost)`);
      }
    }
    rmSync(metaFile, { force: true }); // a stale superblock would be reused by the kernel
    if (force) rmSync(dataFile, { force: true });
    const pool = ensureFilePool(dm, name, {
      dataFile,
      metaFile,
      dataSize,
      metaSize,
      blockSize,
      lowWaterMark: lowWater(p, dataSize, blockSize),
    }, createLogger("warn"));
    snippet = configSnippet(name, pool, `
[pool]
data_file = "${dataFile}"
meta_file = "${metaFile}"
data_size = "${formatSize(dataSize).replace(/ /g, "").replace(/iB$/, "B")}"
meta_size = "${formatSize(metaSize).replace(/ /g, "").replace(/iB$/, "B")}"
block_size = "${formatSize(blockSize).replace(/ /g, "").replace(/iB$/, "B")}"`);
  } else {
    if (!dataDev || !metaDev) throw new UsageError("give --data-file, or both --data-dev and --meta-dev");
    for (const d of [dataDev, metaDev]) {
      if (!isBlank(d) && !force) {
        throw new CliError(`${d} is not empty (its first 4 KiB are not zero); use --force to overwrite it`);
      }
    }
    if (force) zeroSuperblock(metaDev);
    const dataBytes = blockDeviceSize(dataDev);
    createPool(dm, name, {
      metadataDev: metaDev,
      dataDev,
      blockSectors: Number(blockSize / SECTOR),
      lowWaterMark: lowWater(p, dataBytes, blockSize),
    });
    snippet = configSnippet(name, new ThinPool(dm, name), "");
  }
  process.stdout.write(snippet);
  return 0;
}

function lowWater(p: Parsed, dataSize: bigint, blockSize: bigint): bigint {
  const v = str(p, "low-water-mark");
  if (v === undefined) {
    const blocks = dataSize / blockSize;
    return blocks / 10n < 32768n ? blocks / 10n : 32768n;
  }
  if (!/^\d+$/.test(v)) throw new UsageError("--low-water-mark is a number of blocks");
  return BigInt(v);
}

function zeroSuperblock(dev: string): void {
  const fd = openSync(dev, "r+");
  try {
    writeSync(fd, Buffer.alloc(4096), 0, 4096, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function configSnippet(name: string, pool: ThinPool, extra: string): string {
  const st = pool.status();
  const bs = pool.blockSize();
  return `created thin-pool "${name}": ${formatSize(st.totalDataBlocks * bs)} data in ${formatSize(bs)} blocks, ` +
    `${st.totalMetadataBlocks} metadata blocks

# /etc/thinsnap/config.toml
pool_name = "${name}"
root_path = "/var/lib/thinsnap"
base_image_size = "10GB"
fs_type = "ext4"${extra}

# containerd config.toml
[proxy_plugins.thinsnap]
  type = "snapshot"
  address = "/run/thinsnap/thinsnap.sock"
`;
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

function status(p: Parsed): number {
  const name = need(p, "name");
  requireRoot("thinsnap pool status");
  const dm = openDeviceMapper();
  const pool = openPool(dm, name);
  const st = pool.status();
  const bs = pool.blockSize();
  const pct = (a: bigint, b: bigint): number => (b === 0n ? 0 : Number((a * 10000n) / b) / 100);
  const active = thinDevicesOfPool(dm, name);
  let snapshots: Record<string, number> | null = null;
  let devicesByState: Record<string, number> | null = null;
  const dbPath = `${str(p, "root") ?? "/var/lib/thinsnap"}/metadata.db`;
  if (existsSync(dbPath)) {
    const store = Store.open(dbPath);
    try {
      snapshots = {};
      for (const r of store.db.query<{ kind: string; n: number }, []>("SELECT kind, COUNT(*) AS n FROM snapshots GROUP BY kind").all()) {
        snapshots[r.kind] = r.n;
      }
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

function destroy(p: Parsed): number {
  const name = need(p, "name");
  requireRoot("thinsnap pool destroy");
  const dm = openDeviceMapper();
  const pool = openPool(dm, name);
  const t = pool.table();
  const devs = [t.metadataDev, t.dataDev].map(devPath);
  const loops = devs.filter((d) => /^\/dev\/loop\d+$/.test(d));
  if (loops.length !== 2 && p.flags.force !== true) {
    throw new CliError(`pool "${name}" is not file-backed (loop devices); use --force to remove it anyway`);
  }
  for (const thin of thinDevicesOfPool(dm, name)) {
    try {
      dm.remove(thin, { retry: true });
    } catch (e) {
      throw new CliError(`cannot remove thin device ${thin} (mounted?): ${(e as Error).message}`);
    }
  }
  dm.remove(name, { retry: true });
  const files = loops.map(loopBackingFile).filter((f): f is string => f !== null);
  for (const l of loops) detachLoop(l);
  if (p.flags["delete-files"] === true) for (const f of files) rmSync(f, { force: true });
  process.stdout.write(`destroyed thin-pool "${name}"${files.length ? ` (files ${p.flags["delete-files"] ? "deleted" : "kept"}: ${files.join(", ")})` : ""}\n`);
  return 0;
}
