/**
 * Issue 14 in the compiled binary on a real pool: `dist/thinsnap serve
 * --metrics-address` serves prom-client's exposition (our metrics and the
 * process ones, event-loop lag included), and `dist/thinsnap ls` lists the
 * snapshots from the store and the kernel while serve runs.
 *
 * Needs dist/thinsnap (node_modules/.bin/bun run build.ts) or $THINSNAP_BIN.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { snapshotsClient } from "../kit/client.ts";
import { scrape as scrapeAt, seriesValue as value } from "../kit/metrics.ts";
import { exitOf, run, socketAccepts, waitFor } from "../kit/process.ts";
import type { LsEntry } from "../../src/cli/ls.ts";

const POOL = "tsmetrics";
const BIN = process.env.THINSNAP_BIN || resolve(import.meta.dir, "../../dist/thinsnap");

// A unix socket: the guest has no loopback interface up (TCP is covered by tests/unit/metrics-server.test.ts).
let metricsSock = "";

const scrape = (): Promise<{ status: number; body: string }> => scrapeAt({ socketPath: metricsSock });

describe.skipIf(!env.available)("metrics and ls in the compiled binary", () => {
  let tp: TestPool;
  let dir: string;
  let child: ChildProcess;
  let exited: Promise<number>;
  let sock: string;
  let logFile: string;
  let flags: string[];

  beforeAll(async () => {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it first (node_modules/.bin/bun run build.ts)`);
    tp = createTestPool(POOL, { dataSize: 512 << 20 });
    dir = mkdtempSync("/tmp/tsmetrics-");
    sock = join(dir, "ts.sock");
    metricsSock = join(dir, "metrics.sock");
    logFile = join(dir, "thinsnap.log");
    const config = join(dir, "config.toml");
    writeFileSync(config, `pool_name = "${POOL}"\nroot_path = "${dir}/root"\naddress = "${sock}"\nbase_image_size = "64MB"\n`);
    flags = ["--config", config];
    const fd = openSync(logFile, "a");
    child = spawn(BIN, ["serve", ...flags, "--log-format", "json", "--metrics-address", metricsSock], {
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    exited = exitOf(child);
    let status: number | null = null;
    void exited.then((c) => (status = c));
    await waitFor("thinsnap serve", () => socketAccepts(sock), {
      timeoutMs: 120_000,
      died: () => (status === null ? null : `exited ${status}: ${readFileSync(logFile, "utf8")}`),
    });
  }, 180_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    tp?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("a scrape has our metrics, the process metrics and event-loop lag; RPCs and kernel calls counted", async () => {
    const c = snapshotsClient(sock);
    await c.prepare({ key: "default/1/a", parent: "" });
    await c.commit({ name: "default/2/layer", key: "default/1/a" });
    await c.prepare({ key: "default/3/container", parent: "default/2/layer" });
    await c.stat({ key: "default/3/container" });
    await Bun.sleep(2500); // one pool watch interval
    const { status, body } = await scrape();
    expect(status).toBe(200);
    expect(value(body, 'thinsnap_rpc_requests_total{method="Prepare",code="OK"}')).toBe(2);
    expect(value(body, 'thinsnap_rpc_requests_total{method="Commit",code="OK"}')).toBe(1);
    expect(value(body, 'thinsnap_rpc_duration_seconds_count{method="Stat"}')).toBe(1);
    expect(value(body, 'thinsnap_kernel_call_duration_seconds_count{call="create_snap"}')).toBe(2);
    expect(value(body, 'thinsnap_kernel_call_duration_seconds_count{call="activate"}')).toBeGreaterThanOrEqual(2);
    expect(value(body, 'thinsnap_pool_status{status="rw"}')).toBe(1);
    expect(value(body, "thinsnap_pool_data_size_bytes")).toBe(512 * 2 ** 20);
    expect(value(body, "thinsnap_pool_data_used_bytes")).toBeGreaterThan(0);
    expect(value(body, "thinsnap_pool_metadata_size_bytes")).toBeGreaterThan(0);
    expect(value(body, 'thinsnap_snapshots{kind="active"}')).toBe(1);
    expect(value(body, 'thinsnap_snapshots{kind="committed"}')).toBe(1);
    expect(value(body, 'thinsnap_thin_devices{state="ready"}')).toBe(3); // base + 2
    expect(body).toMatch(/^thinsnap_build_info\{version="[^"]+",revision="[0-9a-f]{12}(-dirty)?"\} 1$/m);
    expect(value(body, "process_resident_memory_bytes")).toBeGreaterThan(1 << 20);
    expect(value(body, "process_open_fds")).toBeGreaterThan(0);
    expect(value(body, "nodejs_eventloop_lag_p99_seconds")).toBeGreaterThan(0);
  });

  test("thinsnap ls reads the store and the kernel while serve runs", async () => {
    const r = await run([BIN, "ls", ...flags, "--json"]);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as LsEntry[];
    expect(rows.map((x) => [x.key, x.kind, x.active])).toEqual([
      ["default/2/layer", "committed", false],
      ["default/3/container", "active", true],
    ]);
    expect(rows[1]!.parent).toBe("default/2/layer");
    expect(rows[1]!.device).toStartWith(`${POOL}-snap-`);
    expect(rows[1]!.sizeBytes).toBe(64 * 2 ** 20);
    expect(rows[1]!.usageBytes).not.toBeNull();
    const only = JSON.parse((await run([BIN, "ls", ...flags, "--json", "--kind", "committed"])).stdout) as LsEntry[];
    expect(only.map((x) => x.key)).toEqual(["default/2/layer"]);
    const table = await run([BIN, "ls", ...flags, "--prefix", "default/3/"]);
    expect(table.stdout.split("\n")[0]).toMatch(/^KEY\s+KIND\s+PARENT/);
    expect(table.stdout).toContain("default/3/container");
    expect(table.stdout).not.toContain("default/2/layer  committed");
    // serve is unaffected
    await snapshotsClient(sock).stat({ key: "default/3/container" });
  });

  test("log lines are JSON with time, level and msg; the metrics endpoint is announced; SIGTERM stops cleanly", async () => {
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const lines = readFileSync(logFile, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const l of lines) {
      expect(typeof l.time).toBe("string");
      expect(["debug", "info", "warn", "error"]).toContain(l.level as string);
      expect(typeof l.msg).toBe("string");
    }
    expect(lines.find((l) => l.msg === "serving metrics")).toMatchObject({ metrics_address: metricsSock });
    await expect(scrape()).rejects.toThrow();
  });
});
