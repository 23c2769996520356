/**
 * gRPC server on a unix socket, for containerd's proxy_plugins.
 *
 * Built on node:http2 (h2c, prior knowledge -- what grpc-go speaks over unix
 * sockets) and Connect's node adapter. Bun.serve is not used: it cannot send
 * HTTP/2 trailers, and gRPC carries its status in trailers. Limits are in
 * limits.ts, per-peer accounting in connections.ts, the socket file in
 * socket.ts, per-call work in interceptors.ts.
 */
import * as http2 from "node:http2";
import * as net from "node:net";
import * as path from "node:path";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Snapshots } from "./gen/containerd/services/snapshots/v1/snapshots_pb.ts";
import { ConnectionGuard } from "./connections.ts";
import { rpcInterceptors, type CallObserver } from "./interceptors.ts";
import {
  CONNECTION_BODY_BYTES,
  HANDSHAKE_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_HEADER_LIST_BYTES,
  MAX_HEADER_PAIRS,
  MAX_REPLY_BYTES,
  MAX_REQUEST_BYTES,
  MAX_STREAMS_PER_CONNECTION,
  REQUEST_BODY_TIMEOUT_MS,
  SESSION_MEMORY_MIB,
  SHUTDOWN_FLUSH_MS,
  SHUTDOWN_FORCE_MS,
} from "./limits.ts";
import { errorText, silentRpcLogger, type RpcLogger } from "./rpc-log.ts";
import { bindSocket, removeOwnSocket } from "./socket.ts";

export interface ServerOptions {
  socketPath: string;
  /** Permission bits of the socket file; containerd runs as root. */
  socketMode?: number;
  /** Group owning the socket (with a 0o660 mode, lets that group connect). */
  socketGroup?: number;
  service: ServiceImpl<typeof Snapshots>;
  /** Overrides both message limits (tests); default MAX_REQUEST_BYTES in, MAX_REPLY_BYTES out. */
  maxMessageBytes?: number;
  log?: RpcLogger;
  /** Sees every finished call (metrics). */
  observe?: CallObserver;
  /** Overrides of limits.ts for tests. */
  limits?: Partial<ServerLimits>;
}

export interface ServerLimits {
  maxConnections: number;
  maxStreamsPerConnection: number;
  connectionBodyBytes: number;
  requestBodyTimeoutMs: number;
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
}

const DEFAULT_LIMITS: ServerLimits = {
  maxConnections: MAX_CONNECTIONS,
  maxStreamsPerConnection: MAX_STREAMS_PER_CONNECTION,
  connectionBodyBytes: CONNECTION_BODY_BYTES,
  requestBodyTimeoutMs: REQUEST_BODY_TIMEOUT_MS,
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  idleTimeoutMs: IDLE_TIMEOUT_MS,
};

export interface RunningServer {
  /** The socket path, as it goes into containerd's proxy_plugins address. */
  readonly address: string;
  /**
   * Stops accepting connections, lets in-flight calls finish for up to
   * graceMs, answers the rest Unavailable, then cuts every connection off
   * and removes the socket file. Returns within graceMs + SHUTDOWN_FLUSH_MS
   * + SHUTDOWN_FORCE_MS (plus a little), whatever the peers do.
   */
  close(graceMs: number): Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const socketPath = path.resolve(opts.socketPath);
  const log = opts.log ?? silentRpcLogger;
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };

  // Aborted when the grace period runs out: the interceptor races each call
  // against it, so stragglers answer Unavailable instead of being cut off.
  const shutdown = new AbortController();
  const adapter = connectNodeAdapter({
    routes: (router) => router.service(Snapshots, opts.service),
    // containerd speaks gRPC only; the other protocols would be untested
    // surface (and would report a malformed body differently, see below).
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: opts.maxMessageBytes ?? MAX_REQUEST_BYTES,
    writeMaxBytes: opts.maxMessageBytes ?? MAX_REPLY_BYTES,
    shutdownSignal: shutdown.signal,
    interceptors: rpcInterceptors({ log, ...(opts.observe ? { observe: opts.observe } : {}) }),
  });

  const guard = new ConnectionGuard(limits, log);
  const server = http2.createServer(
    {
      maxSessionMemory: SESSION_MEMORY_MIB,
      maxHeaderListPairs: MAX_HEADER_PAIRS,
      settings: { maxConcurrentStreams: limits.maxStreamsPerConnection, maxHeaderListSize: MAX_HEADER_LIST_BYTES },
    },
    (req, res) => {
      guard.admit(req, res);
      reportParseErrorsAsInvalidArgument(res);
      try {
        adapter(req, res);
      } catch (err) {
        // The adapter throws synchronously for requests it cannot even
        // describe (an :authority that URL() rejects); an exception here
        // would be uncaught and kill the process.
        log.debug("rejecting malformed request", { cause: errorText(err) });
        sendTrailersOnly(res, Code.InvalidArgument, "malformed request");
      }
    },
  );
  guard.attach(server);
  // A peer sending garbage frames costs it its session, never the process.
  // The http2 server forwards every session's "error" here; it is the
  // peer's fault, hence only a debug line.
  server.on("sessionError", (err) => log.debug("http2 session error", { cause: errorText(err) }));

  // We accept connections ourselves and hand them to the http2 server, so
  // the guard holds each socket and can close it for sure.
  const listener = net.createServer((socket) => guard.accept(socket, server));
  const ino = await bindSocket(listener, socketPath, { mode: opts.socketMode ?? 0o600, ...(opts.socketGroup !== undefined ? { group: opts.socketGroup } : {}) });
  // Later server errors must not become uncaught exceptions.
  server.on("error", (err) => log.error("rpc server error", { cause: errorText(err) }));
  listener.on("error", (err) => log.error("rpc listener error", { cause: errorText(err) }));
  log.debug("listening", { socket: socketPath });

  let closing: Promise<void> | undefined;
  return {
    address: socketPath,
    close: (graceMs) => (closing ??= closeGracefully(listener, guard, shutdown, graceMs, socketPath, ino)),
  };
}

/**
 * Connect reports some undecodable request bodies as Internal: a protobuf
 * message it cannot parse ("parse binary: ..." -- grpc-go does the same), a
 * compressed message without a grpc-encoding, a corrupt gzip stream. The
 * fault is the caller's, and Internal is what we use for our own bugs, so
 * these are rewritten to InvalidArgument on their way into the trailers.
 * (Truncated envelopes and bad JSON are already InvalidArgument in Connect.)
 */
const CLIENT_FAULT_PREFIXES = [
  "parse binary:",
  "received compressed envelope, but do not know how to decompress",
  "decompression failed",
];

function reportParseErrorsAsInvalidArgument(res: http2.Http2ServerResponse): void {
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (trailers) => {
    const msg = trailers["grpc-message"];
    if (
      String(trailers["grpc-status"]) === String(Code.Internal) &&
      typeof msg === "string" &&
      CLIENT_FAULT_PREFIXES.some((p) => withoutOp(safeDecode(msg)).startsWith(p))
    ) {
      trailers = { ...trailers, "grpc-status": String(Code.InvalidArgument) };
    }
    addTrailers(trailers);
  };
}

/** The interceptor prefixes messages with the method ("list: parse binary: …"). */
function withoutOp(msg: string): string {
  return msg.replace(/^[a-z]+: /, "");
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function sendTrailersOnly(res: http2.Http2ServerResponse, code: Code, message: string): void {
  if (res.headersSent) {
    res.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  res.writeHead(200, {
    "content-type": "application/grpc",
    "grpc-status": String(code),
    "grpc-message": encodeURIComponent(message),
  });
  res.end();
}

/**
 * Never waits on a close callback alone: under Bun, http2.Server.close's may
 * never come when a session was open (even after that session closed).
 * Calls in flight are counted by the guard instead, and every wait has a
 * deadline.
 */
async function closeGracefully(
  server: net.Server,
  guard: ConnectionGuard,
  shutdown: AbortController,
  graceMs: number,
  socketPath: string,
  ino: number,
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // GOAWAY: clients open no new streams, running ones may finish.
  for (const s of guard.sessions) s.close();
  await Promise.race([guard.idle(), sleep(graceMs)]);
  if (guard.calls > 0) {
    // Stragglers answer Unavailable (retryable for containerd) within the flush window.
    shutdown.abort(new ConnectError("server shutting down", Code.Unavailable));
    await Promise.race([guard.idle(), sleep(SHUTDOWN_FLUSH_MS)]);
  }
  // Let the last answers reach their peers, then cut off whoever keeps a
  // connection open after GOAWAY.
  await untilNoSessions(guard, SHUTDOWN_FLUSH_MS);
  guard.destroyAll();
  await Promise.race([closed, sleep(SHUTDOWN_FORCE_MS)]);
  await removeOwnSocket(socketPath, ino);
}

async function untilNoSessions(guard: ConnectionGuard, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!guard.sessions.next().done && performance.now() < end) await sleep(10);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
