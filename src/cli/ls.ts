/**
 * `thinsnap ls`: one row per snapshot, from the store (opened read-only) and
 * the kernel (device info and thin status, both reads). It never talks to
 * the daemon's socket, takes no lock and changes nothing, so it is safe
 * while `thinsnap serve` runs.
 */
import { Database } from "bun:sqlite";
import { existsSync } from "node:fs";
import { formatSize } from "../config/units.ts";
import { isErrno, Errno } from "../dm/errors.ts";
import type { MappingInfo } from "../snapshotter/pool-api.ts";
import type { Kind } from "../snapshotter/types.ts";
import { BASE_MAPPED_META, exclusiveBytes } from "../snapshotter/usage.ts";
import { Store, type DeviceState, type InventoryRow } from "../store/store.ts";
import { flagHelp, str, UsageError, type FlagSpec, type Parsed } from "./args.ts";
import { CliError, openDeviceMapper, openPool, requireRoot } from "./runtime.ts";
import { CONFIG_FLAGS, configFromFlags } from "./config-flags.ts";

const KINDS: readonly Kind[] = ["active", "view", "committed"];

export const LS_FLAGS: Record<string, FlagSpec> = {
  config: CONFIG_FLAGS.config!,
  root: CONFIG_FLAGS.root!,
  "pool-name": CONFIG_FLAGS["pool-name"]!,
  kind: { help: "only snapshots of this kind: active, view or committed" },
  prefix: { help: "only keys starting with this (e.g. a containerd namespace: default/)" },
  json: { type: "boolean", help: "print a JSON array" },
  help: { type: "boolean", help: "show this help" },
};

export const LS_HELP = `Usage: thinsnap ls [--kind KIND] [--prefix KEY-PREFIX] [--json] [flags]

Lists every snapshot: its key as containerd sent it (namespace/id/name), kind,
parent, thin id, device, whether the device is active (mapped) and mounted
(open), its size and exclusive usage (bytes it maps beyond its parent's), and
when it was created. Reads the store and the kernel only: safe while
thinsnap serve runs.

Flags:
${flagHelp(LS_FLAGS)}
`;

/** One row of `thinsnap ls --json`. Bytes are numbers; null where unknown. */
export interface LsEntry {
  key: string;
  kind: Kind;
  /** "" when parentless. */
  parent: string;
  thinId: number;
  /** The /dev/mapper name; null when the store has no device record. */
  device: string | null;
  /** creating/deleting: an operation under way or interrupted. */
  deviceState: DeviceState | null;
  active: boolean;
  /** The device is open (mounted, or held by something else). */
  mounted: boolean;
  sizeBytes: number | null;
  /** Exclusive usage; null for an active/view snapshot whose device is not mapped. */
  usageBytes: number | null;
  created: string;
}

/** What ls reads of the kernel: ThinPool (and the fake pool) satisfy it. */
export interface MappingReader {
  info(dmName: string): MappingInfo | null;
  mappedBytes(dmName: string): bigint;
}

export function inventory(store: Store, pool: MappingReader, filter: { kind?: Kind; prefix?: string } = {}): LsEntry[] {
  const baseMapped = BigInt(store.getMeta(BASE_MAPPED_META) ?? "0");
  return store.inventory(filter).map((r) => entry(r, pool, baseMapped));
}

function entry(r: InventoryRow, pool: MappingReader, baseMapped: bigint): LsEntry {
  const info = r.dmName === null ? null : pool.info(r.dmName);
  const start = r.parentId === null ? baseMapped : (r.parentMappedBytes ?? 0n);
  let mapped: bigint | null = null;
  if (r.kind === "committed") {
    mapped = r.mappedBytes;
  } else if (r.dmName !== null && info !== null && info.liveTable) {
    try {
      mapped = pool.mappedBytes(r.dmName);
    } catch (e) {
      // Removed between the two reads: unknown, not an error.
      if (!isErrno(e, Errno.ENXIO) && !isErrno(e, Errno.ENODEV)) throw e;
    }
  }
  return {
    key: r.name,
    kind: r.kind,
    parent: r.parentName,
    thinId: r.thinId,
    device: r.dmName,
    deviceState: r.deviceState,
    active: info !== null,
    mounted: info !== null && info.openCount > 0,
    sizeBytes: r.sizeBytes === null ? null : Number(r.sizeBytes),
    usageBytes: mapped === null ? null : Number(exclusiveBytes(mapped, start)),
    created: new Date(r.createdMs).toISOString().replace(/\.\d+Z$/, "Z"),
  };
}

const yesNo = (b: boolean): string => (b ? "yes" : "no");
const size = (n: number | null): string => (n === null ? "-" : formatSize(BigInt(n)));

/** The human table: one header line, one line per entry, columns padded. */
export function formatLsTable(entries: LsEntry[]): string {
  const rows = [
    ["KEY", "KIND", "PARENT", "THIN ID", "DEVICE", "ACTIVE", "MOUNTED", "SIZE", "USAGE", "CREATED"],
    ...entries.map((e) => [
      e.key,
      e.kind,
      e.parent || "-",
      String(e.thinId),
      (e.device ?? "-") + (e.deviceState !== null && e.deviceState !== "ready" ? ` (${e.deviceState})` : ""),
      yesNo(e.active),
      yesNo(e.mounted),
      size(e.sizeBytes),
      size(e.usageBytes),
      e.created,
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n") + "\n";
}

export async function ls(p: Parsed): Promise<number> {
  const kind = str(p, "kind");
  if (kind !== undefined && !(KINDS as readonly string[]).includes(kind)) {
    throw new UsageError(`--kind must be active, view or committed (not "${kind}")`);
  }
  const prefix = str(p, "prefix");
  const cfg = await configFromFlags(p);
  requireRoot("thinsnap ls");
  const dbPath = `${cfg.rootPath}/metadata.db`;
  if (!existsSync(dbPath)) throw new CliError(`no store at ${dbPath} (wrong --root?)`);
  const pool = openPool(openDeviceMapper(), cfg.poolName);
  // Read-only: no schema or permission change, and serve's writes go on.
  const store = Store.wrap(new Database(dbPath, { readonly: true, strict: true }), dbPath);
  try {
    const filter: { kind?: Kind; prefix?: string } = {};
    if (kind !== undefined) filter.kind = kind as Kind;
    if (prefix !== undefined) filter.prefix = prefix;
    const entries = inventory(store, pool, filter);
    process.stdout.write(p.flags.json === true ? `${JSON.stringify(entries, null, 2)}\n` : formatLsTable(entries));
    return 0;
  } finally {
    store.close();
  }
}
