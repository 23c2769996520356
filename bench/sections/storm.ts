/**
 * Pod storm (containerd issue #12335): 64 container Prepares at once, each a
 * child of one image's top layer (as CRI makes a container's rootfs), each
 * mounted, written once and unmounted as it arrives; then all removed (not
 * timed). Through containerd on thinsnap, its devmapper and its overlayfs (the
 * realistic image imported into each), and direct on thinsnap with
 * kernel_threads = 0 and = 4 (children of a committed snapshot). Wall time,
 * containers/s, p50/p99 per Prepare.
 */
import type { RealisticImage } from "../../tests/kit/realistic-image.ts";
import { log, N } from "../plan.ts";
import { cell, row, type Row } from "../results.ts";
import { commit, key, prepare, type Caller, type Env } from "../sides.ts";
import { now, stats, type Stats } from "../stats.ts";
import { mountWriteUmount } from "../workload.ts";
import { ctrdTargets, ctrSlow, type Target } from "./real-image.ts";
import { snapshotsClient } from "../../tests/kit/client.ts";

interface StormResult {
  wallMs: number;
  prepare: number[];
}

/** Nearest-rank p99 of the samples. */
function p99(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(0.99 * s.length) - 1)]!;
}

async function storm(env: Env, side: Caller & { id: string }, parent: string, pods: number): Promise<StormResult> {
  const keys = Array.from({ length: pods }, () => key(side, "pod"));
  const prep: number[] = [];
  const t0 = now();
  await Promise.all(
    keys.map(async (k) => {
      const s = now();
      const mounts = await prepare(side, k, parent);
      prep.push(now() - s);
      await mountWriteUmount(mounts, "pod", 1);
    }),
  );
  const wallMs = now() - t0;
  // Removal is not part of the storm: all at once, then one GC through containerd.
  await Promise.all(keys.map((k) => side.client.remove({ snapshotter: side.snapshotter, key: k })));
  if (side.ctrd) await env.leases.gc();
  return { wallMs, prepare: prep };
}

interface Acc {
  wall: number[];
  prep: number[];
  p99: number[];
}

/**
 * The storms, run as the image is at hand: through containerd right after
 * an import of the realistic image (onImage, called by the realistic-image
 * section in its last repetition, or by importAndStorm), direct on a
 * committed parent (direct()); rows() writes the rows.
 */
export class Storms {
  private readonly acc = new Map<string, Acc>();
  constructor(private readonly env: Env) {}

  private add(id: string, s: StormResult): void {
    const g = this.acc.get(id) ?? { wall: [], prep: [], p99: [] };
    this.acc.set(id, g);
    g.wall.push(s.wallMs);
    g.prep.push(...s.prepare);
    g.p99.push(p99(s.prepare));
    log(`  storm on ${id}: wall ${(s.wallMs / 1000).toFixed(2)} s, Prepare p50 ${stats(s.prepare).median.toFixed(0)} ms, p99 ${p99(s.prepare).toFixed(0)} ms`);
  }

  async onImage(t: Target, img: RealisticImage): Promise<void> {
    log(`pod storm: ${N.storm.pods} concurrent Prepares on ${t.label}`);
    this.add(t.id, await storm(this.env, t, img.chainIds[img.chainIds.length - 1]!, N.storm.pods));
  }

  /** Without the realistic-image section: imports the image into each snapshotter (untimed) and storms it. */
  async importAndStorm(img: RealisticImage): Promise<void> {
    for (const t of ctrdTargets(this.env)) {
      log(`${t.label}: importing the realistic image for the storm (untimed)`);
      await ctrSlow(this.env, "images", "import", "--snapshotter", t.snapshotter, img.path);
      await this.onImage(t, img);
      await ctrSlow(this.env, "images", "rm", "--sync", img.name);
      await this.env.leases.gc();
    }
  }

  /** Direct, kernel_threads = 0 and = 4, alternating, N.storm.reps each. */
  async direct(): Promise<void> {
    const env = this.env;
    const direct = env.sides.find((s) => s.id === "direct")!;
    const threaded = { id: "thr", label: "thinsnap direct, kernel_threads = 4", client: snapshotsClient(env.threaded.address), snapshotter: "thinsnap", ctrd: false };
    const parents: Record<string, string> = {};
    for (const d of [direct, threaded]) {
      const k = key(d, "storm-parent");
      await prepare(d, k, "");
      parents[d.id] = `storm-parent-${d.id}`;
      await commit(d, parents[d.id]!, k);
    }
    for (let r = 0; r < N.storm.reps; r++) {
      for (const d of r % 2 ? [threaded, direct] : [direct, threaded]) {
        log(`pod storm: ${N.storm.pods} concurrent Prepares on ${d.label}, rep ${r + 1}/${N.storm.reps}`);
        this.add(d.id, await storm(env, d, parents[d.id]!, N.storm.pods));
      }
    }
    for (const d of [direct, threaded]) await d.client.remove({ snapshotter: "thinsnap", key: parents[d.id]! });
  }

  rows(): void {
    const pods = N.storm.pods;
    const cols = (f: (g: Acc) => Stats | number): Row["cells"] => {
      const c: Row["cells"] = {};
      for (const id of ["direct", "ctrd", "ref", "ovl"] as const) {
        const g = this.acc.get(id);
        if (!g) continue;
        const v = f(g);
        c[id] = typeof v === "number" ? { n: g.wall.length, median: v, p95: v } : cell(v);
      }
      return c;
    };
    const wall = row("storm-wall", `Pod storm: ${pods} concurrent container Prepares (children of the image's top layer), each mounted, written, unmounted: wall time`, "ms", cols((g) => stats(g.wall)));
    const tput = row("storm-tput", `Pod storm, ${pods}-way: containers/s`, "ops/s", cols((g) => (pods * 1000) / stats(g.wall).median));
    const p50r = row("storm-p50", `Pod storm, ${pods}-way: Prepare p50 (cell) and p99 (in parentheses)`, "ms", cols((g) => ({ ...stats(g.prep), p95: p99(g.prep) })));
    const ts = tput.cells.ctrd?.median ?? NaN;
    const ref = tput.cells.ref?.median ?? NaN;
    tput.targets.push({ text: "≥10× ref", pass: ts >= 10 * ref, detail: `${(ts / ref).toFixed(2)}× the reference's containers/s (via containerd)` });
    const pc = this.acc.get("ctrd");
    if (pc) {
      const ratio = p99(pc.prep) / stats(pc.prep).median;
      p50r.targets.push({ text: "p99 ≤ 3× p50", pass: ratio <= 3, detail: `thinsnap via containerd: p99 ${p99(pc.prep).toFixed(0)} ms = ${ratio.toFixed(2)}× p50 ${stats(pc.prep).median.toFixed(0)} ms` });
    }
    p50r.notes.push("In this row the cells' parentheses hold p99, not p95.");
    wall.notes.push(
      `The client mounts with mount(2) on its one JS thread, so the 64 mounts of a storm are serialized in the client (as they would not be across CRI's shims); ` +
        `the direct column's parent is a committed empty snapshot (thin devices do not get deeper with the image), the via-containerd columns' the image's top layer.`,
    );
    const t0 = this.acc.get("direct");
    const t4 = this.acc.get("thr");
    if (t0 && t4) {
      row("storm-kt", `Pod storm, ${pods}-way, thinsnap direct: wall time, kernel_threads = 0 (default) vs 4`, "ms", { direct: cell(stats(t0.wall)), ctrd: cell(stats(t4.wall)) }).notes.push(
        "In this row and the next the 'direct' cell is kernel_threads = 0 and the 'via ctrd' cell kernel_threads = 4 (both direct).",
      );
      row("storm-kt-p", `Pod storm, ${pods}-way, thinsnap direct: Prepare p50 (p99), kernel_threads = 0 vs 4`, "ms", {
        direct: { ...cell(stats(t0.prep)), p95: p99(t0.prep) },
        ctrd: { ...cell(stats(t4.prep)), p95: p99(t4.prep) },
      });
    }
  }
}
