/**
 * The gRPC layer end to end: a real unix socket, node:http2 server, Connect's
 * gRPC client -- the same wire protocol containerd's proxy client speaks.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs/promises";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { SnapshotterError, type ErrorCode } from "../../src/errors.ts";
import { Kind, Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";
import { socketAccepts } from "../kit/process.ts";
import { startServer, type RunningServer } from "../../src/rpc/server.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import { MemorySnapshotter } from "../kit/fakes/memory-snapshotter.ts";

type SnapshotsClient = Client<typeof Snapshots>;

let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "thinsnap-rpc-"));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

let seq = 0;
/** A fresh socket path in a not-yet-existing directory. */
function freshSocket(): string {
  seq++;
  return path.join(tmp, `run${seq}`, "thinsnap.sock");
}

function clientFor(socketPath: string): SnapshotsClient {
  const transport = createGrpcTransport({
    // The authority is irrelevant on a unix socket; the connection is ours.
    baseUrl: "http://localhost",
    nodeOptions: { createConnection: () => net.connect(socketPath) },
  });
  return createClient(Snapshots, transport);
}

async function codeOf(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  throw new Error("call succeeded, an error was expected");
}

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("call succeeded, an error was expected");
}

/** Resolves once `cond` holds, polling; fails the test after 5 s. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await Bun.sleep(10);
  }
  throw new Error("condition not reached");
}

describe("snapshots service over a unix socket", () => {
  let fake: MemorySnapshotter;
  let server: RunningServer;
  let client: SnapshotsClient;

  beforeEach(async () => {
    fake = new MemorySnapshotter();
    server = await startServer({ socketPath: freshSocket(), service: createSnapshotsService(fake) });
    client = clientFor(server.address);
  });
  afterEach(async () => {
    await server.close(1000);
  });

  test("prepare, mounts, commit, view, stat, usage, remove, cleanup", async () => {
    const prep = await client.prepare({ snapshotter: "ignored", key: "k1", labels: { a: "1" } });
    expect(prep.mounts).toHaveLength(1);
    expect(prep.mounts[0]).toMatchObject({ type: "ext4", source: "/dev/mapper/fake-k1", target: "", options: ["rw"] });

    const m = await client.mounts({ key: "k1" });
    expect(m.mounts[0]?.source).toBe("/dev/mapper/fake-k1");

    await client.commit({ name: "layer1", key: "k1", labels: { b: "2" } });
    const st = await client.stat({ key: "layer1" });
    expect(st.info?.name).toBe("layer1");
    expect(st.info?.kind).toBe(Kind.COMMITTED);
    expect(st.info?.parent).toBe("");
    expect(st.info?.labels).toEqual({ b: "2" });
    const created = st.info?.createdAt;
    expect(created).toBeDefined();
    if (created) expect(Math.abs(timestampDate(created).getTime() - Date.now())).toBeLessThan(10_000);

    const v = await client.view({ key: "v1", parent: "layer1" });
    expect(v.mounts[0]?.options).toEqual(["ro"]);
    const vs = await client.stat({ key: "v1" });
    expect(vs.info?.kind).toBe(Kind.VIEW);
    expect(vs.info?.parent).toBe("layer1");

    await client.prepare({ key: "k2", parent: "layer1" });
    expect((await client.stat({ key: "k2" })).info?.kind).toBe(Kind.ACTIVE);

    // int64 survives beyond 2^53 as bigint.
    fake.usages.set("layer1", { size: (1n << 60n) + 1n, inodes: 12345n });
    const u = await client.usage({ key: "layer1" });
    expect(u.size).toBe((1n << 60n) + 1n);
    expect(u.inodes).toBe(12345n);

    await client.remove({ key: "v1" });
    await client.remove({ key: "k2" });
    await client.remove({ key: "layer1" });
    expect(await codeOf(client.stat({ key: "layer1" }))).toBe(Code.NotFound);

    await client.cleanup({ snapshotter: "whatever" });
    expect(fake.cleanups).toBe(1);
  });

  test("commit passes the containerd 2.x parent field to the snapshotter", async () => {
    await client.prepare({ key: "k" });
    await client.commit({ name: "base", key: "k" });
    await client.prepare({ key: "k2", parent: "base" });
    await client.commit({ name: "c2", key: "k2", parent: "base" });
    expect(fake.lastCommitOpts?.parent).toBe("base");
    expect((await client.stat({ key: "c2" })).info?.parent).toBe("base");
  });

  test("update passes field mask paths through", async () => {
    await client.prepare({ key: "k", labels: { keep: "1", drop: "2" } });
    const r = await client.update({
      info: { name: "k", labels: { add: "3", keep: "changed-but-not-in-mask" } },
      updateMask: { paths: ["labels.add", "labels.drop"] },
    });
    expect(r.info?.labels).toEqual({ keep: "1", add: "3" });

    // No mask: all mutable fields (the labels) are replaced.
    const all = await client.update({ info: { name: "k", labels: { only: "x" } } });
    expect(all.info?.labels).toEqual({ only: "x" });
    expect(all.info?.kind).toBe(Kind.ACTIVE);

    expect(await codeOf(client.update({ info: { name: "k" }, updateMask: { paths: ["parent"] } }))).toBe(
      Code.InvalidArgument,
    );
    expect(await codeOf(client.update({ info: { name: "missing" } }))).toBe(Code.NotFound);
  });

  test("list streams in batches of at most 100", async () => {
    for (let i = 0; i < 250; i++) await client.prepare({ key: `k${String(i).padStart(3, "0")}` });
    const sizes: number[] = [];
    const names = new Set<string>();
    for await (const batch of client.list({ snapshotter: "x" })) {
      sizes.push(batch.info.length);
      for (const info of batch.info) names.add(info.name);
    }
    expect(sizes).toEqual([100, 100, 50]);
    expect(names.size).toBe(250);

    const one: string[] = [];
    for await (const batch of client.list({ filters: ["name==k007", "name==k100"] })) {
      for (const info of batch.info) one.push(info.name);
    }
    expect(one.sort()).toEqual(["k007", "k100"]);
  });

  test("list of nothing sends no batch; a bad filter is InvalidArgument", async () => {
    const sizes: number[] = [];
    for await (const batch of client.list({})) sizes.push(batch.info.length);
    expect(sizes).toEqual([]);

    const drain = async (): Promise<void> => {
      for await (const _ of client.list({ filters: ["labels.x==y"] })) {
        // nothing expected
      }
    };
    expect(await codeOf(drain())).toBe(Code.InvalidArgument);
  });

  test("containerd's error semantics come through with the right codes", async () => {
    await client.prepare({ key: "a" });
    expect(await codeOf(client.prepare({ key: "a" }))).toBe(Code.AlreadyExists);
    expect(await codeOf(client.prepare({ key: "b", parent: "nope" }))).toBe(Code.NotFound);
    expect(await codeOf(client.prepare({ key: "b", parent: "a" }))).toBe(Code.InvalidArgument);
    expect(await codeOf(client.view({ key: "b", parent: "nope" }))).toBe(Code.NotFound);
    expect(await codeOf(client.commit({ name: "c", key: "nope" }))).toBe(Code.NotFound);

    await client.commit({ name: "base", key: "a" });
    await client.view({ key: "v", parent: "base" });
    expect(await codeOf(client.commit({ name: "c", key: "v" }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(client.remove({ key: "base" }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(client.mounts({ key: "base" }))).toBe(Code.FailedPrecondition);
    expect(await codeOf(client.mounts({ key: "nope" }))).toBe(Code.NotFound);
    expect(await codeOf(client.remove({ key: "nope" }))).toBe(Code.NotFound);
    expect(await codeOf(client.usage({ key: "nope" }))).toBe(Code.NotFound);

    await client.prepare({ key: "p", parent: "base" });
    expect(await codeOf(client.commit({ name: "base", key: "p" }))).toBe(Code.AlreadyExists);
  });

  const mapping: [ErrorCode, Code][] = [
    ["not_found", Code.NotFound],
    ["already_exists", Code.AlreadyExists],
    ["failed_precondition", Code.FailedPrecondition],
    ["invalid_argument", Code.InvalidArgument],
    ["resource_exhausted", Code.ResourceExhausted],
    ["unavailable", Code.Unavailable],
    ["unimplemented", Code.Unimplemented],
    ["internal", Code.Internal],
  ];
  for (const [code, want] of mapping) {
    test(`SnapshotterError ${code} -> ${Code[want]}`, async () => {
      fake.failNext("stat", new SnapshotterError(code, "injected failure"));
      const err = await errorOf(client.stat({ key: "some-key" }));
      expect(err.code).toBe(want);
      // The message names the operation, the key and the cause.
      expect(err.rawMessage).toBe('stat "some-key": injected failure');
    });
  }

  test("unclassified errors are Internal with their message, on every RPC", async () => {
    await client.prepare({ key: "x" });
    const boom = (): Error => new TypeError("disk on fire");
    const calls: [Parameters<MemorySnapshotter["failNext"]>[0], () => Promise<unknown>][] = [
      ["prepare", () => client.prepare({ key: "y" })],
      ["view", () => client.view({ key: "y" })],
      ["mounts", () => client.mounts({ key: "x" })],
      ["commit", () => client.commit({ name: "n", key: "x" })],
      ["remove", () => client.remove({ key: "x" })],
      ["stat", () => client.stat({ key: "x" })],
      ["update", () => client.update({ info: { name: "x" } })],
      ["usage", () => client.usage({ key: "x" })],
      ["cleanup", () => client.cleanup({})],
      [
        "walk",
        async () => {
          for await (const _ of client.list({})) {
            // drain
          }
        },
      ],
    ];
    for (const [op, run] of calls) {
      fake.failNext(op, boom());
      const err = await errorOf(run());
      expect(err.code).toBe(Code.Internal);
      expect(err.rawMessage).toContain("disk on fire");
    }
  });

  test("labels over 4096 bytes (key + value) are InvalidArgument", async () => {
    const big = { k: "v".repeat(4096) };
    const exact = { kk: "v".repeat(4094) };
    expect(await codeOf(client.prepare({ key: "a", labels: big }))).toBe(Code.InvalidArgument);
    expect(await codeOf(client.view({ key: "a", labels: big }))).toBe(Code.InvalidArgument);
    // Multi-byte characters count in bytes, not UTF-16 units.
    expect(await codeOf(client.prepare({ key: "a", labels: { k: "é".repeat(2048) } }))).toBe(Code.InvalidArgument);
    expect(fake.entered).toBe(0);

    await client.prepare({ key: "a", labels: exact });
    expect(await codeOf(client.commit({ name: "c", key: "a", labels: big }))).toBe(Code.InvalidArgument);
    expect(await codeOf(client.update({ info: { name: "a", labels: big } }))).toBe(Code.InvalidArgument);
    const err = await errorOf(client.update({ info: { name: "a", labels: big } }));
    expect(err.rawMessage).toContain("more than the limit of 4096");
    expect((await client.stat({ key: "a" })).info?.labels).toEqual(exact);
  });

  test("malformed protobuf bodies are InvalidArgument and the server stays up", async () => {
    const garbage: [string, Uint8Array][] = [
      ["invalid wire type", Uint8Array.of(0x0f, 0x01, 0x02)],
      ["truncated length-delimited field", Uint8Array.of(0x12, 0x7f, 0x61)],
      ["endless varint", new Uint8Array(12).fill(0xff)],
      ["invalid utf-8 in a string", Uint8Array.of(0x12, 0x02, 0xc3, 0x28)],
    ];
    for (const [what, payload] of garbage) {
      const r = await rawGrpcCall(server.address, "/containerd.services.snapshots.v1.Snapshots/Stat", envelope(payload));
      expect({ what, status: r.grpcStatus }).toEqual({ what, status: String(Code.InvalidArgument) });
      // Also on the streaming RPC, whose error path differs inside Connect.
      const l = await rawGrpcCall(server.address, "/containerd.services.snapshots.v1.Snapshots/List", envelope(payload));
      expect({ what, status: l.grpcStatus }).toEqual({ what, status: String(Code.InvalidArgument) });
    }
    // An envelope announcing more bytes than it carries.
    const short = await rawGrpcCall(
      server.address,
      "/containerd.services.snapshots.v1.Snapshots/Stat",
      Uint8Array.of(0, 0, 0, 0, 100, 1, 2, 3),
    );
    expect(short.grpcStatus).toBe(String(Code.InvalidArgument));

    // Compressed flag without a grpc-encoding, and a corrupt gzip stream.
    const compressed = Uint8Array.of(1, 0, 0, 0, 3, 1, 2, 3);
    const noEncoding = await rawGrpcCall(server.address, "/containerd.services.snapshots.v1.Snapshots/Stat", compressed);
    expect(noEncoding.grpcStatus).toBe(String(Code.InvalidArgument));
    const badGzip = await rawGrpcCall(server.address, "/containerd.services.snapshots.v1.Snapshots/Stat", compressed, {
      "grpc-encoding": "gzip",
    });
    expect(badGzip.grpcStatus).toBe(String(Code.InvalidArgument));

    await client.prepare({ key: "still-alive" });
    expect((await client.stat({ key: "still-alive" })).info?.name).toBe("still-alive");
  });

  test("a request Connect cannot even describe is InvalidArgument, not a crash", async () => {
    // Connect's adapter throws synchronously on an authority URL() rejects.
    const r = await rawGrpcCall(server.address, "/containerd.services.snapshots.v1.Snapshots/Stat", envelope(new Uint8Array()), {
      ":authority": "[bad",
    });
    expect(r.grpcStatus).toBe(String(Code.InvalidArgument));
    await client.prepare({ key: "still-alive" });
  });

  test("a garbage HTTP/2 connection does not take the server down", async () => {
    const sock = net.connect(server.address);
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    const closed = new Promise<boolean>((resolve) => {
      sock.once("close", () => resolve(true));
      setTimeout(() => resolve(false), 2000);
    });
    sock.on("error", () => {});
    sock.resume(); // without a reader, "close" would wait for the data to be read
    sock.write("this is not an http2 preface\r\n\r\n");
    // The server drops the connection (after a GOAWAY) rather than keep it.
    expect(await closed).toBe(true);
    sock.destroy();
    await client.prepare({ key: "after-garbage" });
  });
});

describe("server lifecycle", () => {
  test("creates the parent directory 0700 and the socket 0600", async () => {
    const sock = freshSocket();
    const server = await startServer({ socketPath: sock, service: createSnapshotsService(new MemorySnapshotter()) });
    try {
      expect((await fs.stat(sock)).mode & 0o777).toBe(0o600);
      expect((await fs.stat(path.dirname(sock))).mode & 0o777).toBe(0o700);
      expect(server.address).toBe(sock);
    } finally {
      await server.close(1000);
    }
    await expect(fs.stat(sock)).rejects.toThrow();
  });

  test("socketMode and socketGroup are applied", async () => {
    const sock = freshSocket();
    const gid = process.getgid?.() ?? 0;
    const server = await startServer({
      socketPath: sock,
      socketMode: 0o660,
      socketGroup: gid,
      service: createSnapshotsService(new MemorySnapshotter()),
    });
    try {
      const st = await fs.stat(sock);
      expect(st.mode & 0o777).toBe(0o660);
      expect(st.gid).toBe(gid);
    } finally {
      await server.close(1000);
    }
  });

  test("removes a stale socket left by a dead process", async () => {
    const sock = freshSocket();
    await fs.mkdir(path.dirname(sock), { recursive: true });
    // A child binds the socket and is SIGKILLed: nobody unlinks the file.
    const child = Bun.spawn(
      [
        process.execPath,
        "-e",
        `require("node:net").createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, "SIGKILL"))`,
      ],
      { stdout: "ignore", stderr: "ignore" },
    );
    await child.exited;
    expect((await fs.lstat(sock)).isSocket()).toBe(true);

    const fake = new MemorySnapshotter();
    const server = await startServer({ socketPath: sock, service: createSnapshotsService(fake) });
    try {
      await clientFor(sock).prepare({ key: "k" });
    } finally {
      await server.close(1000);
    }
  });

  test("refuses to start when a live server holds the socket", async () => {
    const sock = freshSocket();
    const fake = new MemorySnapshotter();
    const first = await startServer({ socketPath: sock, service: createSnapshotsService(fake) });
    try {
      await expect(
        startServer({ socketPath: sock, service: createSnapshotsService(new MemorySnapshotter()) }),
      ).rejects.toThrow(/already listening/);
      // The first server is untouched and still answers.
      await clientFor(sock).prepare({ key: "k" });
      expect(fake.entered).toBe(1);
    } finally {
      await first.close(1000);
    }
  });

  test("refuses to replace a file that is not a socket", async () => {
    const sock = freshSocket();
    await fs.mkdir(path.dirname(sock), { recursive: true });
    await fs.writeFile(sock, "precious");
    await expect(
      startServer({ socketPath: sock, service: createSnapshotsService(new MemorySnapshotter()) }),
    ).rejects.toThrow(/not a socket/);
    expect(await fs.readFile(sock, "utf8")).toBe("precious");
  });

  test("close lets in-flight calls finish and stops accepting", async () => {
    const sock = freshSocket();
    const fake = new MemorySnapshotter();
    const server = await startServer({ socketPath: sock, service: createSnapshotsService(fake) });
    const client = clientFor(sock);
    await client.prepare({ key: "k" });

    let release = (): void => {};
    fake.gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const inflight = client.stat({ key: "k" });
    await until(() => fake.entered === 2);

    let closed = false;
    const closing = server.close(5000).then(() => {
      closed = true;
    });
    await Bun.sleep(50);
    expect(closed).toBe(false);
    // New connections are refused while draining.
    expect(await socketAccepts(sock)).toBe(false);

    release();
    expect((await inflight).info?.name).toBe("k");
    await closing;
    await expect(fs.lstat(sock)).rejects.toThrow();
  });

  test("close cuts off calls still running after the grace period", async () => {
    const sock = freshSocket();
    const fake = new MemorySnapshotter();
    const server = await startServer({ socketPath: sock, service: createSnapshotsService(fake) });
    const client = clientFor(sock);
    let release = (): void => {};
    fake.gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const stuck = codeOf(client.stat({ key: "k" }));
    await until(() => fake.entered === 1);

    const t0 = Date.now();
    await server.close(200);
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(150);
    expect(elapsed).toBeLessThan(3000);
    // The client sees the call fail (how exactly depends on the reset).
    // The straggler is answered Unavailable (retryable for containerd), not
    // left to a connection reset.
    expect(await stuck).toBe(Code.Unavailable);
    await expect(fs.lstat(sock)).rejects.toThrow();
    release();
  });

  test("messages over maxMessageBytes are ResourceExhausted", async () => {
    const sock = freshSocket();
    const server = await startServer({
      socketPath: sock,
      maxMessageBytes: 1024,
      service: createSnapshotsService(new MemorySnapshotter()),
    });
    try {
      const client = clientFor(sock);
      expect(await codeOf(client.prepare({ key: "x".repeat(2048) }))).toBe(Code.ResourceExhausted);
      await client.prepare({ key: "small" });
    } finally {
      await server.close(1000);
    }
  });
});

/** A gRPC length-prefixed message: flag byte, 4-byte big-endian length, data. */
function envelope(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

/** Sends raw bytes as a gRPC request with node:http2 and returns grpc-status. */
async function rawGrpcCall(
  socketPath: string,
  rpcPath: string,
  body: Uint8Array,
  extraHeaders: http2.OutgoingHttpHeaders = {},
): Promise<{ grpcStatus?: string }> {
  const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": rpcPath,
        "content-type": "application/grpc",
        te: "trailers",
        ...extraHeaders,
      });
      let status: string | undefined;
      const pick = (h: http2.IncomingHttpHeaders): void => {
        const s = h["grpc-status"];
        if (typeof s === "string") status = s;
      };
      req.on("response", pick);
      req.on("trailers", pick);
      req.on("data", () => {});
      req.on("end", () => resolve({ grpcStatus: status }));
      req.on("error", reject);
      req.end(body);
    });
  } finally {
    session.close();
  }
}
