/** List rows: a label filter over a small set on every side, and over 10,000 snapshots (in the guest and on the host). */
import { existsSync, readFileSync } from "node:fs";
import { fmtMs } from "../format.ts";
import { LIST_FILTER, measureList, SEL_LABEL, type ListResult } from "../list10k.ts";
import { log, N } from "../plan.ts";
import { cell, notes, row, targetMax, type Cell, type Row } from "../results.ts";
import { key, list, removeAll, view, type Env, type Parents } from "../sides.ts";
import { samples, stats } from "../stats.ts";

/** List with a label filter through containerd (both) over the same small set, and direct over the same set. */
export async function listRows(env: Env, p: Parents): Promise<Cell | undefined> {
  const cells: Row["cells"] = {};
  const M = 20; // snapshots per side (plus the parent); every 5th one matches the filter
  for (const side of env.sides) {
    log(`${side.label}: List (filter) over ${M + 1} snapshots ×${N.list[side.id]}`);
    const made: string[] = [];
    for (let i = 0; i < M; i++) {
      const k = key(side, "list");
      made.push(k);
      await view(side, k, p.parent[side.id], i % 5 === 0 ? { [SEL_LABEL]: "yes" } : {});
    }
    let got = 0;
    const xs = await samples(N.list[side.id], async () => void (got = await list(side, [LIST_FILTER])));
    if (got !== M / 5) notes.push(`List on ${side.label}: expected ${M / 5} matches, got ${got}.`);
    cells[side.id] = cell(stats(xs), `over ${M + 1} snapshots`);
    await removeAll(env, side, made);
  }
  row("list-small", `List, label filter, over ${M + 1} snapshots`, "ms", cells);
  return cells.direct;
}

/**
 * List over 10,000 snapshots (bench/list10k.ts): measured here under
 * emulation, and on the host by bench/run before the guest booted (the
 * issue's target is for the host).
 */
export async function list10k(): Promise<void> {
  // On tmpfs: filling 10,000 rows with a durable commit each on the emulated disk takes minutes; List reads the page cache either way.
  const g = await measureList("/run/bench-list", N.list10k.snapshots, N.list10k.reps, log);
  const note =
    `thinsnap's snapshotter, SQLite store and gRPC server in their own process over the in-memory fake pool (List never touches the pool; ` +
    `bench/list10k.ts), a Connect client; filling it is not measured; ` +
    `the reference is not run at this size (containerd's List calls the snapshotter's Stat once per snapshot).`;
  const r = row("list-10k", `List, label filter, over ${g.snapshots.toLocaleString("en")} snapshots (${g.matched} match), in the guest`, "ms", {
    direct: cell(g.filtered, "fake pool"),
  });
  r.notes.push(
    `${note} Database on the guest's tmpfs. Unfiltered List of all ${g.snapshots}: median ${fmtMs(g.unfiltered.median)}. ` +
      `That server's VmRSS with ${g.snapshots} snapshots: ${(g.rssKiB / 1024).toFixed(0)} MiB.`,
  );
  const hostFile = process.env.BENCH_LIST_HOST;
  if (!hostFile || !existsSync(hostFile)) {
    notes.push("List over 10,000 on the host: not measured (bench/run measures it before booting the guest).");
    return;
  }
  const h = JSON.parse(readFileSync(hostFile, "utf8")) as ListResult & { host: { cpu: string; cpus: number } };
  const hr = row("list-10k-host", `List, label filter, over ${h.snapshots.toLocaleString("en")} snapshots (${h.matched} match), on the host`, "ms", {
    direct: cell(h.filtered, "host"),
  });
  hr.notes.push(
    `The same on the host itself (no emulation: ${h.host.cpu}, ${h.host.cpus} CPUs), run by bench/run before the guest. ` +
      `Unfiltered List of all ${h.snapshots}: median ${fmtMs(h.unfiltered.median)}; VmRSS ${(h.rssKiB / 1024).toFixed(0)} MiB.`,
  );
  targetMax(hr, "direct", 100, "ms");
}
