/** Large but legal inputs over the real socket: huge label maps in List, megabyte keys in errors. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { startServer, type RunningServer } from "../../src/rpc/server.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { Code, codeOf, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";

let dir: string;
let sn: ThinSnapshotter;
let server: RunningServer;
let client: SnapshotsClient;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "thinsnap-limits-"));
  sn = await ThinSnapshotter.open(TEST_OPTIONS, { store: Store.open(join(dir, "db")), pool: new FakePool(), format: async () => {} });
  server = await startServer({ socketPath: join(dir, "sock"), service: createSnapshotsService(sn) });
  client = snapshotsClient(server.address);
});
afterAll(async () => {
  await server.close(500);
  await sn.close();
  rmSync(dir, { recursive: true, force: true });
});

test("List splits batches by size: three snapshots with ~7 MiB of labels each", async () => {
  const labels: Record<string, string> = {};
  for (let i = 0; i < 1800; i++) labels[`k${i}`] = "v".repeat(4000);
  for (const k of ["a", "b", "c"]) await sn.prepare(k, "", { labels });
  const names: string[] = [];
  for await (const res of client.list({})) for (const i of res.info) names.push(i.name);
  expect(names.sort()).toEqual(["a", "b", "c"]);
  for (const k of ["a", "b", "c"]) await sn.remove(k);
}, 60_000);

test("a 1 MiB key still gets its NotFound (the message is bounded)", async () => {
  const key = "k".repeat(1 << 20);
  expect(await codeOf(client.stat({ key }))).toBe(Code.NotFound);
  expect(await codeOf(client.stat({ key: "short" }))).toBe(Code.NotFound);
});
