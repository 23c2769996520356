/**
 * The realistic image (tests/kit/realistic-image.ts) through containerd, per
 * snapshotter: thinsnap, containerd's devmapper and containerd's overlayfs
 * (same guest, same disk, same containerd). Per repetition and snapshotter, in
 * an order rotated every repetition: `ctr images import` (timed), the unpacked
 * top layer verified against the image (a View, mounted read-only; in the
 * first repetition), `ctr run`
 * to first output ×N (the first is "cold", the median of the rest "warm"),
 * then the image removed and containerd's GC run (its content and snapshots
 * gone), so that every import starts from nothing.
 */
import { copyFileSync, existsSync } from "node:fs";
import { buildRealisticImage, loadImageInfo, verifyTree, type RealisticImage } from "../../tests/kit/realistic-image.ts";
import { log, N } from "../plan.ts";
import { cell, notes, row, targetWithin, type Column, type Row } from "../results.ts";
import { key, remove, view, type Caller, type Env } from "../sides.ts";
import { now, stats } from "../stats.ts";
import { withMounted } from "../workload.ts";
import { firstOutput } from "./image.ts";

export const REAL_IMAGE_NAME = "docker.io/library/thinsnap-real:latest";

export type CtrdColumn = "ctrd" | "ref" | "ovl";
export type Target = Caller & { id: CtrdColumn; label: string };

/** The three snapshotters behind containerd. */
export function ctrdTargets(env: Env): Target[] {
  const side = (id: "ctrd" | "ref"): Target => {
    const s = env.sides.find((x) => x.id === id)!;
    return { ...s, id };
  };
  return [env.overlay, side("ctrd"), side("ref")];
}

/** The image bench/run built on the host (BENCH_REAL_IMAGE), copied onto the data disk; else built here. */
export function realImage(env: Env): RealisticImage {
  const built = process.env.BENCH_REAL_IMAGE;
  const local = `${env.dir}/realistic.tar`;
  if (built && existsSync(built) && existsSync(`${built}.json`)) {
    const info = loadImageInfo(`${built}.json`);
    if (!existsSync(local)) copyFileSync(built, local);
    return { ...info, path: local };
  }
  log("building the realistic image in the guest (bench/run builds it on the host when it can)");
  return buildRealisticImage({ out: local, name: REAL_IMAGE_NAME });
}

/** Views the image's top layer, mounts it read-only, compares it with the image; returns the differences. */
export async function verifyUnpacked(env: Env, t: Target, img: RealisticImage): Promise<string[]> {
  const k = key(t, "verify");
  const top = img.chainIds[img.chainIds.length - 1]!;
  await view(t, k, top);
  try {
    const m = await t.client.mounts({ snapshotter: t.snapshotter, key: k });
    const mounts = m.mounts.map((x) => ({ type: x.type, source: x.source, options: [...x.options] }));
    return await withMounted(mounts, (dir) => verifyTree(dir, img.tree));
  } finally {
    await remove(env, t, k);
  }
}

export async function ctrRun(env: Env, t: Target, imageName: string, id: string): Promise<number> {
  const ctr = env.containerd;
  const t0 = now();
  const first = await firstOutput(
    ["ctr", "--address", ctr.address, "--namespace", ctr.namespace, "run", "--rm", "--snapshotter", t.snapshotter, imageName, id, "/bin/echo", "ready"],
    "ready",
  );
  return first - t0;
}

/** ctr with a long timeout (an import of the realistic image takes minutes under emulation on a loaded host). */
export async function ctrSlow(env: Env, ...args: string[]): Promise<void> {
  const r = await env.containerd.ctrWith({ timeoutMs: 1_800_000 }, ...args);
  if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: exit ${r.code}: ${r.stderr}${r.stdout}`);
}

const NAMES: Record<CtrdColumn, string> = { ctrd: "thinsnap", ref: "devmapper", ovl: "overlayfs" };

/** `afterLast(t)` runs in the last repetition after each snapshotter's containers, while the image is still there (the storms). */
export async function realImageRows(env: Env, afterLast?: (t: Target, img: RealisticImage) => Promise<void>): Promise<RealisticImage> {
  const img = realImage(env);
  const targets = ctrdTargets(env);
  const imp: Record<CtrdColumn, number[]> = { ctrd: [], ref: [], ovl: [] };
  const cold: Record<CtrdColumn, number[]> = { ctrd: [], ref: [], ovl: [] };
  const warm: Record<CtrdColumn, number[]> = { ctrd: [], ref: [], ovl: [] };
  const bad: Record<CtrdColumn, string[]> = { ctrd: [], ref: [], ovl: [] };
  for (let r = 0; r < N.real.reps; r++) {
    const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
    for (const t of order) {
      log(`${t.label}: ctr images import (realistic, ${(img.size / 2 ** 20).toFixed(0)} MiB), rep ${r + 1}/${N.real.reps}`);
      const t0 = now();
      await ctrSlow(env, "images", "import", "--snapshotter", t.snapshotter, img.path);
      imp[t.id].push(now() - t0);
      log(`${t.label}: imported in ${((now() - t0) / 1000).toFixed(1)} s; verifying`);
      // Verified once per snapshotter (reading 118 MiB back takes a minute under emulation).
      if (r === 0) {
        const diff = await verifyUnpacked(env, t, img);
        if (diff.length) bad[t.id].push(`${diff.length} differences, e.g. ${diff.slice(0, 5).join("; ")}`);
      }
      const runs: number[] = [];
      for (let i = 0; i < N.real.runs; i++) runs.push(await ctrRun(env, t, img.name, `real-${t.id}-${r}-${i}`));
      cold[t.id].push(runs[0]!);
      warm[t.id].push(stats(runs.slice(1)).median);
      log(`${t.label}: ctr run cold ${runs[0]!.toFixed(0)} ms, warm median ${stats(runs.slice(1)).median.toFixed(0)} ms`);
      if (afterLast && r === N.real.reps - 1) await afterLast(t, img);
      await ctrSlow(env, "images", "rm", "--sync", img.name);
      await env.leases.gc();
    }
  }
  const cells = (xs: Record<CtrdColumn, number[]>): Row["cells"] => {
    const c: Row["cells"] = {};
    for (const t of targets) c[t.id] = cell(stats(xs[t.id]));
    return c;
  };
  const desc = `${img.layers.length} gzip layers, ${(img.size / 2 ** 20).toFixed(0)} MiB tarball, ${img.files.toLocaleString("en")} files, ${(img.bytes / 2 ** 20).toFixed(0)} MiB unpacked`;
  const ri = row("real-import", `ctr images import, realistic image (${desc})`, "ms", cells(imp));
  targetWithin(ri, "ctrd", "ovl", 1.1, ["thinsnap", "overlayfs"]);
  const add = (c: Column): number => (ri.cells[c]?.median ?? NaN) - (ri.cells.ovl?.median ?? NaN);
  ri.targets.push({
    text: "added ≤ ¼ devmapper's",
    pass: add("ctrd") <= add("ref") / 4,
    detail: `over overlayfs thinsnap adds ${(add("ctrd") / 1000).toFixed(2)} s, devmapper ${(add("ref") / 1000).toFixed(2)} s (${(add("ctrd") / add("ref")).toFixed(2)} of it)`,
  });
  ri.notes.push(
    `Layers (uncompressed tar / gzip MiB): ${img.layerStats.map((l) => `${(l.bytes / 2 ** 20).toFixed(0)}/${(l.gzBytes / 2 ** 20).toFixed(0)}`).join(", ")}; ` +
      `with ${img.layerStats.reduce((a, l) => a + l.hardlinks, 0)} hard links, ${img.layerStats.reduce((a, l) => a + l.symlinks, 0)} symlinks, ` +
      `${img.layerStats.reduce((a, l) => a + l.whiteouts, 0)} whiteouts (one of a directory), an opaque directory, user.* xattrs, two big incompressible files. ` +
      `The imports of the three snapshotters alternate (order rotated each repetition); the image is removed and containerd's GC run between them.`,
  );
  const rc = row("real-run-cold", "ctr run --rm … echo, realistic image: first container, to first output", "ms", cells(cold));
  const rw = row("real-run-warm", `ctr run --rm … echo, realistic image: median of containers 2-${N.real.runs}, to first output`, "ms", cells(warm));
  targetWithin(rw, "ctrd", "ovl", 1.1, ["thinsnap", "overlayfs"]);
  void rc;
  for (const t of targets) {
    if (bad[t.id].length) {
      notes.push(`UNPACK DIFFERS on ${t.label}: ${bad[t.id].join(" | ")}`);
      ri.targets.push({ text: `${NAMES[t.id]} tree verified`, pass: false, detail: bad[t.id].join(" | ") });
    }
  }
  if (targets.every((t) => bad[t.id].length === 0)) {
    ri.notes.push(`After the first import on each snapshotter the top layer (a View, mounted read-only) matched the image: ${img.tree.size.toLocaleString("en")} paths (types, modes, sizes, content hashes, link targets, xattrs, hard links).`);
  }
  return img;
}
