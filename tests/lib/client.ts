/**
 * Test clients for a running thinsnap over its unix socket:
 *
 *  - snapshotsClient(): Connect's gRPC client (the wire protocol containerd's
 *    proxy client speaks), typed by the generated service descriptor;
 *  - rawGrpcCall(): node:http2 directly, for bodies no well-behaved client
 *    would send (truncated envelopes, garbage protobuf, odd headers);
 *  - helpers to turn a call's outcome into a gRPC code and to count codes.
 */
import * as http2 from "node:http2";
import * as net from "node:net";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

export { Code, ConnectError } from "@connectrpc/connect";
export { Kind, Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

export type SnapshotsClient = Client<typeof Snapshots>;

export const SERVICE_PATH = "/containerd.services.snapshots.v1.Snapshots";

export interface ClientOptions {
  /** Per-call deadline, ms (default: none). */
  timeoutMs?: number;
  /** Largest message the client sends / accepts (default 64 MiB: the tests send oversized ones on purpose). */
  maxMessageBytes?: number;
}

/**
 * A gRPC client on its own HTTP/2 connection to `socketPath`. Each call of
 * this function makes a separate connection (a separate "client" for load
 * tests); calls on one client are multiplexed on that connection.
 */
export function snapshotsClient(socketPath: string, opts: ClientOptions = {}): SnapshotsClient {
  const max = opts.maxMessageBytes ?? 64 * 1024 * 1024;
  const transport = createGrpcTransport({
    // The authority is irrelevant on a unix socket; the connection is ours.
    baseUrl: "http://localhost",
    nodeOptions: { createConnection: () => net.connect(socketPath) },
    readMaxBytes: max,
    writeMaxBytes: max,
    ...(opts.timeoutMs !== undefined ? { defaultTimeoutMs: opts.timeoutMs } : {}),
  });
  return createClient(Snapshots, transport);
}

/** The gRPC code a call ended with: Code.* of its error, or "ok". */
export type Outcome = Code | "ok";

export async function outcomeOf(p: Promise<unknown>): Promise<Outcome> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

/** Resolves to the call's ConnectError; throws if the call succeeded. */
export async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("call succeeded, an error was expected");
}

/** Resolves to the call's code; throws if the call succeeded. */
export async function codeOf(p: Promise<unknown>): Promise<Code> {
  return (await errorOf(p)).code;
}

export function codeName(c: Outcome | number | undefined): string {
  if (c === undefined) return "none";
  if (c === "ok") return "OK";
  return Code[c] ?? `code ${c}`;
}

/** Drains a List stream into one array of Info. */
export async function listAll(client: SnapshotsClient, filters: string[] = []): Promise<ListedInfo[]> {
  const out: ListedInfo[] = [];
  for await (const r of client.list({ filters })) {
    for (const i of r.info) out.push({ name: i.name, parent: i.parent, kind: i.kind, labels: { ...i.labels } });
  }
  return out;
}

export interface ListedInfo {
  name: string;
  parent: string;
  kind: number;
  labels: Record<string, string>;
}

/** Per-code counters with a printable table. */
export class CodeCounter {
  readonly counts = new Map<string, number>();

  add(what: string, outcome: Outcome | number | undefined): void {
    const k = `${what} ${codeName(outcome)}`;
    this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
  }

  total(): number {
    let n = 0;
    for (const v of this.counts.values()) n += v;
    return n;
  }

  /** Counts by code only (summed over `what`). */
  byCode(): Map<string, number> {
    const m = new Map<string, number>();
    for (const [k, v] of this.counts) {
      const code = k.slice(k.lastIndexOf(" ") + 1);
      m.set(code, (m.get(code) ?? 0) + v);
    }
    return m;
  }

  table(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort(([a], [b]) => a.localeCompare(b)));
  }
}

// ------------------------------------------------------------------ raw http2

/** A gRPC envelope: flags byte, 4-byte big-endian length, the message. */
export function envelope(data: Uint8Array, flags = 0, announcedLength = data.length): Uint8Array {
  const out = new Uint8Array(5 + data.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, announcedLength >>> 0, false);
  out.set(data, 5);
  return out;
}

export interface RawResult {
  /** HTTP status of the response headers (undefined: no response). */
  httpStatus?: number;
  /** grpc-status from headers or trailers (undefined: none sent). */
  grpcStatus?: number;
  grpcMessage?: string;
  /** Response body bytes (envelopes, undecoded). */
  body: Uint8Array;
  /** Set when the stream or the session failed instead of answering. */
  error?: string;
}

/**
 * Sends `body` as-is as one gRPC request on a fresh HTTP/2 session and
 * reports what came back. Never throws for the server's answer; a session
 * error is reported in `error`. `timeoutMs` bounds the whole exchange.
 */
export async function rawGrpcCall(
  socketPath: string,
  method: string,
  body: Uint8Array | Uint8Array[],
  opts: { headers?: http2.OutgoingHttpHeaders; timeoutMs?: number; path?: string } = {},
): Promise<RawResult> {
  const session = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
  session.on("error", () => {});
  const chunks: Buffer[] = [];
  try {
    return await new Promise<RawResult>((resolve) => {
      const res: RawResult = { body: new Uint8Array() };
      let done = false;
      const finish = (error?: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (error !== undefined) res.error = error;
        res.body = new Uint8Array(Buffer.concat(chunks));
        resolve(res);
      };
      const timer = setTimeout(() => finish(`timeout after ${opts.timeoutMs ?? 30_000} ms`), opts.timeoutMs ?? 30_000);
      session.once("error", (e) => finish(`session error: ${e.message}`));
      const req = session.request({
        ":method": "POST",
        ":path": opts.path ?? `${SERVICE_PATH}/${method}`,
        "content-type": "application/grpc",
        te: "trailers",
        ...opts.headers,
      });
      const pick = (h: http2.IncomingHttpHeaders): void => {
        const s = h["grpc-status"];
        if (typeof s === "string") res.grpcStatus = Number(s);
        const m = h["grpc-message"];
        if (typeof m === "string") res.grpcMessage = safeDecode(m);
      };
      req.on("response", (h) => {
        const st = h[":status"];
        if (typeof st === "number") res.httpStatus = st;
        pick(h);
      });
      req.on("trailers", pick);
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => finish());
      req.on("close", () => finish(res.grpcStatus === undefined && res.httpStatus === undefined ? "stream closed without a response" : undefined));
      req.on("error", (e) => finish(`stream error: ${e.message}`));
      const parts = Array.isArray(body) ? body : [body];
      for (const p of parts) req.write(p);
      req.end();
    });
  } finally {
    session.destroy();
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

// ------------------------------------------------------------- protobuf bytes

/** Minimal protobuf writer for hand-made (possibly wrong) messages. */
export class ProtoWriter {
  private parts: number[] = [];

  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    do {
      let b = Number(x & 0x7fn);
      x >>= 7n;
      if (x !== 0n) b |= 0x80;
      this.parts.push(b);
    } while (x !== 0n);
    return this;
  }

  tag(field: number, wireType: number): this {
    return this.varint((field << 3) | wireType);
  }

  bytes(field: number, data: Uint8Array | string): this {
    const b = typeof data === "string" ? new TextEncoder().encode(data) : data;
    this.tag(field, 2).varint(b.length);
    for (const x of b) this.parts.push(x);
    return this;
  }

  uint(field: number, v: number | bigint): this {
    return this.tag(field, 0).varint(v);
  }

  fixed32(field: number, v: number): this {
    this.tag(field, 5);
    for (let i = 0; i < 4; i++) this.parts.push((v >>> (8 * i)) & 0xff);
    return this;
  }

  fixed64(field: number, v: bigint): this {
    this.tag(field, 1);
    for (let i = 0n; i < 8n; i++) this.parts.push(Number((v >> (8n * i)) & 0xffn));
    return this;
  }

  raw(b: Uint8Array | number[]): this {
    for (const x of b) this.parts.push(x);
    return this;
  }

  /** A map<string,string> entry as field `field`. */
  mapEntry(field: number, key: Uint8Array | string, value: Uint8Array | string): this {
    return this.bytes(field, new ProtoWriter().bytes(1, key).bytes(2, value).finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}
