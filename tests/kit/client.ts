/**
 * Clients of a snapshots service on a unix socket (thinsnap's own, or
 * containerd's): Connect's gRPC client (the wire protocol containerd's proxy
 * client speaks), typed by the generated service descriptor; helpers to turn
 * a call's outcome into a gRPC code and to count codes. Raw bytes: ./wire.ts.
 */
import * as net from "node:net";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Kind, Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

export { Code, ConnectError } from "@connectrpc/connect";
export { Kind, Snapshots } from "../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

export type SnapshotsClient = Client<typeof Snapshots>;

export const SERVICE_PATH = "/containerd.services.snapshots.v1.Snapshots";

export interface ClientOptions {
  /** Per-call deadline, ms (default: none). */
  timeoutMs?: number;
  /** Largest message the client sends / accepts (default 64 MiB: the tests send oversized ones on purpose). */
  maxMessageBytes?: number;
  /**
   * Sent as the `containerd-namespace` header of every call (containerd's
   * own socket needs it; thinsnap ignores it).
   */
  namespace?: string;
}

/** A gRPC transport on its own HTTP/2 connection to `socketPath`. */
export function grpcTransport(socketPath: string, opts: ClientOptions = {}): Transport {
  const max = opts.maxMessageBytes ?? 64 * 1024 * 1024;
  const interceptors: Interceptor[] = [];
  const ns = opts.namespace;
  if (ns !== undefined) {
    interceptors.push((next) => async (req) => {
      req.header.set("containerd-namespace", ns);
      return next(req);
    });
  }
  return createGrpcTransport({
    // The authority is irrelevant on a unix socket; the connection is ours.
    baseUrl: "http://localhost",
    nodeOptions: { createConnection: () => net.connect(socketPath) },
    interceptors,
    readMaxBytes: max,
    writeMaxBytes: max,
    ...(opts.timeoutMs !== undefined ? { defaultTimeoutMs: opts.timeoutMs } : {}),
  });
}

/**
 * A gRPC client on its own HTTP/2 connection to `socketPath`. Each call of
 * this function makes a separate connection (a separate "client" for load
 * tests); calls on one client are multiplexed on that connection.
 */
export function snapshotsClient(socketPath: string, opts: ClientOptions = {}): SnapshotsClient {
  return createClient(Snapshots, grpcTransport(socketPath, opts));
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

/** Drains a List stream into one array of Info (`snapshotter`: containerd's snapshotter name, on containerd's socket). */
export async function listAll(client: SnapshotsClient, filters: string[] = [], snapshotter = ""): Promise<ListedInfo[]> {
  const out: ListedInfo[] = [];
  for await (const r of client.list({ filters, snapshotter })) {
    for (const i of r.info) out.push({ name: i.name, parent: i.parent, kind: i.kind, labels: { ...i.labels } });
  }
  return out;
}

/** Counts what a List stream returns, without copying it (for timing List itself). */
export async function countListed(client: SnapshotsClient, filters: string[] = [], snapshotter = ""): Promise<number> {
  let n = 0;
  for await (const r of client.list({ filters, snapshotter })) n += r.info.length;
  return n;
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

/** One snapshot as thinsnap itself lists it (keys carry containerd's "<ns>/<id>/" prefix). */
export interface BackendSnapshot {
  name: string;
  parent: string;
  kind: "active" | "view" | "committed" | "unknown";
  labels: Record<string, string>;
}

const KIND_NAMES: Record<number, BackendSnapshot["kind"]> = {
  [Kind.ACTIVE]: "active",
  [Kind.VIEW]: "view",
  [Kind.COMMITTED]: "committed",
};

/**
 * Every snapshot thinsnap holds, asked over its own socket: what containerd's
 * metadata layer has actually created/removed in the backend (GC included).
 */
export async function backendSnapshots(address: string): Promise<BackendSnapshot[]> {
  const all = await listAll(snapshotsClient(address), [], "thinsnap");
  return all
    .map((i) => ({ name: i.name, parent: i.parent, kind: KIND_NAMES[i.kind] ?? "unknown", labels: i.labels }))
    .sort((a, b) => a.name.localeCompare(b.name));
}
