/**
 * thinsnap's gRPC server (src/rpc) in its own process, over
 *
 *   fake-pool: thinsnap's real snapshotter and SQLite store on the in-memory
 *     fake pool (tests/kit/fakes/fake-pool.ts) instead of device-mapper. For the
 *     List-over-10,000-snapshots row: List (Walk) never touches the pool, so
 *     this serves it exactly as `thinsnap serve` does, while 10,000 snapshots
 *     can be made in seconds instead of creating 10,000 thin devices.
 *   memory: the in-memory snapshotter (tests/kit/fakes/memory-snapshotter.ts): no
 *     store, no pool, so a call costs only gRPC (client + server), for the
 *     profile.
 *   connect: thinsnap's server (src/rpc/server.ts: node:http2 + Connect) with
 *     a Stat handler that returns one canned Info: Connect without our service
 *     wrapper (src/rpc/service.ts) or any snapshotter, for the host Stat profile.
 *   h2: no Connect either: bare node:http2 answering every request with a
 *     canned gRPC reply (an empty message, status 0), for the profile's
 *     "what does Connect's server side cost" row.
 *
 *   bun bench/fake-server.ts fake-pool|memory|connect|h2 SOCKET DBFILE
 */
import * as http2 from "node:http2";
import { rmSync } from "node:fs";
import { startServer } from "../src/rpc/server.ts";
import { createSnapshotsService } from "../src/rpc/service.ts";
import { Store } from "../src/store/store.ts";
import { FakePool } from "../tests/kit/fakes/fake-pool.ts";
import { openOnFakePool } from "../tests/kit/fakes/open.ts";
import { MemorySnapshotter } from "../tests/kit/fakes/memory-snapshotter.ts";
import type { Snapshotter } from "../src/snapshotter/types.ts";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Kind } from "../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

const [mode, socketPath, dbPath] = process.argv.slice(2);
if (!["fake-pool", "memory", "connect", "h2"].includes(mode ?? "") || !socketPath || !dbPath) {
  process.stderr.write("usage: bun bench/fake-server.ts fake-pool|memory|connect|h2 SOCKET DBFILE\n");
  process.exit(2);
}
if (mode === "h2") {
  rmSync(socketPath, { force: true });
  const empty = new Uint8Array([0, 0, 0, 0, 0]); // uncompressed, 0 bytes: any message with all fields unset
  const h2 = http2.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/grpc+proto" });
      res.write(empty);
      res.addTrailers({ "grpc-status": "0" });
      res.end();
    });
  });
  h2.listen(socketPath, () => process.stdout.write("ready\n"));
  process.on("SIGTERM", () => process.exit(0));
  await new Promise(() => {});
}
async function openThin(): Promise<Snapshotter> {
  const pool = new FakePool("benchfake");
  pool.totalDataBlocks = 1n << 30n;
  pool.totalMetadataBlocks = 1n << 30n;
  // The fake records every call; nobody reads them here.
  setInterval(() => (pool.calls = []), 1000);
  // The daemon's own status cache (statusTtlMs undefined), as `thinsnap serve` runs.
  return (await openOnFakePool(pool, Store.open(dbPath!), { poolName: "benchfake", baseImageSize: 10n << 30n }, undefined)).sn;
}
const sn: Snapshotter = mode === "fake-pool" ? await openThin() : new MemorySnapshotter();
const service = createSnapshotsService(sn);
if (mode === "connect") {
  const info = { name: "canned", parent: "", kind: Kind.ACTIVE, labels: {}, createdAt: timestampNow(), updatedAt: timestampNow() };
  service.stat = () => ({ info });
}
const server = await startServer({ socketPath, service });
process.stdout.write("ready\n");
const stop = async (): Promise<void> => {
  await server.close(1000);
  await sn.close();
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
