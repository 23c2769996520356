/** Rows of single calls: parentless and child Prepare, View, Commit, Remove, Mounts, Stat, Usage. */
import { FILE_BYTES, FILES_PER_LAYER, mountWriteUmount } from "../workload.ts";
import { log, N, type SideId } from "../plan.ts";
import { cell, row, type Row } from "../results.ts";
import { commit, countsText, interleaved, key, prepare, remove, removeAll, view, type Env, type Parents, type Side } from "../sides.ts";
import { stats } from "../stats.ts";

interface Made {
  /** The keys made per side, in order. */
  keys: Record<SideId, string[]>;
  /** The floor's devices (active). */
  floorIds: number[];
  xs: Record<SideId | "floor", number[]>;
}

/** Makes `count` snapshots per side with `make`, and floor devices from `floorOrigin`, interleaved. */
async function makeInterleaved(
  env: Env,
  count: Record<SideId, number>,
  what: string,
  make: (s: Side, k: string) => Promise<unknown>,
  floor: { count: number; origin: number },
): Promise<Made> {
  const keys: Record<SideId, string[]> = { direct: [], ctrd: [], ref: [] };
  const floorIds: number[] = [];
  const xs = await interleaved(
    env,
    count,
    async (s) => {
      const k = key(s, what);
      keys[s.id].push(k);
      await make(s, k);
    },
    { count: floor.count, fn: () => floorIds.push(env.floor.prepare(floor.origin)) },
  );
  return { keys, floorIds, xs };
}

export async function parentless(env: Env): Promise<Parents> {
  const cells: Row["cells"] = {};
  const parent = {} as Record<SideId, string>;
  log(`parentless Prepare ×${countsText(N.parentless)} (direct/ctrd/ref, interleaved)`);
  const { keys, floorIds, xs } = await makeInterleaved(env, N.parentless, "root", (s, k) => prepare(s, k), {
    count: N.floor.parentless,
    origin: env.floor.base,
  });
  for (const id of floorIds) env.floor.remove(id, true);
  cells.floor = cell(stats(xs.floor));
  for (const side of env.sides) {
    cells[side.id] = cell(stats(xs[side.id]));
    // The last one becomes the committed parent of the following rows.
    const last = keys[side.id].pop()!;
    parent[side.id] = `parent-${side.id}`;
    await commit(side, parent[side.id], last);
    await removeAll(env, side, keys[side.id]);
  }
  row("prepare-root", "Prepare, parentless (root layer)", "ms", cells);
  return { parent };
}

export async function childRows(env: Env, p: Parents): Promise<void> {
  const prep: Row["cells"] = {};
  const rem: Row["cells"] = {};
  const vw: Row["cells"] = {};
  const cm: Row["cells"] = {};
  const side = (id: SideId): Side => env.sides.find((s) => s.id === id)!;
  const count = { direct: Math.max(N.child.direct, N.remove.direct), ctrd: Math.max(N.child.ctrd, N.remove.ctrd), ref: Math.max(N.child.ref, N.remove.ref) };

  log(`child Prepare, then Remove ×${countsText(count)} (interleaved)`);
  const fl = env.floor;
  const { keys: children, floorIds: floorKids, xs: px } = await makeInterleaved(env, count, "child", (s, k) => prepare(s, k, p.parent[s.id]), { count: N.floor.child, origin: fl.parent });
  const rx = await interleaved(env, count, async (s, i) => remove(env, s, children[s.id][i]!), {
    count: floorKids.length,
    fn: (i) => fl.remove(floorKids[i]!, true),
  });
  prep.floor = cell(stats(px.floor));
  rem.floor = cell(stats(rx.floor));
  for (const id of ["direct", "ctrd", "ref"] as const) {
    prep[id] = cell(stats(px[id]));
    rem[id] = cell(stats(rx[id]), side(id).ctrd ? "Remove + containerd GC (sync)" : undefined);
  }

  log(`View ×${countsText(N.view)} (interleaved)`);
  const { keys: views, floorIds: floorViews, xs: vx } = await makeInterleaved(env, N.view, "view", (s, k) => view(s, k, p.parent[s.id]), { count: N.floor.view, origin: fl.parent });
  for (const id of floorViews) fl.remove(id, true);
  vw.floor = cell(stats(vx.floor));
  for (const s of env.sides) {
    vw[s.id] = cell(stats(vx[s.id]));
    await removeAll(env, s, views[s.id]);
  }

  log(`Commit ×${countsText(N.commit)} (interleaved)`);
  const active: Record<SideId, string[]> = { direct: [], ctrd: [], ref: [] };
  for (const s of env.sides) {
    for (let i = 0; i < N.commit[s.id]; i++) {
      const k = key(s, "tocommit");
      active[s.id].push(k);
      await prepare(s, k, p.parent[s.id]);
    }
  }
  const floorActive = Array.from({ length: N.floor.commit }, () => fl.prepare(fl.parent));
  const committed: Record<SideId, string[]> = { direct: [], ctrd: [], ref: [] };
  const cx = await interleaved(
    env,
    N.commit,
    async (s, i) => {
      const name = `committed-${active[s.id][i]!}`;
      committed[s.id].push(name);
      await commit(s, name, active[s.id][i]!);
    },
    { count: floorActive.length, fn: (i) => fl.commit(floorActive[i]!) },
  );
  for (const id of floorActive) fl.remove(id, false);
  cm.floor = cell(stats(cx.floor));
  for (const s of env.sides) {
    cm[s.id] = cell(stats(cx[s.id]));
    await removeAll(env, s, committed[s.id]);
  }
  row("prepare-child", "Prepare, child of a committed parent", "ms", prep);
  row("view", "View of a committed parent", "ms", vw);
  row("commit", "Commit (no writes)", "ms", cm);
  row("remove", "Remove (active, unmounted)", "ms", rem);
}

export async function readRows(env: Env, p: Parents): Promise<void> {
  const mo: Row["cells"] = {};
  const st: Row["cells"] = {};
  const us: Row["cells"] = {};
  const keys = {} as Record<SideId, string>;
  for (const side of env.sides) {
    const k = key(side, "reads");
    keys[side.id] = k;
    const mounts = await prepare(side, k, p.parent[side.id]);
    // Some written data, so that Usage has something to count.
    await mountWriteUmount(mounts, "usage");
  }
  log(`Mounts, Stat ×${countsText(N.read)}, Usage ×${countsText(N.usage)} (interleaved)`);
  const mx = await interleaved(env, N.read, async (s) => void (await s.client.mounts({ snapshotter: s.snapshotter, key: keys[s.id] })));
  const sx = await interleaved(env, N.read, async (s) => void (await s.client.stat({ snapshotter: s.snapshotter, key: keys[s.id] })));
  const fid = env.floor.prepare(env.floor.parent);
  const ux = await interleaved(env, N.usage, async (s) => void (await s.client.usage({ snapshotter: s.snapshotter, key: keys[s.id] })), {
    count: N.floor.usage,
    fn: () => env.floor.usage(fid),
  });
  env.floor.remove(fid, true);
  us.floor = cell(stats(ux.floor));
  for (const side of env.sides) {
    mo[side.id] = cell(stats(mx[side.id]));
    st[side.id] = cell(stats(sx[side.id]));
    us[side.id] = cell(stats(ux[side.id]));
    await removeAll(env, side, [keys[side.id]]);
  }
  row("mounts", "Mounts (active)", "ms", mo);
  row("stat", "Stat (active)", "ms", st);
  row("usage", `Usage (active, ${(FILES_PER_LAYER * FILE_BYTES) / 1024} KiB written)`, "ms", us);
}

