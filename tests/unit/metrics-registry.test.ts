/** The metric set of issue 14: names, types, labels, and the scrape-time gauges. */
import { describe, expect, test } from "bun:test";
import { DURATION_BUCKETS, Metrics, POOL_STATUSES, type PoolSample } from "../../src/metrics/registry.ts";
import { expectSeries, samples } from "../kit/metrics.ts";

function types(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of text.split("\n")) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(l);
    if (t) m.set(t[1]!, t[2]!);
  }
  return m;
}

const EXPECTED_TYPES: Record<string, string> = {
  thinsnap_rpc_requests_total: "counter",
  thinsnap_rpc_duration_seconds: "histogram",
  thinsnap_kernel_call_duration_seconds: "histogram",
  thinsnap_pool_data_used_bytes: "gauge",
  thinsnap_pool_data_size_bytes: "gauge",
  thinsnap_pool_metadata_used_bytes: "gauge",
  thinsnap_pool_metadata_size_bytes: "gauge",
  thinsnap_pool_status: "gauge",
  thinsnap_snapshots: "gauge",
  thinsnap_thin_devices: "gauge",
  thinsnap_remove_queue_length: "gauge",
  thinsnap_reconcile_repairs_total: "counter",
  thinsnap_space_refusals_total: "counter",
  thinsnap_build_info: "gauge",
};

describe("Metrics", () => {
  test("exactly the thinsnap_ metrics of the issue, with their types", async () => {
    const m = new Metrics({ version: "1.2.3", revision: "abc", processMetrics: false });
    const t = types(await m.scrape());
    const ours = [...t.entries()].filter(([n]) => n.startsWith("thinsnap_"));
    expect(Object.fromEntries(ours)).toEqual(EXPECTED_TYPES);
  });

  test("build_info and the zero series exist before any event", async () => {
    const m = new Metrics({ version: "1.2.3", revision: "abc", processMetrics: false });
    const s = samples(await m.scrape());
    expect(s.get('thinsnap_build_info{version="1.2.3",revision="abc"}')).toBe(1);
    for (const r of ["data", "metadata", "min_free_space"]) expect(s.get(`thinsnap_space_refusals_total{resource="${r}"}`)).toBe(0);
    for (const k of ["active", "view", "committed"]) expect(s.get(`thinsnap_snapshots{kind="${k}"}`)).toBe(0);
    expect(s.get("thinsnap_remove_queue_length")).toBe(0);
  });

  test("rpc counts by method and code and observes the duration", async () => {
    const m = new Metrics({ version: "v", revision: "r", processMetrics: false });
    m.rpc("Stat", "OK", 0.00015);
    m.rpc("Stat", "OK", 0.0002);
    m.rpc("Stat", "NotFound", 0.0001);
    m.rpc("Prepare", "ResourceExhausted", 2);
    const s = samples(await m.scrape());
    expectSeries(s, {
      'thinsnap_rpc_requests_total{method="Stat",code="OK"}': 2,
      'thinsnap_rpc_requests_total{method="Stat",code="NotFound"}': 1,
      'thinsnap_rpc_requests_total{method="Prepare",code="ResourceExhausted"}': 1,
      'thinsnap_rpc_duration_seconds_count{method="Stat"}': 3,
      'thinsnap_rpc_duration_seconds_bucket{le="0.0001",method="Stat"}': 1,
      'thinsnap_rpc_duration_seconds_bucket{le="0.00025",method="Stat"}': 3,
      'thinsnap_rpc_duration_seconds_bucket{le="1",method="Prepare"}': 0,
      'thinsnap_rpc_duration_seconds_bucket{le="2.5",method="Prepare"}': 1,
    });
  });

  test("buckets span 100 µs to 30 s", () => {
    expect(DURATION_BUCKETS[0]).toBe(0.0001);
    expect(DURATION_BUCKETS.at(-1)).toBe(30);
    for (let i = 1; i < DURATION_BUCKETS.length; i++) expect(DURATION_BUCKETS[i]!).toBeGreaterThan(DURATION_BUCKETS[i - 1]!);
  });

  test("kernel calls, refusals and repairs", async () => {
    const m = new Metrics({ version: "v", revision: "r", processMetrics: false });
    m.kernelCall("create_snap", 0.004);
    m.kernelCall("create_snap", 0.006);
    m.spaceRefusal("min_free_space");
    m.spaceRefusal("min_free_space");
    m.reconcileRepairs("rolledBack", 3);
    m.reconcileRepairs("deleted", 0);
    const s = samples(await m.scrape());
    expect(s.get('thinsnap_kernel_call_duration_seconds_count{call="create_snap"}')).toBe(2);
    expect(s.get('thinsnap_kernel_call_duration_seconds_sum{call="create_snap"}')).toBeCloseTo(0.01, 9);
    expect(s.get('thinsnap_space_refusals_total{resource="min_free_space"}')).toBe(2);
    expect(s.get('thinsnap_reconcile_repairs_total{kind="rolledBack"}')).toBe(3);
    expect(s.has('thinsnap_reconcile_repairs_total{kind="deleted"}')).toBe(false);
  });

  test("gauges come from the readers at scrape time; exactly one pool status is 1", async () => {
    let pool: PoolSample | null = null;
    let active = 1;
    const m = new Metrics({
      version: "v",
      revision: "r",
      processMetrics: false,
      readers: {
        pool: () => pool,
        counts: () => ({ snapshots: { active, committed: 5 }, devices: { ready: 7, deleting: 2 } }),
        removeQueueLength: () => 2,
      },
    });
    let s = samples(await m.scrape());
    expectSeries(s, {
      'thinsnap_snapshots{kind="active"}': 1,
      'thinsnap_snapshots{kind="view"}': 0,
      'thinsnap_snapshots{kind="committed"}': 5,
      'thinsnap_thin_devices{state="deleting"}': 2,
      'thinsnap_thin_devices{state="creating"}': 0,
      "thinsnap_remove_queue_length": 2,
    });
    for (const st of POOL_STATUSES) expect(s.get(`thinsnap_pool_status{status="${st}"}`)).toBe(0);

    pool = { status: "rw", dataUsedBytes: 10n << 30n, dataSizeBytes: 100n << 30n, metadataUsedBytes: 4096n, metadataSizeBytes: 1n << 24n };
    active = 4;
    s = samples(await m.scrape());
    expectSeries(s, {
      "thinsnap_pool_data_used_bytes": 10 * 2 ** 30,
      "thinsnap_pool_data_size_bytes": 100 * 2 ** 30,
      "thinsnap_pool_metadata_used_bytes": 4096,
      "thinsnap_pool_metadata_size_bytes": 2 ** 24,
      'thinsnap_snapshots{kind="active"}': 4,
      'thinsnap_pool_status{status="rw"}': 1,
    });

    pool = { status: "fail" };
    s = samples(await m.scrape());
    expect(POOL_STATUSES.map((st) => s.get(`thinsnap_pool_status{status="${st}"}`))).toEqual([0, 0, 0, 0, 1]);
    // a failed pool's last figures stay
    expect(s.get("thinsnap_pool_data_used_bytes")).toBe(10 * 2 ** 30);
  });

  test("a reader that throws keeps the scrape alive and is reported", async () => {
    const errors: string[] = [];
    const m = new Metrics({
      version: "v",
      revision: "r",
      processMetrics: false,
      readers: {
        counts: () => {
          throw new Error("store closed");
        },
        removeQueueLength: () => 9,
      },
      onReaderError: (name, e) => errors.push(`${name}: ${(e as Error).message}`),
    });
    const s = samples(await m.scrape());
    expect(s.get("thinsnap_remove_queue_length")).toBe(9);
    expect(errors).toEqual(["counts: store closed"]);
  });

  test("process metrics, event-loop lag included, work under Bun", async () => {
    const m = new Metrics({ version: "v", revision: "r" });
    // Block the loop so the delay histogram has something to show.
    await Bun.sleep(20);
    const t0 = performance.now();
    while (performance.now() - t0 < 60) {
      // busy
    }
    await Bun.sleep(30);
    const s = samples(await m.scrape());
    expect(s.get("process_resident_memory_bytes")).toBeGreaterThan(1 << 20);
    expect(s.get("process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(s.get("process_open_fds")).toBeGreaterThan(0);
    expect(s.get("nodejs_eventloop_lag_max_seconds")).toBeGreaterThan(0.04);
  });
});
