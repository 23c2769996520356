/**
 * Load on the real daemon (issue 7): 16 and then 64 concurrent clients, each
 * on its own connection, doing Prepare / Usage / Commit / Stat / List /
 * Remove for a bounded time. No answer other than OK is expected (every
 * client works on its own keys over shared committed layers); latency
 * percentiles are printed; the daemon's RSS (VmRSS) is sampled and must not
 * grow by more than RSS_GROWTH_BOUND_MIB between the first and the second
 * half of each phase. THINSNAP_SOAK=1 runs each phase for 5 minutes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { checkConsistency } from "../kit/consistency.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { CodeCounter, ConnectError, listAll, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";

const POOL = "tsload";
const SOAK = process.env.THINSNAP_SOAK === "1";
const PHASE_MS = SOAK ? 5 * 60_000 : 20_000;
/** Allowed VmRSS growth, mean of the second half of a phase's samples over the first half's. */
const RSS_GROWTH_BOUND_MIB = 30;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

describe.skipIf(!env.available)("load: concurrent clients on the real daemon", () => {
  let tp: TestPool;
  let dir: string;
  let cfg: DaemonConfig;
  let d: Daemon;
  const layers = ["L0", "L1", "L2"];

  beforeAll(async () => {
    tp = createTestPool(POOL, { dataSize: 2 * 2 ** 30, metaSize: 64 << 20 });
    dir = mkdtempSync("/tmp/tsload-");
    mkdirSync(`${dir}/run`, { mode: 0o700 });
    cfg = { poolName: POOL, rootPath: `${dir}/root`, address: `${dir}/run/s.sock`, logLevel: "warn", asyncRemove: true, kernelThreads: 4 };
    d = await Daemon.start({ config: cfg, readyTimeoutMs: 120_000 });
    const c = snapshotsClient(cfg.address);
    let parent = "";
    for (const l of layers) {
      await c.prepare({ key: `${l}-a`, parent });
      await c.commit({ key: `${l}-a`, name: l });
      parent = l;
    }
  }, 300_000);

  afterAll(async () => {
    await d?.kill();
    tp?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 300_000);

  async function phase(clients: number): Promise<void> {
    const lat = new Map<string, number[]>();
    const codes = new CodeCounter();
    const unexpected: string[] = [];
    const rss: number[] = [];
    const deadline = performance.now() + PHASE_MS;
    const sampler = setInterval(() => {
      const r = d.rssKiB();
      if (r !== null) rss.push(r);
    }, 250);

    const timed = async <T>(c: SnapshotsClient, op: string, fn: () => Promise<T>): Promise<T | null> => {
      const t0 = performance.now();
      try {
        const r = await fn();
        (lat.get(op) ?? lat.set(op, []).get(op)!).push(performance.now() - t0);
        codes.add(op, "ok");
        return r;
      } catch (e) {
        const err = ConnectError.from(e);
        codes.add(op, err.code);
        unexpected.push(`${op}: [${err.code}] ${err.rawMessage.slice(0, 200)}`);
        return null;
      }
    };

    const client = async (i: number): Promise<void> => {
      const c = snapshotsClient(cfg.address, { timeoutMs: 120_000 });
      let n = 0;
      while (performance.now() < deadline) {
        const key = `p${clients}-c${i}-${n++}`;
        const parent = layers[n % layers.length]!;
        if (!(await timed(c, "prepare", () => c.prepare({ key, parent, labels: { client: String(i) } })))) continue;
        await timed(c, "usage", () => c.usage({ key }));
        if (n % 2 === 0) {
          await timed(c, "commit", () => c.commit({ key, name: `${key}-c`, labels: { client: String(i) } }));
          await timed(c, "stat", () => c.stat({ key: `${key}-c` }));
          if (n % 8 === 0) await timed(c, "list", () => listAll(c, [`labels.client==${i}`]));
          await timed(c, "remove", () => c.remove({ key: `${key}-c` }));
        } else {
          await timed(c, "remove", () => c.remove({ key }));
        }
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
    const elapsed = performance.now() - t0;
    clearInterval(sampler);

    const table: Record<string, Record<string, number>> = {};
    let total = 0;
    for (const [op, xs] of lat) {
      xs.sort((a, b) => a - b);
      total += xs.length;
      table[op] = {
        calls: xs.length,
        p50_ms: Math.round(percentile(xs, 50)),
        p90_ms: Math.round(percentile(xs, 90)),
        p99_ms: Math.round(percentile(xs, 99)),
        max_ms: Math.round(xs[xs.length - 1]!),
      };
    }
    const half = Math.floor(rss.length / 2);
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const first = mean(rss.slice(0, half)) / 1024;
    const second = mean(rss.slice(half)) / 1024;
    console.log(
      `load, ${clients} clients, ${Math.round(elapsed / 1000)} s: ${total} calls (${Math.round(total / (elapsed / 1000))}/s); ` +
        `VmRSS MiB first half ${first.toFixed(1)}, second half ${second.toFixed(1)}, max ${(Math.max(...rss) / 1024).toFixed(1)} (${rss.length} samples)`,
    );
    console.table(table);
    if (unexpected.length) console.log("unexpected answers:", codes.table(), unexpected.slice(0, 10));
    expect(unexpected).toEqual([]);
    expect(d.running).toBe(true);
    expect(rss.length).toBeGreaterThan(10);
    expect(second - first).toBeLessThan(RSS_GROWTH_BOUND_MIB);
  }

  test("16 concurrent clients", () => phase(16), PHASE_MS + 300_000);
  test("64 concurrent clients", () => phase(64), PHASE_MS + 300_000);

  test(
    "afterwards: only the shared layers are left, store and pool agree",
    async () => {
      const c = snapshotsClient(cfg.address);
      await c.cleanup({});
      expect((await listAll(c)).map((i) => i.name).sort()).toEqual(layers);
      const r = checkConsistency(tp.dm, POOL, cfg.rootPath);
      expect(r.problems).toEqual([]);
      expect(r.poolIds.length).toBe(layers.length + 1); // + the base
      await d.stop();
    },
    300_000,
  );
});
