/**
 * Host-side (not emulated) profile of one unary Stat through thinsnap's server
 * path, from a gRPC-protocol client (Connect's gRPC transport: the same
 * framing, headers and trailers as grpc-go, which containerd's proxy plugin
 * uses). Each server runs in its own process (bench/fake-server.ts); per mode:
 * latency p50/p99 of sequential calls, and the server process's CPU time per
 * call (utime + stime from /proc/PID/stat over all the calls):
 *
 *   h2         bare node:http2 under Bun answering a canned gRPC reply
 *   connect    + Connect's server (src/rpc/server.ts) with a canned Stat handler
 *   memory     + thinsnap's service layer (src/rpc/service.ts) over an in-memory snapshotter
 *   fake-pool  + thinsnap's snapshotter and SQLite store (the real Stat path; the pool is not touched by Stat)
 *
 * plus, in process (no gRPC), thinsnap's snapshotter.stat and the store's two
 * reads behind it. Each step's difference is what that layer costs. Then each
 * server once more under Bun's sampling profiler (--cpu-prof-md): the
 * functions with the most samples.
 *
 *   bun bench/host-stat.ts [--calls 5000] [--out FILE]
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../src/store/store.ts";
import { snapshotsClient } from "../tests/kit/client.ts";
import { FakePool } from "../tests/kit/fakes/fake-pool.ts";
import { openOnFakePool } from "../tests/kit/fakes/open.ts";
import { REPO, startBackground } from "../tests/kit/process.ts";
import { parseCpuProfileMd, type ProfileTop } from "./cpu-profile.ts";
import { stats, type Stats } from "./stats.ts";

export const HOST_STAT_MODES = ["h2", "connect", "memory", "fake-pool"] as const;
export type HostStatMode = (typeof HOST_STAT_MODES)[number];

export interface HostStatResult {
  host: { cpu: string; cpus: number; bun: string };
  calls: number;
  /** Per server mode: latency (ms) and the server's CPU µs per call. */
  modes: Record<HostStatMode, { latency: Stats; serverCpuUs: number; clientCpuUs: number }>;
  /** Per server mode, a second pass under Bun's sampling profiler: where the server's samples go. */
  profiles?: Partial<Record<HostStatMode, ProfileTop>>;
  /** In process, µs per call: snapshotter.stat, store.getSnapshot, store.labels. */
  inProcessUs: { stat: number; getSnapshot: number; labels: number };
}

const TICK_US = 1e6 / 100; // USER_HZ

/** utime + stime of a process, µs. */
function cpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * TICK_US;
}

async function measureMode(mode: HostStatMode, dir: string, calls: number, profileDir?: string): Promise<HostStatResult["modes"][HostStatMode]> {
  const sock = join(dir, `${mode}.sock`);
  rmSync(join(dir, `${mode}.db`), { force: true });
  const prof = profileDir ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${profileDir}`] : [];
  const d = startBackground(`stat-${mode}`, [process.execPath, ...prof, `${REPO}/bench/fake-server.ts`, mode, sock, join(dir, `${mode}.db`)], join(dir, `${mode}.log`));
  try {
    await d.waitForSocket(sock, 60_000);
    const c = snapshotsClient(sock);
    const key = "default/1/stat-me";
    if (mode === "memory" || mode === "fake-pool") await c.prepare({ key, labels: { "containerd.io/snapshot/x": "1" } });
    for (let i = 0; i < Math.min(1000, calls); i++) await c.stat({ key }); // warm up (JIT, connection)
    const lat: number[] = [];
    const s0 = cpuUs(d.pid);
    const c0 = process.cpuUsage();
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      await c.stat({ key });
      lat.push(performance.now() - t0);
    }
    const cu = process.cpuUsage(c0);
    return { latency: stats(lat), serverCpuUs: (cpuUs(d.pid) - s0) / calls, clientCpuUs: (cu.user + cu.system) / calls };
  } finally {
    await d.stop();
  }
}

async function inProcess(dir: string, calls: number): Promise<HostStatResult["inProcessUs"]> {
  const store = Store.open(join(dir, "inproc.db"));
  const { sn } = await openOnFakePool(new FakePool(), store, {}, undefined);
  const key = "default/1/stat-me";
  await sn.prepare(key, "", { labels: { "containerd.io/snapshot/x": "1" } });
  const row = store.getSnapshot(key)!;
  const per = async (fn: () => unknown): Promise<number> => {
    for (let i = 0; i < 1000; i++) await fn();
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) await fn();
    return ((performance.now() - t0) * 1000) / calls;
  };
  const out = { stat: await per(() => sn.stat(key)), getSnapshot: await per(() => store.getSnapshot(key)), labels: await per(() => store.labels(row.id)) };
  await sn.close();
  return out;
}

export async function hostStat(calls: number, log: (m: string) => void): Promise<HostStatResult> {
  const dir = mkdtempSync(join(tmpdir(), "thinsnap-hoststat-"));
  try {
    const modes = {} as HostStatResult["modes"];
    for (const m of HOST_STAT_MODES) {
      modes[m] = await measureMode(m, dir, calls);
      log(`${m}: p50 ${(modes[m].latency.median * 1000).toFixed(0)} µs, server CPU ${modes[m].serverCpuUs.toFixed(0)} µs/call, client CPU ${modes[m].clientCpuUs.toFixed(0)} µs/call`);
    }
    const inProcessUs = await inProcess(dir, calls);
    log(`in process: ${JSON.stringify(inProcessUs)}`);
    const profiles: HostStatResult["profiles"] = {};
    for (const m of HOST_STAT_MODES) {
      const pd = join(dir, `prof-${m}`);
      mkdirSync(pd, { recursive: true });
      await measureMode(m, dir, calls, pd);
      const md = readdirSync(pd).find((f) => f.endsWith(".md"));
      if (md) profiles[m] = parseCpuProfileMd(readFileSync(join(pd, md), "utf8"));
      const top = profiles[m]?.top.slice(0, 4).map((t) => `${t.fn} ${t.samples}`).join(", ");
      log(`${m} profiled: ${profiles[m]?.total ?? 0} samples; ${top ?? "no profile written"}`);
    }
    return { host: { cpu: cpus()[0]?.model ?? "?", cpus: cpus().length, bun: Bun.version }, calls, modes, profiles, inProcessUs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const r = await hostStat(Number(arg("calls") ?? 5000), (m) => process.stderr.write(`[stat on host] ${m}\n`));
  const json = `${JSON.stringify(r, null, 2)}\n`;
  const out = arg("out");
  if (out) writeFileSync(out, json);
  else process.stdout.write(json);
}
