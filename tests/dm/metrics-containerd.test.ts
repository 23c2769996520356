/**
 * Issue 14's done-when, under a REAL containerd (Debian's 1.6, thinsnap as its
 * proxy snapshotter): `/metrics` of the running daemon is scraped (over a
 * unix socket: the guest has no loopback up) before and after RPCs the test
 * makes itself, and while containerd imports an image and `ctr run`s it.
 *  - every metric of src/metrics/registry.ts is in every scrape;
 *  - thinsnap_rpc_requests_total moves by exactly the calls this test made
 *    (method and code), and by more than 0 for containerd's Prepare, Commit
 *    and Mounts; each RPC is timed once;
 *  - the pool gauges equal the kernel's status as `thinsnap pool status
 *    --json` reads it, which also shows the low-water mark and min_free_space;
 *  - the snapshot and device gauges equal what thinsnap lists.
 *
 * Runs in the qemu guest: tests/vm/vmrun -- node_modules/.bin/bun test ./tests/dm/metrics-containerd.test.ts
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Metrics } from "../../src/metrics/registry.ts";
import { METADATA_BLOCK_BYTES, SPACE_RESOURCES } from "../../src/snapshotter/space.ts";
import { ctrRunMissing, startContainerd, type Containerd } from "../kit/containerd.ts";
import { buildImage, type BuiltImage } from "../kit/oci-image.ts";
import { freshFilePool, poolStatus, removeFreshFilePool } from "../kit/cli.ts";
import { Daemon, inDir } from "../kit/daemon.ts";
import { backendSnapshots, Code, errorOf, listAll, snapshotsClient } from "../kit/client.ts";
import { samples, scrape as scrapeAt } from "../kit/metrics.ts";
import { waitFor } from "../kit/process.ts";
import { FailureFlag } from "../kit/steps.ts";
import { dm } from "./env.ts";

const POOL = "thinsnap-metrics-ctrd";
const DIR = "/tmp/thinsnap-metrics-ctrd";
const METRICS_SOCK = join(DIR, "metrics.sock");
const IMAGE = "docker.io/library/thinsnap-metrics:latest";
const LAYERS = 3;
/** The pool watcher reads the kernel every 2 s (POOL_WATCH_INTERVAL_MS): one interval and a margin. */
const WATCH_SETTLE_MS = 2600;

const SKIP = dm.available ? ctrRunMissing() : dm.reason;
if (SKIP !== null) console.warn(`tests/dm/metrics-containerd.test.ts SKIPPED: ${SKIP}`);

/** Every metric name the registry defines: the list the scrapes are checked against (no copy of it here). */
const METRIC_NAMES: string[] = new Metrics({ version: "x", revision: "x", processMetrics: false })
  .registry.getMetricsAsArray()
  .map((m) => m.name);

const scrape = (): Promise<{ status: number; body: string }> => scrapeAt({ socketPath: METRICS_SOCK });

/** The samples of a scrape: series (name and labels as printed) -> value. */
type Samples = Map<string, number>;

async function scrapeSamples(): Promise<{ body: string; s: Samples }> {
  const r = await scrape();
  expect(r.status).toBe(200);
  return { body: r.body, s: samples(r.body) };
}

const v = (s: Samples, series: string): number => s.get(series) ?? 0;
const requests = (s: Samples, method: string, code = "OK"): number => v(s, `thinsnap_rpc_requests_total{method="${method}",code="${code}"}`);
/** Requests of a method, whatever their code. */
const requestsAll = (s: Samples, method: string): number =>
  [...s].filter(([k]) => k.startsWith(`thinsnap_rpc_requests_total{method="${method}",`)).reduce((a, [, n]) => a + n, 0);
const timed = (s: Samples, method: string): number => v(s, `thinsnap_rpc_duration_seconds_count{method="${method}"}`);
const kernel = (s: Samples, call: string): number => v(s, `thinsnap_kernel_call_duration_seconds_count{call="${call}"}`);

/**
 * Every registry metric has its TYPE line and samples, except the labelled
 * counters nothing has counted yet: the repair counter on a clean start (it
 * counts per repair kind) and, before the first RPC, the RPC ones.
 */
function expectEveryMetric(body: string, rpcsYet = true): void {
  const missing = METRIC_NAMES.filter((n) => !new RegExp(`^# TYPE ${n} `, "m").test(body));
  expect(missing).toEqual([]);
  const withoutSamples = METRIC_NAMES.filter((n) => !new RegExp(`^${n}(_bucket|_sum|_count)?(\\{| )`, "m").test(body));
  const uncounted = rpcsYet ? [] : ["thinsnap_rpc_requests_total", "thinsnap_rpc_duration_seconds"];
  expect(withoutSamples.sort()).toEqual([...uncounted, "thinsnap_reconcile_repairs_total"].sort());
}

describe.skipIf(SKIP !== null)("metrics of the real daemon under containerd 1.6", () => {
  let d: Daemon;
  let c: Containerd | null = null;
  let img: BuiltImage;
  const flag = new FailureFlag();
  const { step } = flag;

  beforeAll(async () => {
    await freshFilePool(POOL, DIR);
    const o = inDir(join(DIR, "thinsnap"), { poolName: POOL, baseImageSize: "64MB", metricsAddress: METRICS_SOCK });
    d = await Daemon.serving({ ...o, readyTimeoutMs: 120_000 });
    img = buildImage({ out: join(DIR, "image.tar"), name: IMAGE, layers: LAYERS });
  }, 300_000);

  afterAll(async () => {
    await c?.shutdown();
    if (d && (await d.stop()) !== 0) flag.failed = true;
    flag.printLogTails(60, { thinsnap: d, containerd: c });
    await removeFreshFilePool(POOL, DIR);
  }, 120_000);

  test("RPCs made on thinsnap's socket move the request counters by exactly those calls", step(async () => {
    const before = await scrapeSamples();
    expectEveryMetric(before.body, false); // no RPC yet
    expect(v(before.s, 'thinsnap_pool_status{status="rw"}')).toBe(1);

    const t = snapshotsClient(d.address);
    await t.prepare({ key: "m/1/a", parent: "" });
    await t.commit({ key: "m/1/a", name: "m/2/c" });
    const b = await t.prepare({ key: "m/3/b", parent: "m/2/c" });
    expect(b.mounts.length).toBe(1);
    await t.mounts({ key: "m/3/b" });
    await t.stat({ key: "m/3/b" });
    await t.stat({ key: "m/2/c" });
    expect((await errorOf(t.stat({ key: "m/9/none" }))).code).toBe(Code.NotFound);
    expect((await errorOf(t.prepare({ key: "m/3/b", parent: "m/2/c" }))).code).toBe(Code.AlreadyExists);
    expect((await listAll(t)).map((i) => i.name).sort()).toEqual(["m/2/c", "m/3/b"]);
    await t.usage({ key: "m/2/c" });
    await t.remove({ key: "m/3/b" });
    await t.remove({ key: "m/2/c" });

    const after = await scrapeSamples();
    expectEveryMetric(after.body);
    const delta = (f: (s: Samples) => number): number => f(after.s) - f(before.s);
    expect({
      prepareOk: delta((s) => requests(s, "Prepare")),
      prepareExists: delta((s) => requests(s, "Prepare", "AlreadyExists")),
      commit: delta((s) => requests(s, "Commit")),
      mounts: delta((s) => requests(s, "Mounts")),
      statOk: delta((s) => requests(s, "Stat")),
      statNotFound: delta((s) => requests(s, "Stat", "NotFound")),
      list: delta((s) => requests(s, "List")),
      usage: delta((s) => requests(s, "Usage")),
      remove: delta((s) => requests(s, "Remove")),
      view: delta((s) => requestsAll(s, "View")),
      update: delta((s) => requestsAll(s, "Update")),
      cleanup: delta((s) => requestsAll(s, "Cleanup")),
    }).toEqual({
      prepareOk: 2,
      prepareExists: 1,
      commit: 1,
      mounts: 1,
      statOk: 2,
      statNotFound: 1,
      list: 1,
      usage: 1,
      remove: 2,
      view: 0,
      update: 0,
      cleanup: 0,
    });
    // every RPC timed once, whatever its code
    for (const m of ["Prepare", "Commit", "Mounts", "Stat", "List", "Usage", "Remove"]) {
      expect({ m, timed: delta((s) => timed(s, m)) }).toEqual({ m, timed: delta((s) => requestsAll(s, m)) });
    }
    // the kernel work behind them: two snapshots made, two deleted
    expect(delta((s) => kernel(s, "create_snap"))).toBe(2);
    expect(delta((s) => kernel(s, "delete"))).toBe(2);
    expect(delta((s) => kernel(s, "activate"))).toBeGreaterThanOrEqual(2);
    expect(delta((s) => kernel(s, "deactivate"))).toBeGreaterThanOrEqual(2);
    expect(v(after.s, 'thinsnap_snapshots{kind="active"}') + v(after.s, 'thinsnap_snapshots{kind="committed"}')).toBe(0);
    expect(v(after.s, 'thinsnap_thin_devices{state="ready"}')).toBe(1); // the base device
  }), 120_000);

  test("scrapes during ctr images import and ctr run: containerd's calls counted, gauges match the kernel", step(async () => {
    c = await startContainerd({ dir: join(DIR, "containerd"), proxySnapshotters: { thinsnap: d.address }, logLevel: "info" });
    const ctrd = c;
    const before = await scrapeSamples();

    // A scraper running all along: every scrape answers, the counters never go back.
    let scraping = true;
    const seen: { status: number; prepares: number }[] = [];
    const scraper = (async () => {
      while (scraping) {
        const r = await scrape();
        seen.push({ status: r.status, prepares: requests(samples(r.body), "Prepare") });
        await Bun.sleep(200);
      }
    })();
    try {
      const imp = await ctrd.ctr("images", "import", "--snapshotter", "thinsnap", img.path);
      expect({ code: imp.code, stderr: imp.stderr }).toEqual({ code: 0, stderr: "" });
      const r = await ctrd.ctr("run", "--rm", "--snapshotter", "thinsnap", IMAGE, "hello", "echo", "hello");
      expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 0, stdout: "hello\n", stderr: "" });
      // --rm removed the container's snapshot: the image's committed layers are left
      await waitFor(
        "removal of the container's snapshot",
        async () => {
          const s = await backendSnapshots(d.address);
          return s.length === LAYERS && s.every((x) => x.kind === "committed");
        },
        { timeoutMs: 30_000, intervalMs: 250 },
      );
    } finally {
      scraping = false;
      await scraper;
    }
    expect(seen.length).toBeGreaterThan(2);
    expect(seen.filter((x) => x.status !== 200)).toEqual([]);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.prepares).toBeGreaterThanOrEqual(seen[i - 1]!.prepares);

    await Bun.sleep(WATCH_SETTLE_MS); // the pool gauges come from the watcher's last read
    const after = await scrapeSamples();
    const report = await poolStatus(POOL, d.rootPath);
    expectEveryMetric(after.body);
    const delta = (f: (s: Samples) => number): number => f(after.s) - f(before.s);
    // containerd's own calls: one Prepare and Commit per layer, a Prepare and Mounts for the container
    expect(delta((s) => requests(s, "Prepare"))).toBeGreaterThanOrEqual(LAYERS + 1);
    expect(delta((s) => requests(s, "Commit"))).toBeGreaterThanOrEqual(LAYERS);
    expect(delta((s) => requests(s, "Mounts"))).toBeGreaterThan(0);
    expect(delta((s) => requests(s, "Remove"))).toBeGreaterThan(0);
    expect(delta((s) => kernel(s, "create_snap"))).toBe(delta((s) => requests(s, "Prepare")));

    // the pool gauges are the kernel's figures
    expect(report.mode).toBe("rw");
    expect(v(after.s, 'thinsnap_pool_status{status="rw"}')).toBe(1);
    for (const st of ["ro", "out_of_data_space", "needs_check", "fail"]) expect(v(after.s, `thinsnap_pool_status{status="${st}"}`)).toBe(0);
    expect({
      dataUsed: v(after.s, "thinsnap_pool_data_used_bytes"),
      dataSize: v(after.s, "thinsnap_pool_data_size_bytes"),
      metadataUsed: v(after.s, "thinsnap_pool_metadata_used_bytes"),
      metadataSize: v(after.s, "thinsnap_pool_metadata_size_bytes"),
    }).toEqual({
      dataUsed: Number(report.data.usedBytes),
      dataSize: Number(report.data.totalBytes),
      metadataUsed: Number(BigInt(report.metadata.used) * METADATA_BLOCK_BYTES),
      metadataSize: Number(BigInt(report.metadata.total) * METADATA_BLOCK_BYTES),
    });
    expect(Number(report.data.usedBytes)).toBeGreaterThan(0);
    expect(report.data.totalBytes).toBe(String(1 << 30));

    // pool status shows the thresholds: the default low-water mark (a tenth of the blocks) and min_free_space (10 %)
    const blocks = BigInt(report.data.total);
    const bs = BigInt(report.blockSize);
    expect(report.thresholds).toEqual({
      freeBytes: String((blocks - BigInt(report.data.used)) * bs),
      lowWaterMark: { bytes: String((blocks / 10n) * bs), below: false },
      minFreeSpace: { bytes: String((blocks * bs) / 10n), below: false },
    });

    // snapshot and device gauges: what thinsnap holds
    expect(v(after.s, 'thinsnap_snapshots{kind="committed"}')).toBe(LAYERS);
    expect(v(after.s, 'thinsnap_snapshots{kind="active"}')).toBe(0);
    expect(v(after.s, 'thinsnap_snapshots{kind="view"}')).toBe(0);
    expect(report.snapshots).toEqual({ committed: LAYERS });
    expect(v(after.s, 'thinsnap_thin_devices{state="ready"}')).toBe(LAYERS + 1); // and the base
    expect(v(after.s, 'thinsnap_thin_devices{state="creating"}')).toBe(0);
    expect(v(after.s, 'thinsnap_thin_devices{state="deleting"}')).toBe(0);
    expect(v(after.s, "thinsnap_remove_queue_length")).toBe(0);
    const refusals = [...after.s].filter(([k]) => k.startsWith("thinsnap_space_refusals_total{"));
    expect(refusals.map(([k, n]) => [k.replace(/^.*resource="([^"]+)".*$/, "$1"), n])).toEqual(SPACE_RESOURCES.map((r) => [r, 0]));
    expect(after.body).toMatch(/^thinsnap_build_info\{version="[^"]+",revision="[^"]+"\} 1$/m);
    // no error in thinsnap's log
    expect(d.logs().split("\n").filter((l) => / level=error /.test(l))).toEqual([]);
  }), 300_000);
});
