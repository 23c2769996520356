/**
 * gRPC server on a unix socket, for containerd's proxy_plugins.
 *
 * Built on node:http2 (h2c, prior knowledge -- what grpc-go speaks over unix
 * sockets) and Connect's node adapter. Bun.serve is not used: it cannot send
 * HTTP/2 trailers, and gRPC carries its status in trailers.
 */
import * as fs from "node:fs/promises";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as path from "node:path";
import { Code, ConnectError, type Interceptor, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Snapshots } from "./gen/containerd/services/snapshots/v1/snapshots_pb.ts";
import { errorText, type RpcLogger } from "./service.ts";

export interface ServerOptions {
  socketPath: string;
  /** Permission bits of the socket file; containerd runs as root. */
  socketMode?: number;
  /** Group owning the socket (with a 0o660 mode, lets that group connect). */
  socketGroup?: number;
  service: ServiceImpl<typeof Snapshots>;
  /** Per-message limit in both directions; gRPC's usual default is 4 MiB. */
  maxMessageBytes?: number;
  log?: RpcLogger;
  /** Outermost first (issue 14: the metrics interceptor). */
  interceptors?: Interceptor[];
}

export interface RunningServer {
  /** The socket path, as it goes into containerd's proxy_plugins address. */
  readonly address: string;
  /**
   * Stops accepting connections, lets in-flight calls finish for up to
   * graceMs, then cuts the rest off and removes the socket file.
   */
  close(graceMs: number): Promise<void>;
}

const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const PROBE_TIMEOUT_MS = 1000;
/** After the grace period: time for the Unavailable answers to go out. */
const FLUSH_MS = 250;

const silent: RpcLogger = { debug() {}, error() {} };

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const socketPath = path.resolve(opts.socketPath);
  const log = opts.log ?? silent;
  const maxBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;

  // Only a directory we create gets 0700; an existing one is the admin's.
  await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o700 });
  await removeStaleSocket(socketPath);

  // Aborted when the grace period runs out: handlers race their work against
  // it (service.ts) and answer Unavailable instead of being cut off.
  const shutdown = new AbortController();
  const adapter = connectNodeAdapter({
    routes: (router) => router.service(Snapshots, opts.service),
    // containerd speaks gRPC only; the other protocols would be untested
    // surface (and would report a malformed body differently, see below).
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: maxBytes,
    writeMaxBytes: maxBytes,
    shutdownSignal: shutdown.signal,
    interceptors: opts.interceptors ?? [], // issue 14
  });

  const server = http2.createServer((req, res) => {
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
  });

  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  // A peer sending garbage frames costs it its session, never the process.
  // The http2 server forwards every session's "error" here; it is the
  // peer's fault, hence only a debug line.
  server.on("sessionError", (err) => log.debug("http2 session error", { cause: errorText(err) }));

  await listen(server, socketPath);
  // Later server errors must not become uncaught exceptions.
  server.on("error", (err) => log.error("rpc server error", { cause: errorText(err) }));
  // The socket exists with umask permissions until this chmod; the 0700
  // parent directory (when we create it) keeps that window closed.
  try {
    await fs.chmod(socketPath, opts.socketMode ?? 0o600);
    if (opts.socketGroup !== undefined) await fs.chown(socketPath, -1, opts.socketGroup);
  } catch (err) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(socketPath, { force: true });
    throw err;
  }
  const { ino } = await fs.stat(socketPath);
  log.debug("listening", { socket: socketPath });

  let closing: Promise<void> | undefined;
  return {
    address: socketPath,
    close: (graceMs) => (closing ??= closeGracefully(server, sessions, shutdown, graceMs, socketPath, ino)),
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
      CLIENT_FAULT_PREFIXES.some((p) => safeDecode(msg).startsWith(p))
    ) {
      trailers = { ...trailers, "grpc-status": String(Code.InvalidArgument) };
    }
    addTrailers(trailers);
  };
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
 * A socket file left by a crashed daemon would make listen() fail with
 * EADDRINUSE, so it is removed -- but only after checking that nobody
 * answers on it: deleting a live server's socket would silently orphan it.
 */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(socketPath);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  }
  if (await answers(socketPath)) {
    throw new Error(`another server is already listening on ${socketPath}`);
  }
  await fs.rm(socketPath, { force: true });
}

/** True if something accepts connections on the socket (or might: timeout). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const done = (result: boolean | Error): void => {
      clearTimeout(timer);
      sock.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    // Unsure means live: refusing to start is recoverable, stealing is not.
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    sock.once("connect", () => done(true));
    sock.once("error", (err) => {
      const code = errnoCode(err);
      if (code === "ECONNREFUSED" || code === "ENOENT") done(false);
      else done(new Error(`cannot probe ${socketPath}: ${err.message}`, { cause: err }));
    });
  });
}

function listen(server: http2.Http2Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once("error", onError);
    server.listen(socketPath, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

async function closeGracefully(
  server: http2.Http2Server,
  sessions: Set<http2.ServerHttp2Session>,
  shutdown: AbortController,
  graceMs: number,
  socketPath: string,
  ino: number,
): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // GOAWAY: clients open no new streams, running ones may finish; an idle
  // session closes at once.
  for (const s of sessions) s.close();

  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"expired">((resolve) => {
    timer = setTimeout(() => resolve("expired"), graceMs);
  });
  const drained = closed.then(() => "drained" as const);
  let outcome = await Promise.race([drained, expired]);
  clearTimeout(timer);
  if (outcome === "expired") {
    // Handlers race their work against this signal (service.ts), so the
    // stragglers answer Unavailable -- which containerd treats as retryable --
    // and the sessions can finish on their own within the flush window.
    shutdown.abort(new ConnectError("server shutting down", Code.Unavailable));
    outcome = await Promise.race([drained, sleep(FLUSH_MS).then(() => "expired" as const)]);
  }
  if (outcome === "expired") {
    for (const s of sessions) s.destroy();
    await closed;
  }
  await removeOwnSocket(socketPath, ino);
}

/**
 * Removes the socket unless another server has replaced it meanwhile (same
 * path, different inode): that one is not ours to delete.
 */
async function removeOwnSocket(socketPath: string, ino: number): Promise<void> {
  try {
    const st = await fs.lstat(socketPath);
    if (st.ino === ino) await fs.rm(socketPath, { force: true });
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errnoCode(err: unknown): string | undefined {
  if (err instanceof Error && "code" in err && typeof err.code === "string") return err.code;
  return undefined;
}
