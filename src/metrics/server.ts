/**
 * The /metrics endpoint: node:http on host:port or a unix socket, apart from
 * the gRPC socket. A scrape reads memory and the store only (Metrics.scrape),
 * so it never waits on a kernel call and never holds a snapshot lock.
 */
import { chmod, lstat, mkdir, rm } from "node:fs/promises";
import * as http from "node:http";
import { dirname } from "node:path";
import { formatMetricsAddress, type MetricsAddress } from "./address.ts";

export interface MetricsSource {
  readonly contentType: string;
  scrape(): Promise<string>;
}

export interface MetricsServerOptions {
  address: MetricsAddress;
  metrics: MetricsSource;
  /** Permission bits of a unix socket (default 0600, like the gRPC socket). */
  socketMode?: number;
  onError?: (msg: string, error: unknown) => void;
}

export interface RunningMetricsServer {
  /** Where it listens (a TCP port 0 resolved to the port picked). */
  readonly address: MetricsAddress;
  close(): Promise<void>;
}

/** Scrapers are few: more connections than this are refused, not queued. */
const MAX_CONNECTIONS = 16;
const TIMEOUT_MS = 10_000;

export async function startMetricsServer(opts: MetricsServerOptions): Promise<RunningMetricsServer> {
  const onError = opts.onError ?? (() => {});
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("only GET /metrics\n");
      return;
    }
    opts.metrics.scrape().then(
      (body) => {
        res.writeHead(200, { "content-type": opts.metrics.contentType });
        res.end(req.method === "HEAD" ? undefined : body);
      },
      (e) => {
        onError("metrics scrape failed", e);
        res.writeHead(500, { "content-type": "text/plain" }).end("scrape failed (see thinsnap's log)\n");
      },
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.headersTimeout = TIMEOUT_MS;
  server.requestTimeout = TIMEOUT_MS;
  server.on("clientError", (_e, socket) => socket.destroy());

  const a = opts.address;
  if (a.kind === "unix") {
    await mkdir(dirname(a.path), { recursive: true, mode: 0o700 });
    await removeStaleSocket(a.path);
  }
  await new Promise<void>((resolve, reject) => {
    const fail = (e: Error): void => reject(new Error(`cannot serve metrics on ${formatMetricsAddress(a)}: ${e.message}`));
    server.once("error", fail);
    const done = (): void => {
      server.off("error", fail);
      resolve();
    };
    if (a.kind === "unix") server.listen(a.path, done);
    else server.listen(a.port, a.host, done);
  });
  server.on("error", (e) => onError("metrics server error", e));
  let bound: MetricsAddress = a;
  if (a.kind === "unix") {
    await chmod(a.path, opts.socketMode ?? 0o600);
  } else {
    const info = server.address();
    if (info !== null && typeof info === "object") bound = { kind: "tcp", host: a.host, port: info.port };
  }
  let closing: Promise<void> | undefined;
  return {
    address: bound,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(async () => {
        // The runtime unlinks the socket on close; this covers a close that could not.
        if (a.kind === "unix") await rm(a.path, { force: true });
      })),
  };
}

/** A socket file left by a killed thinsnap is removed; anything else at the path is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`metrics_address ${path} exists and is not a socket: refusing to replace it`);
  await rm(path, { force: true });
}
