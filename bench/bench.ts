/**
 * `npm run bench` (via bench/run, inside the qemu guest): thinsnap against
 * containerd's built-in devmapper snapshotter, in one boot, on thin-pools of
 * the same geometry, plus the device-mapper floor. Prints one table and writes
 * BENCHMARKS.md and bench/results.json.
 *
 * Sides (columns):
 *   direct  thinsnap's own socket (Connect gRPC client → thinsnap serve)
 *   ctrd    thinsnap through containerd (client → containerd snapshots service → proxy plugin → thinsnap)
 *   ref     containerd's built-in devmapper (client → containerd snapshots service → devmapper)
 *   floor   the bare dm calls through src/dm (bench/floor.ts)
 *
 * Environment: BENCH_SCALE (default 1) multiplies every N; BENCH_ONLY=a,b
 * runs only those sections (setup always runs); BENCH_OUT=0 skips writing
 * BENCHMARKS.md/results.json.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { procStatusKiB, REPO } from "../tests/kit/process.ts";
import { machineInfo } from "./machine.ts";
import { BIN, GEOMETRY, log, N, SCALE, T_START, want, WRITE_OUT } from "./plan.ts";
import { profile } from "./profile.ts";
import { renderProfile, renderTable, report, type ReportInput } from "./report.ts";
import { notes, phases, profiled, row, rows, rss, targetFaster, targetFloor, targetMax, targetWithin, type Row } from "./results.ts";
import { childRows, parentless, readRows } from "./sections/basic.ts";
import { chainRows, concurrency, kernelThreadsRows } from "./sections/chains.ts";
import { imageRows } from "./sections/image.ts";
import { growRows } from "./sections/grow.ts";
import { hostStatRows } from "./sections/host.ts";
import { metricsRows } from "./sections/metrics.ts";
import { listBigRows } from "./sections/list-big.ts";
import { realImage, realImageRows } from "./sections/real-image.ts";
import { Storms } from "./sections/storm.ts";
import { unpackRows } from "./sections/unpack.ts";
import { list10k, listRows } from "./sections/list.ts";
import { setup } from "./sides.ts";
import { now } from "./stats.ts";

/** Runs a long section; a failure is recorded in the notes and the run goes on (its rows so far are kept). */
async function guarded(name: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
    log(`section ${name} FAILED: ${msg}`);
    notes.push(`Section ${name} failed: ${msg.split("\n")[0]}`);
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("bench/bench.ts runs as root in the qemu guest: use `npm run bench`");
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: bench/run builds it`);
  const machine = machineInfo();
  log(`scale ${SCALE}; ${JSON.stringify(N)}`);
  const env = await setup();
  try {
    await Bun.sleep(2000);
    rss.idleKiB = Math.max(procStatusKiB(env.thinsnap.pid), procStatusKiB(env.thinsnapProxied.pid));
    const rssRow = row("rss-idle", "thinsnap VmRSS, idle", "MiB", {});
    const p = await parentless(env);
    const pre = rows.find((r) => r.id === "prepare-root")!;
    targetFaster(pre, 50);
    targetFloor(pre, 1.5);
    if (want("profile")) profiled.profile = await profile("bench-prof", `${env.dir}/profile`, N.profile, log);
    if (want("child")) {
      await childRows(env, p);
      const byId = (id: string): Row => rows.find((r) => r.id === id)!;
      for (const id of ["prepare-child", "commit", "remove"]) {
        targetFaster(byId(id), 5);
        targetFloor(byId(id), 1.5);
      }
    }
    if (want("read")) {
      await readRows(env, p);
      for (const id of ["stat", "mounts"]) targetWithin(rows.find((r) => r.id === id)!, "ctrd", "ref", 1.5, ["thinsnap via containerd", "devmapper"]);
    }
    if (want("grow")) await guarded("grow", () => growRows(env, p));
    if (want("hoststat")) hostStatRows();
    if (want("metrics")) metricsRows();
    if (want("list")) await listRows(env, p);
    if (want("listbig")) await guarded("listbig", () => listBigRows(env, p));
    if (want("list10k")) await list10k();
    if (want("chain")) await chainRows(env);
    if (want("conc")) await concurrency(env, p);
    if (want("threads")) await kernelThreadsRows(env, p);
    if (want("image")) await imageRows(env);
    if (want("real") || want("unpack") || want("storm")) {
      const storms = want("storm") ? new Storms(env) : null;
      const img = realImage(env);
      if (want("real")) await guarded("real", () => realImageRows(env, storms ? (t, i) => storms.onImage(t, i) : undefined));
      else if (storms) await guarded("storm", () => storms.importAndStorm(img));
      if (want("unpack")) await guarded("unpack", () => unpackRows(env, img));
      if (storms) {
        await guarded("storm", () => storms.direct());
        storms.rows();
      }
    }
    rss.hwmKiB = Math.max(procStatusKiB(env.thinsnap.pid, "VmHWM"), procStatusKiB(env.thinsnapProxied.pid, "VmHWM"));
    rssRow.cells.direct = { n: 1, median: rss.idleKiB / 1024, p95: rss.idleKiB / 1024 };
    targetMax(rssRow, "direct", 60, "MiB");
    if (rss.loadKiB > 0) {
      const r = row("rss-load", "thinsnap VmRSS, 16-way load (max)", "MiB", { direct: { n: 1, median: rss.loadKiB / 1024, p95: rss.loadKiB / 1024 } });
      targetMax(r, "direct", 150, "MiB");
    }
    // Idle again after all that (kernel threads, where enabled, exit after 30 s without work).
    await Bun.sleep(32_000);
    rss.afterKiB = Math.max(procStatusKiB(env.thinsnap.pid), procStatusKiB(env.thinsnapProxied.pid));
    const after = row("rss-after", "thinsnap VmRSS, idle again after the runs", "MiB", { direct: { n: 1, median: rss.afterKiB / 1024, p95: rss.afterKiB / 1024 } });
    targetMax(after, "direct", 60, "MiB");
    // RSS rows last in the table.
    for (const id of ["rss-idle", "rss-load", "rss-after"]) {
      const i = rows.findIndex((r) => r.id === id);
      if (i >= 0) rows.push(...rows.splice(i, 1));
    }
  } finally {
    await env.containerd.stop();
    await env.thinsnap.stop();
    await env.thinsnapProxied.stop();
    await env.threaded.stop();
  }
  const totalMs = now() - T_START;
  const results: ReportInput = { machine, totalMs, counts: N, rows, notes, phases, rss, profile: profiled.profile };
  process.stdout.write(`\n${renderTable(rows)}\n\n`);
  for (const r of rows) for (const t of r.targets) process.stdout.write(`${t.pass ? "PASS" : "MISS"}  ${r.label}: ${t.text} (${t.detail})\n`);
  process.stdout.write(`\n${renderProfile(results)}\n`);
  process.stdout.write(`\nidle RSS ${(rss.idleKiB / 1024).toFixed(1)} MiB, load RSS ${(rss.loadKiB / 1024).toFixed(1)} MiB, VmHWM ${(rss.hwmKiB / 1024).toFixed(1)} MiB; total ${(totalMs / 60000).toFixed(1)} min\n`);
  if (WRITE_OUT) {
    const out = process.env.BENCH_MERGE === "1" ? mergeWithSaved(results) : results;
    writeFileSync(`${REPO}/BENCHMARKS.md`, report(out));
    writeFileSync(
      `${REPO}/bench/results.json`,
      `${JSON.stringify({ machine, profile: out.profile, geometry: { ...GEOMETRY, baseImageBytes: GEOMETRY.baseImageBytes.toString() }, scale: SCALE, counts: N, rows: out.rows, phases: out.phases, rss: out.rss, notes: out.notes, totalMs }, null, 2)}\n`,
    );
    log("wrote BENCHMARKS.md and bench/results.json");
  }
}

/**
 * BENCH_MERGE=1 with BENCH_ONLY: this run's rows replace the saved run's rows
 * of the same id (bench/results.json), the others are kept and marked as the
 * earlier run's; for a partial run when a full one does not fit.
 */
function mergeWithSaved(r: ReportInput): ReportInput {
  const saved = JSON.parse(readFileSync(`${REPO}/bench/results.json`, "utf8")) as ReportInput & { machine: { date: string } };
  const fresh = new Map(r.rows.map((x) => [x.id, x]));
  const savedIds = new Set(saved.rows.map((x) => x.id));
  const rows = saved.rows.map((x) => fresh.get(x.id) ?? { ...x, label: x.label.endsWith("†") ? x.label : `${x.label} †` });
  rows.push(...r.rows.filter((x) => !savedIds.has(x.id)));
  const note =
    `**Partial run.** Only the sections ${[...(process.env.BENCH_ONLY ?? "").split(",")].join(", ")} (and the parentless row) ran on ${r.machine.date} in one boot; ` +
    `rows marked † are from the earlier full run of ${saved.machine.date} (another boot: compare ratios only within a row).`;
  return { ...r, rows, notes: [note, ...r.notes], profile: r.profile ?? saved.profile, rss: r.rss.idleKiB ? r.rss : saved.rss };
}

/** `bun bench/bench.ts --report`: rewrites BENCHMARKS.md from bench/results.json (no guest needed). */
function reportOnly(): void {
  const saved = JSON.parse(readFileSync(`${REPO}/bench/results.json`, "utf8")) as ReportInput;
  writeFileSync(`${REPO}/BENCHMARKS.md`, report(saved));
  process.stdout.write(`${renderTable(saved.rows)}\n\nrewrote BENCHMARKS.md from bench/results.json\n`);
}

(process.argv[2] === "--report" ? Promise.resolve(reportOnly()) : main()).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
