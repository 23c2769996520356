/**
 * Where an unpack's time goes, per layer: the realistic image's five layers
 * replayed as containerd's unpacker does them (Prepare on the previous layer,
 * mount, extract, unmount, Commit), each phase timed, on
 *
 *   direct  thinsnap's socket, with containerd's unpack key (so ext4 without barriers)
 *   barrier thinsnap's socket, another key (so the plain options: barriers on, as before)
 *   ref     containerd's devmapper, through containerd's snapshots service
 *   ovl     a plain directory on the same ext4 disk: what containerd's overlayfs
 *           snapshotter's unpack does (mkdir, extract, rename; no mount, no sync)
 *
 * The extraction is GNU tar (the same for all; containerd extracts with its own
 * Go code, so the extract phase here is comparable across columns, not with
 * the import rows).
 */
import { mkdirSync, readdirSync, renameSync, rmSync } from "node:fs";
import type { RealisticImage } from "../../tests/kit/realistic-image.ts";
import { sh } from "../../tests/kit/process.ts";
import { log, N } from "../plan.ts";
import { cell, row, type Column, type Row } from "../results.ts";
import { commit, prepare, remove, type Caller, type Env } from "../sides.ts";
import { now, stats } from "../stats.ts";
import { withMounted } from "../workload.ts";

const PHASES = ["prepare", "mount+extract+umount", "commit"] as const;
type Phase = "prepare" | "mount" | "extract" | "umount" | "commit";

interface Variant {
  id: Column | "barrier";
  label: string;
  run(layer: number, blob: string, rep: number): Promise<Record<Phase, number>>;
  cleanup(): Promise<void>;
}

let seq = 0;

/** Extracts a gzip layer with GNU tar (xattrs kept), as root (owners and modes kept). */
function extract(blob: string, dir: string): void {
  sh("tar", ["--xattrs", "--xattrs-include=user.*", "-xzf", blob, "-C", dir]);
}

function snapshotVariant(env: Env, id: Column | "barrier", label: string, side: Caller, unpackKey: boolean, chainIds: string[]): Variant {
  const made: string[] = [];
  return {
    id,
    label,
    async run(layer, blob) {
      const parent = layer === 0 ? "" : made[made.length - 1]!;
      const k = unpackKey ? `extract-replay${++seq} ${chainIds[layer]}` : `replay-${++seq}`;
      const t0 = now();
      const mounts = await prepare(side, k, parent);
      const t1 = now();
      let tm = 0;
      let te = 0;
      await withMounted(mounts, (dir) => {
        tm = now();
        extract(blob, dir);
        te = now();
      });
      const t3 = now();
      const name = `replayed-${id}-${seq}`;
      await commit(side, name, k);
      made.push(name);
      return { prepare: t1 - t0, mount: tm - t1, extract: te - tm, umount: t3 - te, commit: now() - t3 };
    },
    async cleanup() {
      for (const n of made.reverse()) await side.client.remove({ snapshotter: side.snapshotter, key: n });
      if (side.ctrd) await env.leases.gc();
      made.length = 0;
    },
  };
}

function dirVariant(env: Env): Variant {
  const root = `${env.dir}/replay-dir`;
  return {
    id: "ovl",
    label: "plain directory (overlayfs's unpack)",
    async run(layer, blob) {
      const t0 = now();
      const tmp = `${root}/extract-${++seq}`;
      mkdirSync(tmp, { recursive: true });
      const t1 = now();
      extract(blob, tmp);
      const t2 = now();
      renameSync(tmp, `${root}/${layer}-${seq}`);
      return { prepare: t1 - t0, mount: 0, extract: t2 - t1, umount: 0, commit: now() - t2 };
    },
    async cleanup() {
      for (const d of readdirSync(root)) rmSync(`${root}/${d}`, { recursive: true, force: true });
    },
  };
}

export async function unpackRows(env: Env, img: RealisticImage): Promise<void> {
  const blobs = `${env.dir}/replay-blobs`;
  mkdirSync(blobs, { recursive: true });
  sh("tar", ["-xf", img.path, "-C", blobs, "blobs"]);
  const blobOf = (i: number): string => `${blobs}/blobs/sha256/${img.layers[i]!.digest.slice("sha256:".length)}`;
  const direct = env.sides.find((s) => s.id === "direct")!;
  const ref = env.sides.find((s) => s.id === "ref")!;
  const variants: Variant[] = [
    dirVariant(env),
    snapshotVariant(env, "direct", "thinsnap direct (unpack key: nobarrier)", direct, true, img.chainIds),
    snapshotVariant(env, "barrier", "thinsnap direct (other key: barriers)", direct, false, img.chainIds),
    snapshotVariant(env, "ref", "devmapper via containerd", ref, true, img.chainIds),
  ];
  // phase samples per variant: one per layer per repetition
  const got = new Map<string, Record<Phase | "total", number[]>>();
  for (const v of variants) got.set(v.id, { prepare: [], mount: [], extract: [], umount: [], commit: [], total: [] });
  for (let r = 0; r < N.unpack.reps; r++) {
    const order = variants.map((_, i) => variants[(i + r) % variants.length]!);
    for (const v of order) {
      log(`unpack replay (${img.layers.length} layers): ${v.label}, rep ${r + 1}/${N.unpack.reps}`);
      const g = got.get(v.id)!;
      for (let i = 0; i < img.layers.length; i++) {
        const ph = await v.run(i, blobOf(i), r);
        for (const [k, x] of Object.entries(ph)) g[k as Phase].push(x);
        g.total.push(ph.prepare + ph.mount + ph.extract + ph.umount + ph.commit);
      }
      await v.cleanup();
    }
  }
  rmSync(blobs, { recursive: true, force: true });
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  const cellsOf = (k: Phase | "total"): Row["cells"] => {
    const c: Row["cells"] = {};
    for (const v of variants) if (v.id !== "barrier") c[v.id] = cell(stats(got.get(v.id)![k]));
    return c;
  };
  const tot = row("unpack-layer", `Unpack replay, per layer (${img.layers.length} layers): Prepare + mount + extract + umount + Commit`, "ms", cellsOf("total"));
  for (const k of ["prepare", "mount", "extract", "umount", "commit"] as const) row(`unpack-${k}`, `Unpack replay, per layer: ${k}`, "ms", cellsOf(k));
  const b = got.get("barrier")!;
  row("unpack-layer-barrier", "Unpack replay, per layer, thinsnap with write barriers (a key that is not an unpack's)", "ms", { direct: cell(stats(b.total)) });
  row("unpack-umount-barrier", "Unpack replay, per layer, thinsnap with write barriers: umount", "ms", { direct: cell(stats(b.umount)) });
  const d = got.get("direct")!;
  const o = got.get("ovl")!;
  tot.notes.push(
    `Per layer (means over ${d.total.length} layers): thinsnap direct adds ${mean(d.total).toFixed(0)} − ${mean(o.total).toFixed(0)} = ${(mean(d.total) - mean(o.total)).toFixed(0)} ms ` +
      `over a plain directory: Prepare ${mean(d.prepare).toFixed(0)}, mount ${mean(d.mount).toFixed(0)}, extract ${(mean(d.extract) - mean(o.extract)).toFixed(0)} more ` +
      `(a fresh filesystem on a thin device vs the disk's), umount ${mean(d.umount).toFixed(0)} (with barriers: ${mean(b.umount).toFixed(0)}), Commit ${mean(d.commit).toFixed(0)} ms. ` +
      `Phases: ${PHASES.join(", ")}; GNU tar extracts (see bench/sections/unpack.ts).`,
  );
}
