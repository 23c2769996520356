/**
 * HTTP/2 limits of the server (src/rpc/limits.ts, connections.ts, socket.ts):
 * SETTINGS, request bytes in flight per connection, slow bodies, connections
 * that never handshake or sit idle, the connection cap, a bounded shutdown
 * with a client that keeps its connection open, and the socket file.
 */
import { afterEach, expect, test } from "bun:test";
import * as fs from "node:fs/promises";
import * as http2 from "node:http2";
import * as os from "node:os";
import * as path from "node:path";
import { startServer, type RunningServer, type ServerLimits } from "../../src/rpc/server.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import {
  MAX_HEADER_LIST_BYTES,
  MAX_REQUEST_BYTES,
  MAX_STREAMS_PER_CONNECTION,
  SHUTDOWN_FLUSH_MS,
  SHUTDOWN_FORCE_MS,
} from "../../src/rpc/limits.ts";
import { MemorySnapshotter } from "../kit/fakes/memory-snapshotter.ts";
import { Code, codeOf, snapshotsClient } from "../kit/client.ts";
import { h2Session, partialStat } from "../kit/wire.ts";

const servers: RunningServer[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) c();
  for (const s of servers.splice(0)) await s.close(100);
});

async function serve(limits: Partial<ServerLimits> = {}): Promise<{ server: RunningServer; fake: MemorySnapshotter }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "thinsnap-h2-"));
  const fake = new MemorySnapshotter();
  const server = await startServer({ socketPath: path.join(dir, "s.sock"), service: createSnapshotsService(fake), limits });
  servers.push(server);
  return { server, fake };
}

function connect(sock: string): http2.ClientHttp2Session {
  const s = h2Session(sock);
  cleanups.push(() => s.destroy());
  return s;
}

/**
 * Opens `n` raw connections that never send a byte, from another process
 * (under Bun, a server-side close of a same-process peer's socket is not
 * seen by that peer). Resolves to how many ms each stayed open, -1 if
 * still open after `waitMs`.
 */
async function rawConnections(sock: string, n: number, waitMs: number): Promise<number[]> {
  const child = Bun.spawn(
    [
      process.execPath,
      "-e",
      `const net=require("node:net");const t=Date.now();const out=new Array(${n}).fill(-1);let left=${n};
       const done=()=>{console.log(JSON.stringify(out));process.exit(0)};
       for(let i=0;i<${n};i++){const c=net.connect(${JSON.stringify(sock)});c.on("error",()=>{});c.resume();
         c.on("close",()=>{out[i]=Date.now()-t;if(--left===0)done()})}
       setTimeout(done,${waitMs});`,
    ],
    { stdout: "pipe" },
  );
  cleanups.push(() => child.kill());
  return JSON.parse(await new Response(child.stdout).text()) as number[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test("SETTINGS announce the stream and header limits", async () => {
  const { server } = await serve();
  const s = connect(server.address);
  const settings = await new Promise<http2.Settings>((resolve) => s.once("remoteSettings", resolve));
  expect(settings.maxConcurrentStreams).toBe(MAX_STREAMS_PER_CONNECTION);
  expect(settings.maxHeaderListSize).toBe(MAX_HEADER_LIST_BYTES);
});

test("a message announced over MAX_REQUEST_BYTES is ResourceExhausted before its body arrives", async () => {
  const { server } = await serve();
  const s = connect(server.address);
  const t0 = performance.now();
  expect(await partialStat(s, MAX_REQUEST_BYTES + 1, 10)).toBe(String(Code.ResourceExhausted));
  expect(performance.now() - t0).toBeLessThan(2000);
});

test("request bytes in flight are bounded per connection; other connections are still served", async () => {
  const { server, fake } = await serve({ connectionBodyBytes: 64 * 1024, requestBodyTimeoutMs: 1000 });
  await snapshotsClient(server.address).prepare({ key: "k" });
  const s = connect(server.address);
  const held = partialStat(s, 40 * 1024, 1024); // holds 40 KiB of the budget until its body times out
  await sleep(100);
  expect(await partialStat(s, 40 * 1024, 1024)).toBe(String(Code.ResourceExhausted));
  // The same connection still takes small calls; another connection is unaffected.
  const stat = new Uint8Array([0x12, 0x01, 0x6b]); // StatSnapshotRequest{key: "k"}
  expect(await partialStat(s, stat.length, stat.length, stat)).toBe("0");
  expect((await snapshotsClient(server.address).stat({ key: "k" })).info?.name).toBe("k");
  expect(fake.entered).toBeGreaterThanOrEqual(2);
  // Once the held body times out, its bytes are released.
  expect(await held).toBe(String(Code.DeadlineExceeded));
  await sleep(50);
  const full = new Uint8Array(40 * 1024);
  full.set([0x12, 0x01, 0x6b]);
  full.set([0x1a, 0x80, 0x40], 3); // field 3 (unknown, skipped), 8192 bytes… of zeros that follow
  expect(await partialStat(s, full.length, full.length, full)).not.toBe(String(Code.ResourceExhausted));
});

test("a body that does not arrive within the body timeout is DeadlineExceeded", async () => {
  const { server } = await serve({ requestBodyTimeoutMs: 300 });
  const s = connect(server.address);
  const t0 = performance.now();
  expect(await partialStat(s, 1000, 10)).toBe(String(Code.DeadlineExceeded));
  const ms = performance.now() - t0;
  expect(ms).toBeGreaterThanOrEqual(250);
  expect(ms).toBeLessThan(3000);
});

test("a connection that never sends the preface is closed after the handshake timeout", async () => {
  const { server } = await serve({ handshakeTimeoutMs: 300 });
  const [ms] = await rawConnections(server.address, 1, 3000);
  console.log(`preface-less connection closed after ${ms} ms (handshake timeout 300 ms)`);
  expect(ms).toBeGreaterThanOrEqual(250);
  expect(ms).toBeLessThan(3000);
});

test("an idle connection is closed after the idle timeout; the client reconnects", async () => {
  const { server } = await serve({ idleTimeoutMs: 300 });
  const s = connect(server.address);
  const stat = new Uint8Array([0x12, 0x01, 0x6b]);
  expect(await partialStat(s, stat.length, stat.length, stat)).toBe(String(Code.NotFound));
  const t0 = performance.now();
  await new Promise<void>((resolve) => (s.closed ? resolve() : s.once("close", () => resolve())));
  expect(performance.now() - t0).toBeLessThan(3000);
  // Connect's client (like grpc-go) simply opens a new connection.
  const c = snapshotsClient(server.address);
  expect(await codeOf(c.stat({ key: "k" }))).toBe(Code.NotFound);
  await sleep(500);
  expect(await codeOf(c.stat({ key: "k" }))).toBe(Code.NotFound);
});

test("at the connection cap, the oldest idle connection makes room for a new client", async () => {
  const { server } = await serve({ maxConnections: 4 });
  const raws = rawConnections(server.address, 10, 1500);
  await sleep(500);
  expect(await codeOf(snapshotsClient(server.address).stat({ key: "k" }))).toBe(Code.NotFound);
  const open = (await raws).filter((ms) => ms < 0).length;
  console.log(`connection cap 4: ${10 - open} of 10 preface-less connections closed, a real client served`);
  expect(open).toBeLessThanOrEqual(3);
});

test("close() returns within grace + flush + force while a client keeps its connection open", async () => {
  const { server, fake } = await serve();
  // A grpc-go-style peer: one call done, connection kept, GOAWAY ignored…
  const s = connect(server.address);
  const stat = new Uint8Array([0x12, 0x01, 0x6b]);
  expect(await partialStat(s, stat.length, stat.length, stat)).toBe(String(Code.NotFound));
  // …and a second one with a call whose body never ends, and a handler stuck.
  const s2 = connect(server.address);
  const stuckBody = partialStat(s2, 1000, 10);
  fake.gate = new Promise<void>(() => {});
  const stuckCall = codeOf(snapshotsClient(server.address).stat({ key: "k" }));
  // …and one in another process that speaks HTTP/2 and never closes.
  const keeper = Bun.spawn(
    [
      process.execPath,
      "-e",
      `const c=require("node:net").connect(${JSON.stringify(server.address)});c.on("error",()=>{});c.resume();
       c.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n"),Buffer.from([0,0,0,4,0,0,0,0,0])]));
       setTimeout(()=>process.exit(0),10000);`,
    ],
    { stdout: "ignore" },
  );
  cleanups.push(() => keeper.kill());
  await sleep(300);
  const grace = 300;
  const t0 = performance.now();
  await server.close(grace);
  const ms = performance.now() - t0;
  console.log(`shutdown with open connections: ${Math.round(ms)} ms (grace ${grace})`);
  expect(ms).toBeLessThan(grace + 2 * SHUTDOWN_FLUSH_MS + SHUTDOWN_FORCE_MS + 500);
  expect(await stuckCall).toBe(Code.Unavailable);
  await stuckBody;
  await expect(fs.lstat(server.address)).rejects.toThrow();
});

test("the socket directory must not be writable by others", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "thinsnap-h2-"));
  await fs.chmod(dir, 0o777);
  await expect(
    startServer({ socketPath: path.join(dir, "s.sock"), service: createSnapshotsService(new MemorySnapshotter()) }),
  ).rejects.toThrow(/writable by others/);
  expect(await fs.readdir(dir)).toEqual([]);
});

test("the socket appears with its final mode (umask 000): no window with a wider one", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "thinsnap-h2-"));
  await fs.chmod(dir, 0o755);
  const sock = path.join(dir, "s.sock");
  // A watcher in another process records every mode the path shows.
  const watcher = Bun.spawn(
    [
      process.execPath,
      "-e",
      `const fs=require("node:fs");const seen=new Set();const end=Date.now()+4000;
       while(Date.now()<end){try{seen.add((fs.lstatSync(${JSON.stringify(sock)}).mode&0o777).toString(8))}catch{}
       if(seen.size&&Date.now()>end-3000)break}
       console.log([...seen].join(","))`,
    ],
    { stdout: "pipe" },
  );
  await sleep(100);
  const old = process.umask(0);
  let server: RunningServer;
  try {
    server = await startServer({ socketPath: sock, service: createSnapshotsService(new MemorySnapshotter()) });
  } finally {
    process.umask(old);
  }
  servers.push(server);
  const seen = (await new Response(watcher.stdout).text()).trim();
  expect(seen).toBe("600");
  // No private bind directory is left behind.
  expect(await fs.readdir(dir)).toEqual(["s.sock"]);
}, 10_000);

test("refused streams do not stall their connection: 40 huge announced bodies, then a call on the same connection", async () => {
  const { server } = await serve();
  const s = connect(server.address);
  // Each sends 64 KiB: together far more than the connection's flow-control window.
  const codes = await Promise.all(Array.from({ length: 40 }, () => partialStat(s, 16 * 2 ** 20 - 1, 64 * 1024)));
  expect(new Set(codes)).toEqual(new Set([String(Code.ResourceExhausted)]));
  const stat = new Uint8Array([0x12, 0x01, 0x6b]);
  expect(await partialStat(s, stat.length, stat.length, stat)).toBe(String(Code.NotFound));
});
