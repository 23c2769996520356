/** The results model: rows of cells (median, p95 per side), targets, notes, phase sums, resident memory. */
import { existsSync, readFileSync } from "node:fs";
import type { Profile } from "./profile.ts";
import { fmtRatio } from "./format.ts";
import type { SideId } from "./plan.ts";
import type { Stats } from "./stats.ts";

export interface Cell {
  n: number;
  median: number;
  p95: number;
  /** Optional note shown under the table (e.g. "over 22 snapshots"). */
  note?: string;
}
export type Unit = "ms" | "ops/s" | "MiB" | "µs";
/** A table column: the three sides, containerd's overlayfs (image and storm rows), the floor. */
export type Column = SideId | "ovl" | "floor";
export interface Target {
  /** Text shown in the table. */
  text: string;
  pass: boolean;
  detail: string;
}
export interface Row {
  id: string;
  label: string;
  unit: Unit;
  cells: Partial<Record<Column, Cell>>;
  targets: Target[];
  notes: string[];
}

/** What one run measured (filled by the sections; bench/results.json holds it). */
export const rows: Row[] = [];
export const notes: string[] = [];
export const phases: Record<string, Record<string, number>> = {};
/** VmRSS of thinsnap serve, KiB: idle after start-up, max under the 16-way load, VmHWM at the end, idle again after the runs. */
export const rss = { idleKiB: 0, loadKiB: 0, hwmKiB: 0, afterKiB: 0 };
export const profiled: { profile: Profile | null } = { profile: null };

export function cell(s: Stats, note?: string): Cell {
  return note === undefined ? { n: s.n, median: s.median, p95: s.p95 } : { n: s.n, median: s.median, p95: s.p95, note };
}

export function row(id: string, label: string, unit: Unit, cells: Row["cells"]): Row {
  const r: Row = { id, label, unit, cells, targets: [], notes: [] };
  rows.push(r);
  return r;
}

/** Speed-up of thinsnap (via containerd) over the reference: ref/ts for times, ts/ref for throughput. */
export function speedup(r: Row): number {
  const ts = r.cells.ctrd?.median;
  const ref = r.cells.ref?.median;
  if (ts === undefined || ref === undefined) return NaN;
  return r.unit === "ops/s" ? ts / ref : ref / ts;
}

export function targetFaster(r: Row, factor: number): void {
  const s = speedup(r);
  r.targets.push({ text: `≥${factor}× ref`, pass: s >= factor, detail: `${fmtRatio(s)}× faster than the reference (via containerd)` });
}

export function targetFloor(r: Row, factor: number): void {
  const d = r.cells.direct?.median;
  const f = r.cells.floor?.median;
  if (d === undefined || f === undefined) return;
  const x = d / f;
  r.targets.push({ text: `≤${factor}× floor`, pass: x <= factor, detail: `${fmtRatio(x)}× the floor (direct)` });
}

/** a's median ≤ factor × b's median (times), e.g. thinsnap via containerd within 1.1× of overlayfs. */
export function targetWithin(r: Row, a: Column, b: Column, factor: number, names: [string, string]): void {
  const x = r.cells[a]?.median;
  const y = r.cells[b]?.median;
  if (x === undefined || y === undefined) return;
  r.targets.push({ text: `≤${factor}× ${names[1]}`, pass: x <= factor * y, detail: `${names[0]} ${fmtRatio(x / y)}× ${names[1]}` });
}

export function targetMax(r: Row, side: Column, max: number, unitText: string): void {
  const v = r.cells[side]?.median;
  if (v === undefined) return;
  r.targets.push({ text: `≤${max} ${unitText}`, pass: v <= max, detail: `${v.toFixed(1)} ${unitText}` });
}

/**
 * A result bench/run measured on the host before the guest booted, from the
 * JSON file named by env var `envVar`; null (and a note saying so) if absent.
 */
export function hostResult<T>(envVar: string, what: string): T | null {
  const file = process.env[envVar];
  if (!file || !existsSync(file)) {
    notes.push(`${what} on the host: not measured (bench/run measures it before booting the guest).`);
    return null;
  }
  return JSON.parse(readFileSync(file, "utf8")) as T;
}
