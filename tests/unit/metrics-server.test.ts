/** metrics_address parsing and the /metrics endpoint over TCP and a unix socket. */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { Metrics } from "../../src/metrics/registry.ts";
import { formatMetricsAddress, MetricsAddressError, parseMetricsAddress } from "../../src/metrics/address.ts";
import { startMetricsServer, type RunningMetricsServer } from "../../src/metrics/server.ts";

describe("parseMetricsAddress", () => {
  test("empty is off", () => {
    expect(parseMetricsAddress("")).toBeNull();
    expect(parseMetricsAddress("  ")).toBeNull();
  });
  test("host:port, [v6]:port, :port, unix path", () => {
    expect(parseMetricsAddress("127.0.0.1:9323")).toEqual({ kind: "tcp", host: "127.0.0.1", port: 9323 });
    expect(parseMetricsAddress("localhost:1")).toEqual({ kind: "tcp", host: "localhost", port: 1 });
    expect(parseMetricsAddress("[::1]:9323")).toEqual({ kind: "tcp", host: "::1", port: 9323 });
    expect(parseMetricsAddress(":9323")).toEqual({ kind: "tcp", host: "::", port: 9323 });
    expect(parseMetricsAddress("/run/thinsnap/metrics.sock")).toEqual({ kind: "unix", path: "/run/thinsnap/metrics.sock" });
  });
  test("bad addresses name the problem and the accepted forms", () => {
    const bad: [string, RegExp][] = [
      ["9323", /neither host:port nor an absolute path/],
      ["localhost", /neither host:port/],
      ["relative/metrics.sock", /neither host:port/],
      ["::1:9323", /IPv6 host goes in brackets/],
      ["host:99999", /port 99999 is above 65535/],
      ["host:port", /neither host:port/],
      ["/run/thinsnap/", /not a directory/],
      [`/${"x".repeat(120)}`, /at most 107 bytes/],
    ];
    for (const [a, re] of bad) {
      let err: unknown;
      try {
        parseMetricsAddress(a);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MetricsAddressError);
      expect((err as Error).message).toMatch(re);
      expect((err as Error).message).toContain(`metrics_address "${a}"`);
      expect((err as Error).message).toContain("127.0.0.1:9323");
    }
  });
  test("format round-trips", () => {
    for (const a of ["127.0.0.1:80", "[::1]:9323", "/x/y.sock"]) expect(formatMetricsAddress(parseMetricsAddress(a)!)).toBe(a);
  });
});

function get(target: { port?: number; socketPath?: string }, path: string, method = "GET") {
  return new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
    // agent false: no kept-alive socket from a server an earlier step closed
    const req = http.request({ ...target, host: "127.0.0.1", path, method, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"] ?? ""), body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("metrics server", () => {
  let srv: RunningMetricsServer | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await srv?.close();
    srv = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  test("GET /metrics over TCP; other paths 404, other methods 405", async () => {
    const m = new Metrics({ version: "9.9.9", revision: "r", processMetrics: false });
    m.rpc("Stat", "OK", 0.001);
    srv = await startMetricsServer({ address: parseMetricsAddress("127.0.0.1:0")!, metrics: m });
    const port = srv.address.kind === "tcp" ? srv.address.port : 0;
    expect(port).toBeGreaterThan(0);
    const r = await get({ port }, "/metrics");
    expect(r.status).toBe(200);
    expect(r.type).toContain("text/plain");
    expect(r.body).toContain('thinsnap_rpc_requests_total{method="Stat",code="OK"} 1');
    expect(r.body).toContain('thinsnap_build_info{version="9.9.9",revision="r"} 1');
    expect((await get({ port }, "/")).status).toBe(404);
    expect((await get({ port }, "/metrics", "POST")).status).toBe(405);
    const head = await get({ port }, "/metrics", "HEAD");
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
  });

  test("a unix socket: 0600, a stale socket replaced, removed on close; a regular file is refused", async () => {
    dir = mkdtempSync(`${tmpdir()}/tsmetrics-`);
    const path = `${dir}/sub/metrics.sock`;
    const m = new Metrics({ version: "v", revision: "r", processMetrics: false });
    srv = await startMetricsServer({ address: { kind: "unix", path }, metrics: m });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect((await get({ socketPath: path }, "/metrics")).body).toContain("thinsnap_pool_status");
    await srv.close();
    srv = undefined;
    expect(existsSync(path)).toBe(false);
    // A killed thinsnap leaves its socket file behind: the next start takes it over.
    const killed = Bun.spawnSync([
      process.execPath,
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    expect(killed.signalCode).toBe("SIGKILL");
    expect(statSync(path).isSocket()).toBe(true);
    srv = await startMetricsServer({ address: { kind: "unix", path }, metrics: m });
    expect((await get({ socketPath: path }, "/metrics")).status).toBe(200);
    await srv.close();
    srv = undefined;
    expect(existsSync(path)).toBe(false);
    writeFileSync(path, "not a socket");
    await expect(startMetricsServer({ address: { kind: "unix", path }, metrics: m })).rejects.toThrow(/not a socket/);
  });

  test("a port in use is a clear error", async () => {
    const m = new Metrics({ version: "v", revision: "r", processMetrics: false });
    srv = await startMetricsServer({ address: parseMetricsAddress("127.0.0.1:0")!, metrics: m });
    const port = srv.address.kind === "tcp" ? srv.address.port : 0;
    await expect(startMetricsServer({ address: { kind: "tcp", host: "127.0.0.1", port }, metrics: m })).rejects.toThrow(
      `cannot serve metrics on 127.0.0.1:${port}`,
    );
  });

  test("a failing scrape answers 500 and is reported", async () => {
    const errors: string[] = [];
    srv = await startMetricsServer({
      address: parseMetricsAddress("127.0.0.1:0")!,
      metrics: { contentType: "text/plain", scrape: () => Promise.reject(new Error("boom")) },
      onError: (msg, e) => errors.push(`${msg}: ${(e as Error).message}`),
    });
    const port = srv.address.kind === "tcp" ? srv.address.port : 0;
    expect((await get({ port }, "/metrics")).status).toBe(500);
    expect(errors).toEqual(["metrics scrape failed: boom"]);
  });
});
