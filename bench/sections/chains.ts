/** Layer chains: one at a time, 16 at once, and kernel_threads 0 against 4. */
import { snapshotsClient } from "../../tests/kit/client.ts";
import { rssSampler } from "../../tests/kit/process.ts";
import { FILE_BYTES, FILES_PER_LAYER, mountWriteUmount } from "../workload.ts";
import { log, N, type SideId } from "../plan.ts";
import { cell, phases, row, rss, targetFaster, type Row } from "../results.ts";
import { commit, countsText, interleaved, key, prepare, removeAll, type Env, type Parents, type Side } from "../sides.ts";
import { now, stats } from "../stats.ts";

export interface ChainPhases {
  prepare: number;
  io: number;
  commit: number;
}

/** One chain of `layers` layers: prepare → mount → write → umount → commit; returns the committed names. */
export async function chain(side: Side, layers: number, first: string, tag: string, ph: ChainPhases): Promise<string[]> {
  const names: string[] = [];
  let parent = first;
  for (let j = 0; j < layers; j++) {
    const k = key(side, `${tag}-l${j}`);
    let t = now();
    const mounts = await prepare(side, k, parent);
    ph.prepare += now() - t;
    t = now();
    await mountWriteUmount(mounts, `layer${j}`);
    ph.io += now() - t;
    t = now();
    const name = `c-${k}`;
    await commit(side, name, k);
    ph.commit += now() - t;
    names.push(name);
    parent = name;
  }
  return names;
}

export async function chainRows(env: Env): Promise<void> {
  const cells: Row["cells"] = {};
  const reps = { direct: N.chain.direct, ctrd: N.chain.ctrd, ref: N.chain.ref };
  log(`layer chains of ${N.chain.layers} ×${countsText(reps)} (interleaved)`);
  const ph: Record<SideId, ChainPhases> = {
    direct: { prepare: 0, io: 0, commit: 0 },
    ctrd: { prepare: 0, io: 0, commit: 0 },
    ref: { prepare: 0, io: 0, commit: 0 },
  };
  const made: Record<SideId, string[][]> = { direct: [], ctrd: [], ref: [] };
  const floorChains: number[][] = [];
  const xs = await interleaved(
    env,
    reps,
    async (side) => {
      made[side.id].push(await chain(side, N.chain.layers, "", "chain", ph[side.id]));
    },
    { count: N.floor.chains, fn: async () => void floorChains.push(await env.floor.chain(N.chain.layers)) },
  );
  for (const ids of floorChains) for (const id of [...ids].reverse()) env.floor.remove(id, false);
  for (const side of env.sides) {
    for (const names of made[side.id]) await removeAll(env, side, names);
    const r = reps[side.id];
    const x = ph[side.id];
    phases[`chain/${side.id}`] = { prepareMs: x.prepare / r, mountWriteUmountMs: x.io / r, commitMs: x.commit / r };
    cells[side.id] = cell(stats(xs[side.id]));
  }
  cells.floor = cell(stats(xs.floor));
  const r = row("chain", `Layer chain: ${N.chain.layers} × (Prepare, mount, write ${FILES_PER_LAYER}×${FILE_BYTES / 1024} KiB, umount, Commit), total`, "ms", cells);
  r.notes.push(
    "The first layer is parentless: the reference runs mkfs.ext4 on it (containerd 1.6 devmapper formats every parentless device). " +
      "Removing the chains afterwards is not timed.",
  );
}

export async function concurrency(env: Env, p: Parents): Promise<void> {
  const wall: Row["cells"] = {};
  const thr: Row["cells"] = {};
  const { chains, layers } = N.conc;
  let loadRss = 0;
  for (const side of env.sides) {
    log(`${side.label}: ${chains} concurrent chains of ${layers} layers`);
    const sampler = side.id === "ref" ? null : rssSampler(side.id === "direct" ? env.thinsnap.pid : env.thinsnapProxied.pid);
    const ph: ChainPhases = { prepare: 0, io: 0, commit: 0 };
    const t0 = now();
    const all = await Promise.all(Array.from({ length: chains }, (_, c) => chain(side, layers, p.parent[side.id], `conc${c}`, ph)));
    const ms = now() - t0;
    if (sampler) loadRss = Math.max(loadRss, sampler.stop().maxKiB);
    wall[side.id] = { n: 1, median: ms, p95: ms };
    const tput = ((chains * layers) / ms) * 1000;
    thr[side.id] = { n: 1, median: tput, p95: tput };
    phases[`concurrent/${side.id}`] = { wallMs: ms, sumPrepareMs: ph.prepare, sumMountWriteUmountMs: ph.io, sumCommitMs: ph.commit };
    for (const names of all) await removeAll(env, side, names);
  }
  row("conc-wall", `${chains} concurrent chains × ${layers} layers (Prepare, write, Commit): wall time`, "ms", wall);
  const t = row("conc-tput", `${chains} concurrent chains: throughput (layers/s)`, "ops/s", thr);
  targetFaster(t, 10);
  rss.loadKiB = loadRss;
}

/**
 * kernel_threads = 0 (the default; the direct column's daemon) against 4 (a
 * third daemon on its own pool of the same geometry), both direct: child
 * Prepare + Remove one at a time, the two interleaved; then the 16-way
 * concurrent chains on each, one after the other.
 */
export async function kernelThreadsRows(env: Env, p: Parents): Promise<void> {
  const off = env.sides.find((s) => s.id === "direct")!;
  const on: Side = { ...off, label: "thinsnap direct, kernel_threads = 4", client: snapshotsClient(env.threaded.address) };
  const onParent = key(on, "kt-parent");
  await prepare(on, onParent);
  await commit(on, `${onParent}-c`, onParent);
  const n = N.child.direct;
  log(`kernel_threads 0 vs 4: child Prepare ×${n} each (interleaved), then 16-way chains on each`);
  const xs: { off: number[]; on: number[] } = { off: [], on: [] };
  for (let i = 0; i < n; i++) {
    for (const [which, side, parent] of [["off", off, p.parent.direct], ["on", on, `${onParent}-c`]] as const) {
      const k = key(side, "kt");
      const t = now();
      await prepare(side, k, parent);
      xs[which].push(now() - t);
      await side.client.remove({ snapshotter: side.snapshotter, key: k });
    }
  }
  row("kt-child-0", "Prepare, child, kernel_threads = 0 (default), interleaved with the next row", "ms", { direct: cell(stats(xs.off)) });
  row("kt-child-4", "Prepare, child, kernel_threads = 4", "ms", { direct: cell(stats(xs.on)) });
  const { chains, layers } = N.conc;
  const tput: Record<"off" | "on", number> = { off: 0, on: 0 };
  let rssOn = 0;
  for (const [which, side, parent] of [["off", off, p.parent.direct], ["on", on, `${onParent}-c`]] as const) {
    const sampler = which === "on" ? rssSampler(env.threaded.pid) : null;
    const ph: ChainPhases = { prepare: 0, io: 0, commit: 0 };
    const t0 = now();
    const all = await Promise.all(Array.from({ length: chains }, (_, c) => chain(side, layers, parent, `kt${c}`, ph)));
    const ms = now() - t0;
    if (sampler) rssOn = sampler.stop().maxKiB;
    tput[which] = ((chains * layers) / ms) * 1000;
    phases[`kernel_threads=${which === "on" ? 4 : 0}/concurrent`] = { wallMs: ms, sumPrepareMs: ph.prepare, sumMountWriteUmountMs: ph.io, sumCommitMs: ph.commit };
    for (const names of all) await removeAll(env, side, names);
  }
  row("kt-conc-0", `${chains} concurrent chains, kernel_threads = 0 (default): throughput (layers/s)`, "ops/s", { direct: { n: 1, median: tput.off, p95: tput.off } });
  const r4 = row("kt-conc-4", `${chains} concurrent chains, kernel_threads = 4: throughput (layers/s)`, "ops/s", { direct: { n: 1, median: tput.on, p95: tput.on } });
  r4.notes.push(`VmRSS of that daemon under this load: max ${(rssOn / 1024).toFixed(1)} MiB.`);
}
