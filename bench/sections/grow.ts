/**
 * Grown Prepare (containerd.io/snapshot/max-size): a child Prepare whose
 * label asks for a device larger than its parent's, next to a plain child
 * Prepare, direct on thinsnap, interleaved; then where the grow's time goes,
 * on the floor's pool with thinsnap's own grow code (src/snapshotter/grow.ts):
 * resize2fs's process start, the offline resize2fs thinsnap runs (with its
 * own per-pass timings, -d 16), and the online path (private mount with
 * journal recovery + EXT4_IOC_RESIZE_FS + umount) against the mount and
 * umount alone.
 */
import { mkdirSync } from "node:fs";
import { growFilesystem } from "../../src/snapshotter/grow.ts";
import { mount, umount } from "../../src/sys/libc.ts";
import { MAX_SIZE_LABEL } from "../../src/snapshotter/max-size.ts";
import { parseLogLine } from "../../tests/kit/daemon.ts";
import { run, runOk } from "../../tests/kit/process.ts";
import { fmtMs } from "../format.ts";
import { GEOMETRY, log, N } from "../plan.ts";
import { cell, row, type Row } from "../results.ts";
import { key, prepare, type Env, type Parents } from "../sides.ts";
import { now, stats } from "../stats.ts";

const GiB = 1n << 30n;
/** A little and a lot larger than the 10 GiB base: the resize's work grows with the groups it adds. */
const SIZES = [11n * GiB, 20n * GiB];
const GREW = "grew a snapshot's filesystem (max-size)";

/** The grow times thinsnap logged (ms per grown Prepare), in order. */
function loggedGrowMs(env: Env): number[] {
  return env.thinsnap
    .logs()
    .split("\n")
    .map(parseLogLine)
    .filter((f) => f.msg === GREW)
    .map((f) => Number(f.ms));
}

const gib = (b: bigint): string => `${b / GiB} GiB`;

export async function growRows(env: Env, p: Parents): Promise<void> {
  const direct = env.sides.find((s) => s.id === "direct")!;
  const kinds: (bigint | null)[] = [null, ...SIZES];
  const xs = new Map<bigint | null, number[]>(kinds.map((k) => [k, []]));
  const logged0 = loggedGrowMs(env).length;
  log(`grown Prepare: plain child vs max-size ${SIZES.map(gib).join(", ")} ×${N.grow.prepares} (direct, interleaved)`);
  for (let i = 0; i < N.grow.prepares; i++) {
    // The order rotates, so that no kind always follows another.
    for (let j = 0; j < kinds.length; j++) {
      const size = kinds[(i + j) % kinds.length]!;
      const k = key(direct, size === null ? "plain" : "grown");
      const t0 = now();
      await prepare(direct, k, p.parent.direct, size === null ? {} : { [MAX_SIZE_LABEL]: String(size) });
      xs.get(size)!.push(now() - t0);
      await direct.client.remove({ snapshotter: direct.snapshotter, key: k });
    }
  }
  // thinsnap's own log: how long the grow took inside each grown Prepare (in the order made, sizes rotating).
  const logged = loggedGrowMs(env).slice(logged0);
  const plain = stats(xs.get(null)!);
  row("grow-plain", "Prepare, child, plain (next to the grown rows)", "ms", { direct: cell(plain) });
  for (const size of SIZES) {
    const s = stats(xs.get(size)!);
    const r = row(`grow-${size / GiB}g`, `Prepare, child grown ${gib(GEOMETRY.baseImageBytes)} → ${gib(size)} by max-size (ext4)`, "ms", { direct: cell(s) });
    const added = s.median - plain.median;
    r.targets.push({
      text: "grow < child Prepare",
      pass: added < plain.median,
      detail: `the grow adds ${fmtMs(added)} to a plain child Prepare of ${fmtMs(plain.median)} (${(added / plain.median).toFixed(1)}×)`,
    });
    r.notes.push(`N=${s.n}; thinsnap logged the grow itself (growFilesystem) at a median of ${fmtMs(stats(logged.filter((_, i) => i % SIZES.length === SIZES.indexOf(size))).median)} per Prepare (all grown Prepares: ${fmtMs(stats(logged).median)}).`);
  }
  await growBreakdown(env);
}

/** "overall resize2fs: ... time:  0.04/ 0.01/ 0.00" (real/user/sys seconds) and the slowest passes, from resize2fs -d 16. */
function resizeTimings(out: string): { overallMs: number; passes: Record<string, number>; io: string } {
  const passes: Record<string, number> = {};
  let overallMs = NaN;
  let io = "";
  for (const line of out.split("\n")) {
    const m = /^(.+?): Memory used: .* time:\s+([\d.]+)\//.exec(line);
    if (m) {
      if (m[1] === "overall resize2fs") overallMs = Number(m[2]) * 1000;
      else passes[m[1]!] = (passes[m[1]!] ?? 0) + Number(m[2]) * 1000;
    }
    const o = /^overall resize2fs: I\/O (.*)$/.exec(line);
    if (o) io = o[1]!;
  }
  return { overallMs, passes, io };
}

async function growBreakdown(env: Env): Promise<void> {
  const fl = env.floor;
  const big = SIZES[SIZES.length - 1]!;
  const growRoot = `${env.dir}/grow-floor`;
  mkdirSync(`${growRoot}/mnt`, { recursive: true });
  const x = { exec: [] as number[], offline: [] as number[], inner: [] as number[], online: [] as number[], mountUmount: [] as number[] };
  const passes: Record<string, number[]> = {};
  let io = "";
  log(`grow breakdown on the floor's pool, ${gib(GEOMETRY.baseImageBytes)} → ${gib(big)} ×${N.grow.breakdown}`);
  for (let i = 0; i < N.grow.breakdown; i++) {
    // resize2fs's process start alone (exec, dynamic loading of e2fsprogs' libraries).
    x.exec.push((await run(["resize2fs"])).ms);
    // The offline resize thinsnap runs for a clean ext4 (grow.ts), with resize2fs's own pass timings.
    const id = fl.prepare(fl.parent, big);
    const r = await run(["resize2fs", "-f", "-d", "16", `/dev/mapper/${fl.name(id)}`]);
    if (r.code !== 0) throw new Error(`resize2fs: exit ${r.code}: ${r.stderr}`);
    fl.remove(id, true);
    x.offline.push(r.ms);
    const t = resizeTimings(r.stdout + r.stderr);
    x.inner.push(t.overallMs);
    for (const [k, v] of Object.entries(t.passes)) (passes[k] ??= []).push(v);
    io = t.io;
    // The online path (an ext4 that was mounted when snapshotted): thinsnap's growFilesystem,
    // and the same kind of device's private mount (journal recovery) + umount alone.
    const src = fl.prepare(fl.parent);
    const dir = `${growRoot}/mnt`;
    await runOk(["mount", "-t", "ext4", `/dev/mapper/${fl.name(src)}`, dir]);
    const a = fl.prepareFromActive(src, big);
    const b = fl.prepareFromActive(src, big);
    await runOk(["umount", dir]);
    fl.remove(src, true);
    let t0 = now();
    await growFilesystem(`/dev/mapper/${fl.name(a)}`, "ext4", big, growRoot);
    x.online.push(now() - t0);
    // the syscalls, as growFilesystem makes them (mount(8)/umount(8) would add two process starts)
    t0 = now();
    mount(`/dev/mapper/${fl.name(b)}`, dir, "ext4");
    umount(dir);
    x.mountUmount.push(now() - t0);
    fl.remove(a, true);
    fl.remove(b, true);
  }
  const c = (xs: number[]): Row["cells"] => ({ floor: cell(stats(xs)) });
  const what = `${gib(GEOMETRY.baseImageBytes)} → ${gib(big)}`;
  row("grow-exec", "grow, part: resize2fs process start alone (no arguments: prints its usage)", "ms", c(x.exec));
  const off = row("grow-offline", `grow, offline (thinsnap's path for a clean ext4): resize2fs -f, ${what}, whole process`, "ms", c(x.offline));
  const top = Object.entries(passes)
    .map(([k, v]) => [k, stats(v).median] as const)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 4)
    .map(([k, v]) => `${k} ${fmtMs(v)}`)
    .join(", ");
  off.notes.push(
    `resize2fs's own timing (-d 16) of its work, open to close: median ${fmtMs(stats(x.inner).median)} (10 ms resolution); slowest passes: ${top}; ` +
      `I/O ${io}. The rest of the process's ${fmtMs(stats(x.offline).median)} is its start (see the process-start row), opening the device and ` +
      `the flush at close (dm-thin commits the pool's metadata on a FLUSH).`,
  );
  row("grow-online", `grow, online (an ext4 snapshotted while mounted): growFilesystem = private mount + EXT4_IOC_RESIZE_FS + umount, ${what}`, "ms", c(x.online));
  const mu = row("grow-online-mount", "grow, part: that private mount (journal recovery) + umount alone", "ms", c(x.mountUmount));
  mu.notes.push(`The ioctl's share of the online grow ≈ ${fmtMs(stats(x.online).median - stats(x.mountUmount).median)} (online − mount/umount, medians).`);
}
