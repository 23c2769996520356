/**
 * What metrics cost the request path: Stat and child Prepare over thinsnap's
 * socket with metrics on and off, interleaved request by request in one run.
 * Runs on any host: the pool is the in-memory fake, so a kernel call costs
 * microseconds and the metrics' share of a request is as large as it can
 * be (on a real pool a child Prepare spends milliseconds in the kernel).
 * Everything else is the daemon's own code: Observability as serve wires
 * it (metrics interceptor, timed pool and kernel calls, space hook, pool
 * watcher), the socket, Connect, HTTP/2, the snapshotter and SQLite.
 *
 *   bun bench/metrics-overhead.ts [--rounds 10] [--stats 2000] [--prepares 200] [--out FILE]
 *
 * With --out, the numbers are also written as JSON (MetricsOverhead), which
 * bench/run passes to the guest's report (bench/sections/metrics.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "../src/log.ts";
import { Observability } from "../src/metrics/observability.ts";
import { startServer } from "../src/rpc/server.ts";
import { createSnapshotsService } from "../src/rpc/service.ts";
import { ThinSnapshotter } from "../src/snapshotter/snapshotter.ts";
import { Store } from "../src/store/store.ts";
import { snapshotsClient } from "../tests/kit/client.ts";
import { FakePool } from "../tests/kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../tests/kit/fakes/options.ts";
import { stats, type Stats } from "./stats.ts";

/** One op's latencies (ms) per mode, with p99 (Stats has p95). */
export interface OnOff {
  off: Stats & { p99: number };
  on: Stats & { p99: number };
}
export interface MetricsOverhead {
  host: { cpu: string; cpus: number; bun: string };
  rounds: number;
  ops: { stat: OnOff; prepare: OnOff };
  /** Requests the "on" daemon's metrics counted (proof that they were live). */
  counted: { stat: number; prepare: number };
  /** The metrics' own work, ns: recording one RPC; timing one kernel call. */
  rpcNs: number;
  timedNs: number;
}

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? dflt : Number(process.argv[i + 1]) || dflt;
}
const ROUNDS = arg("rounds", 10);
const STATS = arg("stats", 2000);
const PREPARES = arg("prepares", 200);

const dir = mkdtempSync(join(tmpdir(), "thinsnap-metricsbench-"));
const log = createLogger("error");

async function daemon(name: "on" | "off") {
  const obs = await Observability.create({
    metricsAddress: name === "on" ? "127.0.0.1:0" : "",
    log,
    limits: TEST_OPTIONS,
  });
  const store = Store.open(join(dir, `${name}.db`));
  const pool = obs.wrapPool(new FakePool());
  const sn = await ThinSnapshotter.open(TEST_OPTIONS, { store, pool, format: async () => {}, onSpaceRefusal: obs.onSpaceRefusal });
  await obs.start({ pool, store, remover: sn.remover, reconcile: sn.lastReconcile, lowWaterMarkBlocks: null });
  const server = await startServer({ socketPath: join(dir, `${name}.sock`), service: createSnapshotsService(sn), observe: obs.observer() });
  const client = snapshotsClient(server.address);
  for (let i = 0; i < 100; i++) await client.prepare({ key: `default/1/key-${i}`, parent: "" });
  await client.prepare({ key: "default/1/parent-active", parent: "" });
  await client.commit({ name: "default/1/parent", key: "default/1/parent-active" });
  await client.stat({ key: "default/1/key-0" }); // warm
  return {
    name,
    obs,
    client,
    stat: [] as number[],
    prepare: [] as number[],
    close: async () => {
      await server.close(1000);
      await obs.close();
      await sn.close();
    },
  };
}

const on = await daemon("on");
const off = await daemon("off");

// Interleaved request by request (the order flips every round), so that a
// busy host's drift falls on both modes alike.
for (let r = 0; r < ROUNDS; r++) {
  const pair = r % 2 === 0 ? [off, on] : [on, off];
  for (let i = 0; i < STATS; i++) {
    for (const d of pair) {
      const s = performance.now();
      await d.client.stat({ key: `default/1/key-${i % 100}` });
      d.stat.push(performance.now() - s);
    }
  }
  for (let i = 0; i < PREPARES; i++) {
    for (const d of pair) {
      const s = performance.now();
      await d.client.prepare({ key: `default/2/child-${r}-${i}`, parent: "default/1/parent" });
      d.prepare.push(performance.now() - s);
    }
  }
  // Untimed: keep the stores the same size round after round.
  for (const d of pair) for (let i = 0; i < PREPARES; i++) await d.client.remove({ key: `default/2/child-${r}-${i}` });
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
const us = (ms: number): string => `${(ms * 1000).toFixed(0)} µs`;
const rows: string[][] = [];
for (const op of ["stat", "prepare"] as const) {
  const a = off[op];
  const b = on[op];
  rows.push([
    op === "stat" ? "Stat" : "child Prepare",
    String(a.length),
    `${us(pct(a, 50))} / ${us(pct(a, 99))}`,
    `${us(pct(b, 50))} / ${us(pct(b, 99))}`,
    `${(((pct(b, 50) - pct(a, 50)) / pct(a, 50)) * 100).toFixed(1)}%`,
  ]);
}
// The "on" daemon counted every request: proof that its metrics were live.
const scraped = await on.obs.metrics!.scrape();
// The metrics' own work per request, without the socket's noise: an RPC
// recorded (counter + histogram) and a timed kernel call (two clock reads +
// a histogram), averaged over many calls.
const m = on.obs.metrics!;
const N = 200_000;
for (let i = 0; i < N; i++) m.rpc("Stat", "OK", 0.0002); // warm up (JIT)
let t0 = performance.now();
for (let i = 0; i < N; i++) m.rpc("Stat", "OK", 0.0002);
const rpcNs = ((performance.now() - t0) / N) * 1e6;
const timed = on.obs.wrapPool(new FakePool());
const raw = new FakePool();
t0 = performance.now();
for (let i = 0; i < N; i++) raw.blockSize(), raw.status();
const rawNs = ((performance.now() - t0) / N) * 1e6;
t0 = performance.now();
for (let i = 0; i < N; i++) timed.blockSize(), timed.status();
const timedNs = ((performance.now() - t0) / N) * 1e6 - rawNs;
const statCount = /thinsnap_rpc_requests_total\{method="Stat",code="OK"\} (\d+)/.exec(scraped)?.[1];
const prepCount = /thinsnap_rpc_requests_total\{method="Prepare",code="OK"\} (\d+)/.exec(scraped)?.[1];
await on.close();
await off.close();
rmSync(dir, { recursive: true, force: true });

const head = ["op", "requests per mode", "metrics off p50 / p99", "metrics on p50 / p99", "p50 change"];
const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(w[i]!)).join(" | ")} |`;
console.log(`${ROUNDS} rounds, off and on interleaved request by request (fake pool, 1 client)`);
console.log(line(head));
console.log(`|${w.map((n) => "-".repeat(n + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
console.log(`metrics on counted Stat OK = ${statCount}, Prepare OK = ${prepCount}`);
console.log(`per request: recording an RPC ${rpcNs.toFixed(0)} ns; timing a kernel call ${timedNs.toFixed(0)} ns`);

const outIdx = process.argv.indexOf("--out");
if (outIdx > 0) {
  const onOff = (op: "stat" | "prepare"): OnOff => ({
    off: { ...stats(off[op]), p99: pct(off[op], 99) },
    on: { ...stats(on[op]), p99: pct(on[op], 99) },
  });
  const result: MetricsOverhead = {
    host: { cpu: cpus()[0]?.model ?? "?", cpus: cpus().length, bun: Bun.version },
    rounds: ROUNDS,
    ops: { stat: onOff("stat"), prepare: onOff("prepare") },
    counted: { stat: Number(statCount), prepare: Number(prepCount) },
    rpcNs,
    timedNs,
  };
  writeFileSync(process.argv[outIdx + 1]!, `${JSON.stringify(result, null, 2)}\n`);
}
