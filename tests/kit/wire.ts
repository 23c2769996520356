/**
 * Bytes on the wire for requests no well-behaved client would send:
 * rawGrpcCall() speaks node:http2 directly (truncated envelopes, garbage
 * protobuf, odd headers); ProtoWriter hand-makes (possibly wrong) messages.
 */
import * as http2 from "node:http2";
import * as net from "node:net";
import { SERVICE_PATH } from "./client.ts";

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
  const session = h2Session(socketPath);
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

/** An HTTP/2 session to the daemon's socket; session errors are ignored (the caller destroys it). */
export function h2Session(socketPath: string): http2.ClientHttp2Session {
  const s = http2.connect("http://localhost", { createConnection: () => net.connect(socketPath) });
  s.on("error", () => {});
  return s;
}

/**
 * Opens a Stat stream on `session` announcing `announced` message bytes and
 * sends `send` of them (the body stays open unless all were sent). Resolves to
 * the grpc-status the server answered, or "no status" / "reset" / "closed".
 */
/** Zero-filled bodies and their frames, shared: a flood of hundreds of streams must not cost the client hundreds of copies. */
const zeroBodies = new Map<number, Uint8Array>();
const frames = new WeakMap<Uint8Array, Map<number, Uint8Array>>();
function framed(data: Uint8Array, announced: number): Uint8Array {
  let byLength = frames.get(data);
  if (byLength === undefined) frames.set(data, (byLength = new Map()));
  let f = byLength.get(announced);
  if (f === undefined) byLength.set(announced, (f = envelope(data, 0, announced)));
  return f;
}

export function partialStat(
  session: http2.ClientHttp2Session,
  announced: number,
  send: number,
  data: Uint8Array = zeroBodies.get(send) ?? zeroBodies.set(send, new Uint8Array(send)).get(send)!,
): Promise<string> {
  return new Promise((resolve) => {
    const req = session.request({ ":method": "POST", ":path": `${SERVICE_PATH}/Stat`, "content-type": "application/grpc", te: "trailers" });
    let status: string | undefined;
    const pick = (h: http2.IncomingHttpHeaders): void => {
      if (typeof h["grpc-status"] === "string") status = h["grpc-status"];
    };
    req.on("response", pick);
    // The answer may come before the request body ends (refused, timed out).
    req.on("trailers", (h) => {
      pick(h);
      resolve(status ?? "no status");
    });
    req.on("data", () => {});
    req.on("error", () => {});
    req.on("close", () => resolve(status ?? (req.rstCode ? "reset" : "closed")));
    req.write(framed(data, announced));
    if (send >= announced) req.end();
  });
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
