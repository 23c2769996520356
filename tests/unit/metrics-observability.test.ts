/**
 * Issue 14 wired as serve wires it, on the fake pool: the gRPC server over a
 * real socket with the metrics interceptor, the timed pool, space refusals,
 * the pool watcher and /metrics over HTTP.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createLogger } from "../../src/log.ts";
import { Observability } from "../../src/metrics/observability.ts";
import { startServer, type RunningServer } from "../../src/rpc/server.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { Store } from "../../src/store/store.ts";
import { snapshotsClient } from "../kit/client.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { expectSeries, scrape as scrapeAt, seriesValue } from "../kit/metrics.ts";

const scrape = async (port: number): Promise<string> => (await scrapeAt({ port })).body;

/** The failure's message (bun's rejects.toThrow(regex) hangs on a ConnectError from the http2 client). */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return String(e);
  }
  return "no error";
}

describe("Observability", () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function daemon(metricsAddress: string) {
    const dir = mkdtempSync(`${tmpdir()}/tsobs-`);
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const lines: Record<string, unknown>[] = [];
    const log = createLogger("info", "json", (l) => lines.push(JSON.parse(l)));
    const fake = new FakePool();
    const limits = { minFreeSpace: 0n, minFreeSpacePercent: 10 };
    const obs = await Observability.create({ metricsAddress, log, limits, pollIntervalMs: 20 });
    const pool = obs.wrapPool(fake);
    const store = Store.open(`${dir}/metadata.db`);
    const sn = await ThinSnapshotter.open(
      { ...TEST_OPTIONS, ...limits },
      { store, pool, format: async () => {}, kernel: obs.wrapKernel(undefined), onSpaceRefusal: obs.onSpaceRefusal, statusTtlMs: 0 },
    );
    await obs.start({ pool, store, remover: sn.remover, reconcile: sn.lastReconcile, lowWaterMarkBlocks: 1000n });
    const server: RunningServer = await startServer({
      socketPath: `${dir}/ts.sock`,
      service: createSnapshotsService(sn),
      observe: obs.observer(),
    });
    cleanups.push(async () => {
      await server.close(100);
      await obs.close();
      await sn.close();
    });
    return { obs, fake, pool, sn, store, lines, client: snapshotsClient(server.address) };
  }

  test("metrics on: RPCs, kernel calls, gauges, refusals and the refusal log, over /metrics", async () => {
    const { obs, fake, client, lines } = await daemon("127.0.0.1:0");
    const addr = obs.boundAddress;
    expect(addr?.kind).toBe("tcp");
    const port = addr!.kind === "tcp" ? addr!.port : 0;
    await client.prepare({ key: "default/1/a", parent: "" });
    await client.commit({ name: "default/2/c", key: "default/1/a" });
    await client.prepare({ key: "default/3/b", parent: "default/2/c" });
    await client.stat({ key: "default/3/b" });
    expect(await failure(client.stat({ key: "nope" }))).toContain("not_found");
    // fill the pool below min_free_space (10%): Prepare refused, once logged
    fake.write("fakepool-snap-3", 16384n * 65536n * 95n / 100n);
    for (let i = 0; i < 5; i++) expect(await failure(client.prepare({ key: `x${i}`, parent: "" }))).toContain("too little free data space");
    await Bun.sleep(60); // a pool watch poll
    const t = await scrape(port);
    expectSeries(t, {
      'thinsnap_rpc_requests_total{method="Prepare",code="OK"}': 2,
      'thinsnap_rpc_requests_total{method="Prepare",code="ResourceExhausted"}': 5,
      'thinsnap_rpc_requests_total{method="Commit",code="OK"}': 1,
      'thinsnap_rpc_requests_total{method="Stat",code="NotFound"}': 1,
      'thinsnap_kernel_call_duration_seconds_count{call="create_snap"}': 2,
      'thinsnap_kernel_call_duration_seconds_count{call="create_thin"}': 1, // the base
      'thinsnap_space_refusals_total{resource="min_free_space"}': 5,
      'thinsnap_snapshots{kind="active"}': 1,
      'thinsnap_snapshots{kind="committed"}': 1,
      'thinsnap_thin_devices{state="ready"}': 3,
      "thinsnap_remove_queue_length": 0,
      'thinsnap_pool_status{status="rw"}': 1,
      "thinsnap_pool_data_size_bytes": 16384 * 65536,
    });
    expect(seriesValue(t, "thinsnap_pool_data_used_bytes")).toBeGreaterThan(16384 * 65536 * 0.9);
    expect(t).toContain("process_resident_memory_bytes");
    expect(t).toMatch(/^thinsnap_build_info\{version="[^"]+",revision="[^"]+"\} 1$/m);
    const refusals = lines.filter((l) => String(l.msg).startsWith("refusing new snapshots"));
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ level: "warn", resource: "min_free_space" });
    expect(String(refusals[0]!.reason)).toContain("blocks of 65536 bytes used");
    // the watcher saw both thresholds crossed
    expect(lines.filter((l) => String(l.msg).includes("low-water mark"))).toHaveLength(1);
    expect(lines.filter((l) => String(l.msg).includes("fell below min_free_space"))).toHaveLength(1);
    expect(lines.find((l) => l.msg === "serving metrics")).toMatchObject({ metrics_address: `127.0.0.1:${port}`, path: "/metrics" });
  });

  test("metrics off: no wrapper, no interceptor, no server; the watcher and refusal log still work", async () => {
    const { obs, fake, pool, client, lines } = await daemon("");
    expect(obs.metrics).toBeNull();
    expect(obs.boundAddress).toBeNull();
    expect(pool).toBe(fake);
    expect(obs.observer()).toBeUndefined();
    await client.prepare({ key: "a", parent: "" });
    fake.mode = "ro";
    expect(await failure(client.prepare({ key: "b", parent: "" }))).toContain("is ro");
    await Bun.sleep(60);
    expect(lines.filter((l) => l.level === "error" && l.status === "ro")).toHaveLength(1);
    expect(lines.filter((l) => String(l.msg).startsWith("refusing new snapshots"))).toHaveLength(1);
  });

  test("start-up repairs are counted by kind", async () => {
    const log = createLogger("error");
    const obs = await Observability.create({ metricsAddress: "127.0.0.1:0", log, limits: { minFreeSpace: 0n, minFreeSpacePercent: null } });
    const store = Store.open(":memory:");
    // an interrupted Prepare: its intent row, no device in the pool
    store.insertDevice({ thinId: 77, dmName: "fakepool-snap-77", role: "snapshot", state: "creating", originId: null, sizeBytes: 1n << 20n, fsType: "ext4", active: true, discard: false, fsBytes: null });
    const pool = obs.wrapPool(new FakePool());
    const sn = await ThinSnapshotter.open(TEST_OPTIONS, { store, pool, format: async () => {} });
    expect(sn.lastReconcile?.rolledBack).toBe(1);
    await obs.start({ pool, store, remover: sn.remover, reconcile: sn.lastReconcile, lowWaterMarkBlocks: null });
    cleanups.push(async () => {
      await obs.close();
      await sn.close();
    });
    const t = await obs.metrics!.scrape();
    expect(seriesValue(t, 'thinsnap_reconcile_repairs_total{kind="rolled_back"}')).toBe(1);
    expect(t).not.toContain('thinsnap_reconcile_repairs_total{kind="busy"}');
  });

  test("a bad metrics_address stops the start with the accepted forms", async () => {
    const err = await Observability.create({ metricsAddress: "9100", log: createLogger("error"), limits: { minFreeSpace: 0n, minFreeSpacePercent: null } }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(String(err)).toMatch(/metrics_address "9100": neither host:port nor an absolute path/);
  });
});
