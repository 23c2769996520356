/**
 * Unary Stat over thinsnap's socket: 1 and 16 concurrent clients, p50/p99 and
 * requests/s. Runs on any host: Stat reads only the store, so the pool behind
 * the snapshotter is the in-memory fake (the socket, Connect, HTTP/2 framing,
 * the service and SQLite are the real ones).
 *
 *   bun bench/stat-throughput.ts [--requests 20000]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../src/store/store.ts";
import { startServer } from "../src/rpc/server.ts";
import { createSnapshotsService } from "../src/rpc/service.ts";
import { FakePool } from "../tests/kit/fakes/fake-pool.ts";
import { openOnFakePool } from "../tests/kit/fakes/open.ts";
import { snapshotsClient } from "../tests/kit/client.ts";

const total = Number(process.argv[process.argv.indexOf("--requests") + 1] || 20000) || 20000;
const dir = mkdtempSync(join(tmpdir(), "thinsnap-statbench-"));
const { sn } = await openOnFakePool(new FakePool(), Store.open(join(dir, "metadata.db")), {}, undefined);
for (let i = 0; i < 100; i++) await sn.prepare(`default/1/key-${i}`, "", { labels: { "containerd.io/snapshot/x": String(i) } });
const server = await startServer({ socketPath: join(dir, "sock"), service: createSnapshotsService(sn) });

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const rows: string[][] = [];
for (const clients of [1, 16]) {
  const cs = Array.from({ length: clients }, () => snapshotsClient(server.address));
  for (const c of cs) await c.stat({ key: "default/1/key-0" }); // connect + warm up
  const lat: number[] = [];
  const per = Math.floor(total / clients);
  const t0 = performance.now();
  await Promise.all(
    cs.map(async (c, ci) => {
      for (let i = 0; i < per; i++) {
        const s = performance.now();
        await c.stat({ key: `default/1/key-${(i + ci) % 100}` });
        lat.push(performance.now() - s);
      }
    }),
  );
  const wall = performance.now() - t0;
  lat.sort((a, b) => a - b);
  rows.push([
    String(clients),
    String(lat.length),
    `${(pct(lat, 50) * 1000).toFixed(0)} µs`,
    `${(pct(lat, 99) * 1000).toFixed(0)} µs`,
    `${Math.round((lat.length / wall) * 1000)}`,
  ]);
}
await server.close(1000);
await sn.close();
rmSync(dir, { recursive: true, force: true });

const head = ["clients", "requests", "p50", "p99", "requests/s"];
const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (r: string[]): string => r.map((c, i) => c.padStart(w[i]!)).join("  ");
console.log(`Stat over the unix socket (Bun ${Bun.version}, ${navigator.hardwareConcurrency} cpus)`);
console.log(line(head));
for (const r of rows) console.log(line(r));
