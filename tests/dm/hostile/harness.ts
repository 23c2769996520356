/**
 * The hostile client's harness (tests/dm/hostile.test.ts): one daemon on a
 * real pool for all scenarios, a fresh connection per test, and the record of
 * every answer's code (findings fail the verdict test).
 */
import { afterAll, beforeAll, beforeEach } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createTestPool, type TestPool } from "../pool-fixture.ts";
import { Daemon, type DaemonConfig } from "../../kit/daemon.ts";
import { Code, CodeCounter, codeName, ConnectError, snapshotsClient, type Outcome, type SnapshotsClient } from "../../kit/client.ts";
import { rawGrpcCall } from "../../kit/wire.ts";

export const POOL = "tshostile";

export function rnd(n: number): number {
  return Math.floor(Math.random() * n);
}

export const ANY_SPECIFIC: Outcome[] = [
  "ok",
  Code.InvalidArgument,
  Code.NotFound,
  Code.AlreadyExists,
  Code.FailedPrecondition,
  Code.ResourceExhausted,
  Code.Unimplemented,
];

export interface Hostile {
  tp: TestPool;
  dir: string;
  cfg: DaemonConfig;
  d: Daemon;
  /** This test's client (a fresh connection per test). */
  c: SnapshotsClient;
  counter: CodeCounter;
  findings: string[];
  finding(f: string): void;
  /** Records an outcome; `allowed` lists the acceptable codes ("ok" included when success is fine). */
  note(what: string, o: Outcome, allowed: Outcome[], detail?: string): void;
  typed(what: string, p: Promise<unknown>, allowed: Outcome[]): Promise<Outcome>;
  raw(what: string, method: string, body: Uint8Array | Uint8Array[], allowed: Outcome[], headers?: Record<string, string>): Promise<void>;
  /** A client on a new connection. */
  fresh(): SnapshotsClient;
}

/** Registers the suite's set-up and teardown (call inside the describe); the fields are set by beforeAll. */
export function hostileSuite(): Hostile {
  const h = {
    counter: new CodeCounter(),
    findings: [] as string[],
  } as Hostile;
  h.finding = (f: string): void => {
    h.findings.push(f);
    console.log(`FINDING: ${f.slice(0, 400)}`);
  };
  beforeAll(async () => {
    h.tp = createTestPool(POOL, { dataSize: 1 << 30 });
    h.dir = mkdtempSync("/tmp/tshostile-");
    mkdirSync(`${h.dir}/run`, { mode: 0o700 });
    h.cfg = { poolName: POOL, rootPath: `${h.dir}/root`, address: `${h.dir}/run/s.sock`, logLevel: "warn" };
    h.d = await Daemon.start({ config: h.cfg, readyTimeoutMs: 120_000 });
    const c = snapshotsClient(h.cfg.address, { timeoutMs: 60_000 });
    h.c = c;
    await c.prepare({ key: "h-a" });
    await c.commit({ key: "h-a", name: "h-c" });
    await c.prepare({ key: "h-act", parent: "h-c" });
    await c.view({ key: "h-view", parent: "h-c" });
  }, 300_000);

  // a fresh connection per test: one test's poisoned session must not fail the next
  h.fresh = (): SnapshotsClient => snapshotsClient(h.cfg.address, { timeoutMs: 60_000 });
  beforeEach(() => {
    if (h.cfg) h.c = h.fresh();
  });

  afterAll(async () => {
    await h.d?.kill();
    h.tp?.destroy();
    if (h.dir) rmSync(h.dir, { recursive: true, force: true });
  }, 300_000);


  h.note = (what: string, o: Outcome, allowed: Outcome[], detail = ""): void => {
    h.counter.add(what.split(" ")[0]!, o);
    if (o === Code.Unknown || o === Code.Internal || !allowed.includes(o)) {
      h.finding(`${what}: got ${codeName(o)}, want one of ${allowed.map(codeName).join("/")} ${detail}`.trim());
    }
  };

  h.typed = async (what: string, p: Promise<unknown>, allowed: Outcome[]): Promise<Outcome> => {
    let o: Outcome = "ok";
    let msg = "";
    try {
      await p;
    } catch (e) {
      const err = ConnectError.from(e);
      o = err.code;
      msg = err.rawMessage.slice(0, 200);
    }
    h.note(what, o, allowed, msg);
    return o;
  };

  h.raw = async (what: string, method: string, body: Uint8Array | Uint8Array[], allowed: Outcome[], headers = {}): Promise<void> => {
    const r = await rawGrpcCall(h.cfg.address, method, body, { headers, timeoutMs: 30_000 });
    // gRPC's HTTP-to-status mapping: a 404 without grpc-status is Unimplemented
    if (r.grpcStatus === undefined && r.httpStatus === 404) r.grpcStatus = Code.Unimplemented;
    if (r.grpcStatus === undefined) {
      h.counter.add(`raw-${method}`, undefined);
      h.finding(`${what}: no grpc-status (http ${r.httpStatus}, ${r.error ?? "no error"})`);
      return;
    }
    h.note(`raw-${method} ${what}`, r.grpcStatus === 0 ? "ok" : (r.grpcStatus as Code), allowed, r.grpcMessage?.slice(0, 200) ?? "");
  };
  return h;
}
