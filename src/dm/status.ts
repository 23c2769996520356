/**
 * Pure parsers and builders for thin-pool / thin target lines
 * (Documentation/admin-guide/device-mapper/thin-provisioning.rst).
 */

export interface ThinPoolStatus {
  transactionId: bigint;
  usedMetadataBlocks: bigint;
  totalMetadataBlocks: bigint;
  usedDataBlocks: bigint;
  totalDataBlocks: bigint;
  /** "-" when no metadata snapshot is held. */
  heldMetadataRoot: string;
  mode: "rw" | "ro" | "out_of_data_space";
  discardPassdown: boolean;
  errorIfNoSpace: boolean;
  needsCheck: boolean;
  /** Present on kernels ≥ 4.19; null otherwise. */
  metadataLowWatermark: bigint | null;
}

export interface ThinStatus {
  mappedSectors: bigint;
  /** null when nothing is mapped ("-"). */
  highestMappedSector: bigint | null;
}

export class StatusParseError extends Error {
  constructor(what: string, line: string) {
    super(`cannot parse ${what} status "${line}"`);
    this.name = "StatusParseError";
  }
}

function fraction(s: string | undefined, what: string, line: string): [bigint, bigint] {
  const m = /^(\d+)\/(\d+)$/.exec(s ?? "");
  if (!m) throw new StatusParseError(what, line);
  return [BigInt(m[1]!), BigInt(m[2]!)];
}

/** Parses the params part of a thin-pool status line. "Fail" means the pool failed. */
export function parseThinPoolStatus(params: string): ThinPoolStatus {
  const f = params.trim().split(/\s+/);
  if (f[0] === "Fail" || f[0] === "Error") throw new StatusParseError("thin-pool (pool failed)", params);
  if (f.length < 8 || !/^\d+$/.test(f[0] ?? "")) throw new StatusParseError("thin-pool", params);
  const [usedMeta, totalMeta] = fraction(f[1], "thin-pool", params);
  const [usedData, totalData] = fraction(f[2], "thin-pool", params);
  const mode = f[4];
  if (mode !== "rw" && mode !== "ro" && mode !== "out_of_data_space") throw new StatusParseError("thin-pool", params);
  const lw = f[8];
  return {
    transactionId: BigInt(f[0]!),
    usedMetadataBlocks: usedMeta,
    totalMetadataBlocks: totalMeta,
    usedDataBlocks: usedData,
    totalDataBlocks: totalData,
    heldMetadataRoot: f[3]!,
    mode,
    discardPassdown: f[5] === "discard_passdown",
    errorIfNoSpace: f[6] === "error_if_no_space",
    needsCheck: f[7] === "needs_check",
    metadataLowWatermark: lw !== undefined && /^\d+$/.test(lw) ? BigInt(lw) : null,
  };
}

/** Parses the params part of a thin status line. */
export function parseThinStatus(params: string): ThinStatus {
  const f = params.trim().split(/\s+/);
  if (f[0] === "Fail") throw new StatusParseError("thin (pool failed)", params);
  if (f.length < 2 || !/^\d+$/.test(f[0] ?? "") || !/^(\d+|-)$/.test(f[1] ?? "")) {
    throw new StatusParseError("thin", params);
  }
  return { mappedSectors: BigInt(f[0]!), highestMappedSector: f[1] === "-" ? null : BigInt(f[1]!) };
}

export interface ThinPoolTable {
  metadataDev: string;
  dataDev: string;
  /** Data block size in 512-byte sectors (128 = 64 KiB). */
  blockSectors: number;
  lowWaterMark: bigint;
  features: string[];
}

export function thinPoolParams(t: ThinPoolTable): string {
  const feats = t.features.length ? ` ${t.features.join(" ")}` : "";
  return `${t.metadataDev} ${t.dataDev} ${t.blockSectors} ${t.lowWaterMark} ${t.features.length}${feats}`;
}

export function parseThinPoolParams(params: string): ThinPoolTable {
  const f = params.trim().split(/\s+/);
  const n = Number(f[4]);
  if (f.length < 5 || !Number.isInteger(n) || f.length < 5 + n) throw new StatusParseError("thin-pool table", params);
  return {
    metadataDev: f[0]!,
    dataDev: f[1]!,
    blockSectors: Number(f[2]),
    lowWaterMark: BigInt(f[3]!),
    features: f.slice(5, 5 + n),
  };
}

/** `<pool dev> <dev id>`: the table of one thin device. */
export function thinParams(poolDev: string, thinId: number): string {
  return `${poolDev} ${thinId}`;
}

export function parseThinParams(params: string): { poolDev: string; thinId: number } {
  const f = params.trim().split(/\s+/);
  if (f.length < 2 || !/^\d+$/.test(f[1] ?? "")) throw new StatusParseError("thin table", params);
  return { poolDev: f[0]!, thinId: Number(f[1]) };
}

/** Thin device ids are 24 bits wide (dm-thin's MAX_DEV_ID). */
export const MAX_THIN_ID = (1 << 24) - 1;

export const SECTOR = 512n;
