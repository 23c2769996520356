/**
 * The crash test's state (tests/dm/crash.test.ts): the model of what the
 * client was told, calls interrupted by a kill, keys in use, the counters of
 * kills, repairs and outcomes, and the problems found.
 */
import { readdirSync, readFileSync } from "node:fs";
import type { Daemon, DaemonConfig } from "../../kit/daemon.ts";
import { Kind } from "../../kit/client.ts";
import type { TestPool } from "../pool-fixture.ts";

export const POOL = "tscrash";


export type SKind = "active" | "view" | "committed";
export interface Snap {
  name: string;
  kind: SKind;
  parent: string;
  labels: Record<string, string>;
  /** Files the snapshot must show (its ancestors' and, once written, its own). */
  files: Record<string, string>;
  /** active: its own file was written. */
  written: boolean;
  /** committed: its files were read back through a View after a restart. */
  verified: boolean;
  epoch: number;
}

export type Pending =
  | { op: "prepare" | "view"; key: string; parent: string; labels: Record<string, string> }
  | { op: "commit"; key: string; name: string; labels: Record<string, string> }
  | { op: "remove"; key: string }
  | { op: "update"; key: string; value: string };

export const KIND_OF: Record<number, SKind> = { [Kind.ACTIVE]: "active", [Kind.VIEW]: "view", [Kind.COMMITTED]: "committed" };

export function filesIn(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = readFileSync(`${dir}/${f}`, "utf8");
  return out;
}

export function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

export function rnd(n: number): number {
  return Math.floor(Math.random() * n);
}

export function pick<T>(xs: T[]): T | undefined {
  return xs.length ? xs[rnd(xs.length)] : undefined;
}

export class Stats {
  kills = new Map<string, number>();
  repairs = new Map<string, number>();
  ops = new Map<string, number>();
  cycles = 0;
  startFailures = 0;
  /** Milliseconds spent per phase of the cycles. */
  ms = new Map<string, number>();
  time(phase: string, t0: number): void {
    this.ms.set(phase, (this.ms.get(phase) ?? 0) + (performance.now() - t0));
  }
  kill(kind: string): void {
    this.kills.set(kind, (this.kills.get(kind) ?? 0) + 1);
  }
  op(what: string): void {
    this.ops.set(what, (this.ops.get(what) ?? 0) + 1);
  }
  totalKills(): number {
    let n = 0;
    for (const v of this.kills.values()) n += v;
    return n;
  }
}

export class CrashRun {
  tp!: TestPool;
  dir!: string;
  cfg!: DaemonConfig;
  daemon: Daemon | null = null;
  readonly problems: string[] = [];
  readonly stats = new Stats();

  readonly model = new Map<string, Snap>();
  pending: Pending[] = [];
  readonly busy = new Map<string, number>();
  /** Snapshots with a Remove in flight: not to be used as a parent or read. */
  readonly removing = new Set<string>();
  seq = 0;
  epochNo = 0;
  /**
   * base_image_size of the current config: a new size per new-base cycle. (Two
   * sizes toggled would fall back to the old base whenever the previous cycle
   * killed the making of the new one, and the base.* point would not be reached.)
   */
  baseGen = 0;

  readonly hold = (k: string): void => void this.busy.set(k, (this.busy.get(k) ?? 0) + 1);
  readonly release = (k: string): void => {
    const n = (this.busy.get(k) ?? 0) - 1;
    if (n <= 0) this.busy.delete(k);
    else this.busy.set(k, n);
  };
  readonly isBusy = (k: string): boolean => (this.busy.get(k) ?? 0) > 0;
  readonly hasChildren = (k: string): boolean => [...this.model.values()].some((s) => s.parent === k);
  readonly problem = (s: string): void => {
    this.problems.push(`[cycle ${this.stats.cycles}] ${s}`);
    console.error(`PROBLEM: [cycle ${this.stats.cycles}] ${s}`);
  };
  readonly newKey = (prefix: string): string => `${prefix}${++this.seq}`;
  readonly baseSize = (): string => `${64 + (this.baseGen % 64)}MB`;
}
