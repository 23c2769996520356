/**
 * Where thinsnap's time goes, per operation, in the guest:
 *
 *   handler  thinsnap's snapshotter (src/snapshotter) called in process, on a
 *            real thin-pool, with its pool (src/dm ThinPool: every kernel call)
 *            and its store (SQLite) wrapped in timers: handler = pool + store +
 *            the rest (validation, labels, JS);
 *   rpc      one call through the gRPC layer alone: a Connect client and
 *            thinsnap's server (src/rpc) in its own process over the in-memory
 *            snapshotter (bench/fake-server.ts memory): no store, no pool.
 *
 * direct (the table's column) ≈ rpc + handler.
 */
import { TEST_OPTIONS } from "../tests/kit/fakes/options.ts";
import { mkdirSync, rmSync } from "node:fs";
import { DeviceMapper, ThinPool } from "../src/dm/index.ts";
import { formatDevice } from "../src/snapshotter/mkfs.ts";
import type { PoolApi } from "../src/snapshotter/pool-api.ts";
import { ThinSnapshotter } from "../src/snapshotter/snapshotter.ts";
import { Store } from "../src/store/store.ts";
import { snapshotsClient } from "../tests/kit/client.ts";
import { startBackground } from "../tests/kit/process.ts";
import { now, samples, stats, type Stats } from "./stats.ts";

/** Accumulates time and calls per method of a wrapped object; nested calls count once (at the outermost). */
class Meter {
  readonly ms = new Map<string, number>();
  readonly calls = new Map<string, number>();
  private depth = 0;

  wrap<T extends object>(target: T): T {
    return new Proxy(target, {
      get: (t, prop, recv) => {
        const v: unknown = Reflect.get(t, prop, recv);
        if (typeof v !== "function") return v;
        const name = String(prop);
        return (...args: unknown[]): unknown => {
          const outer = this.depth === 0;
          this.depth++;
          const t0 = now();
          try {
            return (v as (...a: unknown[]) => unknown).apply(t, args);
          } finally {
            this.depth--;
            if (outer) {
              this.ms.set(name, (this.ms.get(name) ?? 0) + now() - t0);
              this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
            }
          }
        };
      },
    });
  }

  total(): number {
    let s = 0;
    for (const v of this.ms.values()) s += v;
    return s;
  }

  reset(): void {
    this.ms.clear();
    this.calls.clear();
  }

  /** "name ×calls/op mean-ms/op" for each method, per operation. */
  breakdown(ops: number): Record<string, { callsPerOp: number; msPerOp: number }> {
    const out: Record<string, { callsPerOp: number; msPerOp: number }> = {};
    for (const [k, v] of [...this.ms.entries()].sort((a, b) => b[1] - a[1])) {
      out[k] = { callsPerOp: (this.calls.get(k) ?? 0) / ops, msPerOp: v / ops };
    }
    return out;
  }
}

export interface OpProfile {
  n: number;
  /** Handler time in process (median, mean). */
  handler: Stats;
  /** Means per operation. */
  poolMs: number;
  storeMs: number;
  otherMs: number;
  pool: Record<string, { callsPerOp: number; msPerOp: number }>;
  store: Record<string, { callsPerOp: number; msPerOp: number }>;
}

export interface Profile {
  ops: Record<string, OpProfile>;
  /**
   * Round trip through the gRPC layer alone (memory snapshotter), per method;
   * "stat-h2": the same client against bare node:http2 (no Connect server).
   */
  rpc: Record<string, Stats>;
}

export async function profile(poolName: string, dir: string, count: number, log: (s: string) => void): Promise<Profile> {
  const dm = new DeviceMapper();
  const poolMeter = new Meter();
  const storeMeter = new Meter();
  const pool = poolMeter.wrap<PoolApi>(new ThinPool(dm, poolName));
  mkdirSync(dir, { recursive: true });
  rmSync(`${dir}/profile.db`, { force: true });
  const store = storeMeter.wrap(Store.open(`${dir}/profile.db`));
  log(`profile: in-process snapshotter on ${poolName} (formats its base)`);
  const sn = await ThinSnapshotter.open(
    { ...TEST_OPTIONS, poolName, baseImageSize: 10n << 30n },
    { store, pool, format: (dev, fs, o) => formatDevice(dev, fs, o, dir), listDevices: () => dm.list() },
  );
  const ops: Record<string, OpProfile> = {};
  const measure = async (name: string, keys: string[], fn: (k: string, i: number) => Promise<unknown>): Promise<void> => {
    poolMeter.reset();
    storeMeter.reset();
    const s = stats(await samples(keys.length, (i) => fn(keys[i]!, i)));
    const poolMs = poolMeter.total() / keys.length;
    const storeMs = storeMeter.total() / keys.length;
    ops[name] = {
      n: keys.length,
      handler: s,
      poolMs,
      storeMs,
      otherMs: s.mean - poolMs - storeMs,
      pool: poolMeter.breakdown(keys.length),
      store: storeMeter.breakdown(keys.length),
    };
  };
  const keys = (p: string): string[] => Array.from({ length: count }, (_, i) => `${p}${i}`);

  log(`profile: handler ×${count} per op`);
  await measure("prepare-root", keys("root"), (k) => sn.prepare(k, ""));
  await sn.commit("parent", "root0");
  for (const k of keys("root").slice(1)) await sn.remove(k);
  await measure("prepare-child", keys("child"), (k) => sn.prepare(k, "parent"));
  await measure("stat", keys("child"), (k) => sn.stat(k));
  await measure("mounts", keys("child"), (k) => sn.mounts(k));
  await measure("usage", keys("child"), (k) => sn.usage(k));
  await measure("commit", keys("child"), (k) => sn.commit(`c-${k}`, k));
  for (const k of keys("child")) await sn.remove(`c-${k}`);
  for (const k of keys("act")) await sn.prepare(k, "parent");
  await measure("remove", keys("act"), (k) => sn.remove(k));
  await sn.remove("parent");
  await sn.close();
  // The base device stays in the pool (nobody uses the pool after this).

  log("profile: gRPC alone (memory snapshotter server)");
  const sock = "/run/bench-rpc/rpc.sock";
  mkdirSync("/run/bench-rpc", { recursive: true });
  const d = startBackground("rpc-server", [process.execPath, `${import.meta.dir}/fake-server.ts`, "memory", sock, `${dir}/unused.db`], `${dir}/rpc-server.log`);
  await d.waitForSocket(sock, 120_000);
  const c = snapshotsClient(sock);
  const rpc: Record<string, Stats> = {};
  const rt = async (name: string, fn: (i: number) => Promise<unknown>, reps: number): Promise<void> => {
    rpc[name] = stats(await samples(reps, fn));
  };
  await c.prepare({ key: "warm" });
  await rt("prepare", (i) => c.prepare({ key: `p${i}` }), count * 4);
  await rt("stat", (i) => c.stat({ key: `p${i}` }), count * 4);
  await rt("commit", (i) => c.commit({ name: `c${i}`, key: `p${i}` }), count * 4);
  await rt("remove", (i) => c.remove({ key: `c${i}` }), count * 4);
  await d.stop();

  log("profile: HTTP/2 alone (bare node:http2, canned reply, same client)");
  const sock2 = "/run/bench-rpc/h2.sock";
  const d2 = startBackground("h2-server", [process.execPath, `${import.meta.dir}/fake-server.ts`, "h2", sock2, `${dir}/unused.db`], `${dir}/h2-server.log`);
  await d2.waitForSocket(sock2, 120_000);
  const c2 = snapshotsClient(sock2);
  await c2.stat({ key: "warm" });
  await rt("stat-h2", (i) => c2.stat({ key: `p${i}` }), count * 4);
  await d2.stop();
  return { ops, rpc };
}
