/**
 * The bounds on a List's filters (src/filters/limits.ts), through the real RPC
 * server on a socket: each limit refused with its gRPC code and a message
 * naming it, the pathological Lists of issue 12 answered fast or refused with
 * little memory, and other connections served while the worst allowed
 * matching runs.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { startServer, type RunningServer } from "../../src/rpc/server.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import {
  MATCH_STEPS_SLICE,
  MAX_FILTER_PROGRAM,
  MAX_FILTER_REGEXPS,
  MAX_MATCH_STEPS,
  MAX_REGEXP_LENGTH,
  MAX_REGEXP_PROGRAM,
} from "../../src/filters/limits.ts";
import { compileRe2 } from "../../src/filters/regexp.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { Code, errorOf, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";

let dir: string;
let sn: ThinSnapshotter;
let server: RunningServer;
let client: SnapshotsClient;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "thinsnap-filter-limits-"));
  sn = await ThinSnapshotter.open(TEST_OPTIONS, { store: Store.open(join(dir, "db")), pool: new FakePool(), format: async () => {} });
  server = await startServer({ socketPath: join(dir, "sock"), service: createSnapshotsService(sn) });
  client = snapshotsClient(server.address);
});
afterAll(async () => {
  await server.close(500);
  await sn.close();
  rmSync(dir, { recursive: true, force: true });
});

async function names(c: SnapshotsClient, filters: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const res of c.list({ filters })) for (const i of res.info) out.push(i.name);
  return out.sort();
}

/** Snapshots `${prefix}0..n-1`, each with label `key` = value. */
async function make(prefix: string, n: number, key: string, value: string): Promise<void> {
  for (let i = 0; i < n; i++) await sn.prepare(`${prefix}${i}`, "", { labels: { [key]: value } });
}

const q = JSON.stringify;
const programOf = (p: string): number => compileRe2(p).programSize;

describe("static limits: InvalidArgument naming the limit", () => {
  test(`MAX_FILTER_REGEXPS: ${MAX_FILTER_REGEXPS} distinct regexps pass, one more is refused`, async () => {
    const ok = Array.from({ length: MAX_FILTER_REGEXPS }, (_, i) => `name~=^nothing${i}$`);
    expect(await names(client, ok)).toEqual([]);
    // Repeating a pattern does not count twice.
    expect(await names(client, [...ok, ...ok])).toEqual([]);
    const err = await errorOf(names(client, [...ok, "name~=^one-more$"]));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(`${MAX_FILTER_REGEXPS + 1} distinct regexps`);
    expect(err.rawMessage).toContain(`MAX_FILTER_REGEXPS = ${MAX_FILTER_REGEXPS}`);
  });

  test("MAX_REGEXP_LENGTH", async () => {
    expect(await names(client, [`name~=${"z".repeat(MAX_REGEXP_LENGTH)}`])).toEqual([]);
    const err = await errorOf(names(client, [`name~=${"z".repeat(MAX_REGEXP_LENGTH + 1)}`]));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(`longer than ${MAX_REGEXP_LENGTH} (MAX_REGEXP_LENGTH`);
  });

  test("MAX_REGEXP_PROGRAM: the issue's [a-z]{999}×4 pattern is too large", async () => {
    const p = "[a-z]{999}[a-z]{999}[a-z]{999}[a-z]{999}N";
    expect(programOf(p)).toBeGreaterThan(MAX_REGEXP_PROGRAM);
    expect(programOf("a{1000}")).toBeLessThanOrEqual(MAX_REGEXP_PROGRAM);
    const err = await errorOf(names(client, [`labels.l~=${q(p)}`]));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(`expression too large: ${programOf(p)} instructions, more than ${MAX_REGEXP_PROGRAM} (MAX_REGEXP_PROGRAM`);
  });

  test("MAX_FILTER_PROGRAM: large regexps that each pass, too many together", async () => {
    const pattern = (i: number): string => `^x{1000}y{${700 + i}}$`;
    const each = programOf(pattern(0));
    expect(each).toBeLessThanOrEqual(MAX_REGEXP_PROGRAM);
    const n = Math.floor(MAX_FILTER_PROGRAM / each) + 1;
    expect(n).toBeLessThanOrEqual(MAX_FILTER_REGEXPS);
    const fits = Array.from({ length: n - 1 }, (_, i) => `name~=${q(pattern(i))}`);
    expect(await names(client, fits)).toEqual([]);
    const err = await errorOf(names(client, [...fits, `name~=${q(pattern(n))}`]));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(`MAX_FILTER_PROGRAM = ${MAX_FILTER_PROGRAM} instructions`);
  });
});

describe("matching work: ResourceExhausted naming the limit", () => {
  test("MATCH_STEPS_SLICE: one regexp against one long value", async () => {
    await make("slice", 1, "slice", "a".repeat(4000));
    const big = "[a-z]{1000}N";
    expect(programOf(big) * 4001).toBeGreaterThan(MATCH_STEPS_SLICE);
    const err = await errorOf(names(client, [`labels.slice~=${q(big)}`]));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain(`more than MATCH_STEPS_SLICE = ${MATCH_STEPS_SLICE} per value`);
    // A smaller regexp on the same value is fine.
    expect(await names(client, ["labels.slice~=^a{40}"])).toEqual(["slice0"]);
  });

  test("MAX_MATCH_STEPS: a List whose matching adds up past the budget", async () => {
    // Literal patterns: cheap in time (re2js searches them fast), so the
    // test reaches the budget quickly; the budget counts the worst case.
    const value = "v".repeat(4000);
    const patterns = Array.from({ length: MAX_FILTER_REGEXPS }, (_, i) => `w${"v".repeat(40)}${i}`);
    const perRow = patterns.reduce((n, p) => n + programOf(p) * (value.length + 1), 0);
    const rows = Math.floor(MAX_MATCH_STEPS / perRow) + 1;
    expect(patterns.reduce((n, p) => n + programOf(p), 0)).toBeLessThanOrEqual(MAX_FILTER_PROGRAM);
    await make("budget", rows, "budget", value);
    const filters = patterns.map((p) => `labels.budget~=${p}`);
    const err = await errorOf(names(client, filters));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.rawMessage).toContain(`more than MAX_MATCH_STEPS = ${MAX_MATCH_STEPS} steps`);
    // Within the budget it answers: a cheap selector first spares most rows the costly ones.
    const fewer = filters.slice(1).map((f) => `name~=^budget[0-9]$,${f}`);
    expect(await names(client, fewer)).toEqual([]);
    for (let i = 0; i < rows; i++) await sn.remove(`budget${i}`);
  }, 30_000);
});

describe("issue 12's pathological Lists", () => {
  test("ten OR'ed [a-z]{999}×4 regexps over a 4,000-byte label: refused at once", async () => {
    await sn.prepare("patho-a", "", { labels: { l: "a".repeat(4000) } });
    await sn.prepare("patho-b", "", { labels: { l: "b" } });
    const filters = Array.from({ length: 10 }, (_, i) => `labels.l~="[a-z]{999}[a-z]{999}[a-z]{999}[a-z]{999}${"N".repeat(i + 1)}"`);
    expect(filters.join("").length).toBeGreaterThan(500);
    const t0 = performance.now();
    const err = await errorOf(names(client, filters));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("MAX_REGEXP_PROGRAM");
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  test("8,000 distinct regexps (a ~430 KiB request): refused before compiling, with little memory", async () => {
    const filters = Array.from({ length: 8000 }, (_, i) => `labels.l~="[a-z]{999}[a-z]{999}[a-z]{999}[a-z]{999}N${i}"`);
    expect(filters.join("").length).toBeGreaterThan(400 * 1024);
    Bun.gc(true);
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const err = await errorOf(names(client, filters));
    const ms = performance.now() - t0;
    const grown = process.memoryUsage().rss - rss0;
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain("8000 distinct regexps");
    expect(ms).toBeLessThan(2000);
    // The old engine compiled them all: 12 s and 1.4 GiB.
    expect(grown).toBeLessThan(128 * 1024 * 1024);
    console.log(`8000 patterns: ${ms.toFixed(0)} ms, rss +${(grown / 1048576).toFixed(1)} MiB`);
  });
});

describe("other requests are served while a List matches", () => {
  test("a Stat on another connection answers within 100 ms during the worst per-slice matching", async () => {
    // Regexps RE2 must run as an NFA (no literal to search for, DFA states
    // too many), each just within the per-value slice against 4,000-letter
    // labels, MAX_FILTER_REGEXPS of them OR'ed: every slice of work is as
    // long as the limits allow. 16 rows keep the whole List to a second or so.
    const value = "a".repeat(4000);
    const patterns = Array.from({ length: MAX_FILTER_REGEXPS }, (_, i) => `\\pL{${45 + i}}[0-9]`);
    for (const p of patterns) {
      expect(programOf(p) * (value.length + 1)).toBeLessThanOrEqual(MATCH_STEPS_SLICE);
      expect(programOf(p) * (value.length + 1)).toBeGreaterThan(MATCH_STEPS_SLICE * 0.7);
    }
    await make("slow", 16, "slow", value);
    const other = snapshotsClient(server.address);
    await other.stat({ key: "slow0" }); // connected and warm

    let done = false;
    const list = names(client, patterns.map((p) => `labels.slow~=${q(p)}`)).finally(() => {
      done = true;
    });
    const t0 = performance.now();
    const latencies: number[] = [];
    while (!done) {
      const s = performance.now();
      await other.stat({ key: "slow0" });
      latencies.push(performance.now() - s);
      await Bun.sleep(5);
    }
    expect(await list).toEqual([]);
    const listMs = performance.now() - t0;
    // The List was long enough to measure something, and Stats kept coming.
    expect(listMs).toBeGreaterThan(300);
    expect(latencies.length).toBeGreaterThan(5);
    // Always: Stats were answered between slices, not after the List (a List
    // holding the loop would make one Stat wait for most of it). The 100 ms
    // target (p95 and max) unless the host has more runnable processes than
    // cores: then the scheduler alone delays a Stat.
    const sorted = [...latencies].sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)] ?? 0).toBeLessThan(100);
    expect(sorted.at(-1) ?? 0).toBeLessThan(listMs / 2);
    const quiet = loadavg()[0]! < cpus().length;
    if (quiet) expect(sorted[Math.floor(sorted.length * 0.95)] ?? 0).toBeLessThan(100);
    console.log(`List ${listMs.toFixed(0)} ms; ${latencies.length} Stats, p95 ${(sorted[Math.floor(sorted.length * 0.95)] ?? 0).toFixed(0)} ms, max ${(sorted.at(-1) ?? 0).toFixed(0)} ms; load ${loadavg()[0]!.toFixed(1)}`);
    if (quiet) expect(sorted.at(-1) ?? 0).toBeLessThan(100);
  }, 60_000);
});
