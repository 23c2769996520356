/**
 * List (unfiltered) over 100 and 1,000 snapshots: thinsnap direct, thinsnap
 * via containerd (containerd 1.6 answers List from its own database but calls
 * the snapshotter's Stat once per snapshot) and the built-in devmapper. The
 * snapshots are Views of the committed parent, made 8 at a time. The
 * reference is measured at the first size only unless BENCH_REF_LIST_ALL=1:
 * making 1,000 of its devices takes ~7 minutes under emulation, and its List
 * is a bolt read, linear in the count.
 */
import { forEachConcurrently } from "../concurrency.ts";
import { log, N, type SideId } from "../plan.ts";
import { cell, notes, row, type Row } from "../results.ts";
import { key, list, view, type Env, type Parents } from "../sides.ts";
import { samples, stats } from "../stats.ts";

export async function listBigRows(env: Env, p: Parents): Promise<void> {
  const made: Record<SideId, string[]> = { direct: [], ctrd: [], ref: [] };
  const refAll = process.env.BENCH_REF_LIST_ALL === "1";
  for (const [si, size] of N.listBig.sizes.entries()) {
    const cells: Row["cells"] = {};
    for (const side of env.sides) {
      if (side.id === "ref" && si > 0 && !refAll) continue;
      const have = made[side.id].length;
      log(`${side.label}: List over ${size} snapshots (making ${size - have - 1} views)`);
      // The parent counts as one.
      await forEachConcurrently(size - 1 - have, 8, async () => {
        const k = key(side, "lv");
        made[side.id].push(k);
        await view(side, k, p.parent[side.id]);
      });
      let got = 0;
      const xs = await samples(N.listBig.reps, async () => void (got = await list(side, [])));
      if (got < size) notes.push(`List over ${size} on ${side.label}: listed ${got}.`);
      cells[side.id] = cell(stats(xs));
    }
    row(`list-${size}`, `List, unfiltered, over ${size.toLocaleString("en")} snapshots`, "ms", cells);
  }
  for (const side of env.sides) {
    log(`${side.label}: removing ${made[side.id].length} views`);
    await forEachConcurrently(made[side.id].length, 8, async (i) => void (await side.client.remove({ snapshotter: side.snapshotter, key: made[side.id][i]! })));
    if (side.ctrd) await env.leases.gc();
  }
}
