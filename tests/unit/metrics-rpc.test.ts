/** RPC metrics from the service's call interceptor, on the real Snapshots service (Connect's in-process router transport). */
import { describe, expect, test } from "bun:test";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import { Metrics } from "../../src/metrics/registry.ts";
import { rpcInterceptors } from "../../src/rpc/interceptors.ts";
import { MemorySnapshotter } from "../kit/fakes/memory-snapshotter.ts";
import { resourceExhausted } from "../../src/errors.ts";
import { expectSeries, seriesValue } from "../kit/metrics.ts";

function setup() {
  const sn = new MemorySnapshotter();
  const m = new Metrics({ version: "v", revision: "r", processMetrics: false });
  const transport = createRouterTransport((router) => router.service(Snapshots, createSnapshotsService(sn)), {
    router: { interceptors: rpcInterceptors({ observe: (method, code, s) => m.rpc(method, code, s) }) },
  });
  return { sn, m, client: createClient(Snapshots, transport) };
}

describe("RPC metrics", () => {
  test("every unary RPC counted by method and code, and timed", async () => {
    const { sn, m, client } = setup();
    await client.prepare({ key: "a", parent: "" });
    await client.stat({ key: "a" });
    await client.stat({ key: "a" });
    await expect(client.stat({ key: "missing" })).rejects.toThrow();
    sn.failNext("prepare", resourceExhausted("pool full"));
    await expect(client.prepare({ key: "b", parent: "" })).rejects.toThrow();
    await expect(client.prepare({ key: "a", parent: "" })).rejects.toThrow();
    const t = await m.scrape();
    expectSeries(t, {
      'thinsnap_rpc_requests_total{method="Stat",code="OK"}': 2,
      'thinsnap_rpc_requests_total{method="Stat",code="NotFound"}': 1,
      'thinsnap_rpc_requests_total{method="Prepare",code="OK"}': 1,
      'thinsnap_rpc_requests_total{method="Prepare",code="ResourceExhausted"}': 1,
      'thinsnap_rpc_requests_total{method="Prepare",code="AlreadyExists"}': 1,
      'thinsnap_rpc_duration_seconds_count{method="Stat"}': 3,
      'thinsnap_rpc_duration_seconds_count{method="Prepare"}': 3,
    });
  });

  test("a streaming List is counted once, when its last message is out", async () => {
    const { m, client } = setup();
    for (let i = 0; i < 250; i++) await client.prepare({ key: `k${i}`, parent: "" });
    let n = 0;
    for await (const batch of client.list({ filters: [] })) {
      n += batch.info.length;
      // still streaming: not counted yet
      expect(seriesValue(await m.scrape(), 'thinsnap_rpc_requests_total{method="List",code="OK"}')).toBeUndefined();
    }
    expect(n).toBe(250);
    const t = await m.scrape();
    expect(seriesValue(t, 'thinsnap_rpc_requests_total{method="List",code="OK"}')).toBe(1);
    expect(seriesValue(t, 'thinsnap_rpc_duration_seconds_count{method="List"}')).toBe(1);
  });

  test("a List that fails is counted with its code", async () => {
    const { m, client } = setup();
    const it = client.list({ filters: ["labels.\"unterminated"] });
    await expect((async () => {
      for await (const _ of it) {
        // drain
      }
    })()).rejects.toThrow();
    const t = await m.scrape();
    expect(seriesValue(t, 'thinsnap_rpc_requests_total{method="List",code="InvalidArgument"}')).toBe(1);
  });
});
