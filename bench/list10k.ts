/**
 * List with a label filter over 10,000 snapshots: thinsnap's snapshotter,
 * SQLite store and gRPC server (bench/fake-server.ts, its own process) over
 * the in-memory fake pool -- List never touches the pool, so this serves it
 * exactly as `thinsnap serve` does, while 10,000 snapshots are made in
 * seconds. 1% of them match the filter.
 *
 * The target for this row is "on the host", so bench/run runs this
 * file on the host before it boots the guest:
 *
 *   bun bench/list10k.ts --out FILE.json [--snapshots 10000] [--reps 20]
 *
 * and bench/bench.ts (in the guest) measures the same again under emulation.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { countListed, snapshotsClient } from "../tests/kit/client.ts";
import { procStatusKiB, REPO, startBackground } from "../tests/kit/process.ts";
import { forEachConcurrently } from "./concurrency.ts";
import { now, samples, stats, type Stats } from "./stats.ts";

export const SEL_LABEL = "bench.sel";
export const LIST_FILTER = `labels."${SEL_LABEL}"==yes`;

export interface ListResult {
  snapshots: number;
  matched: number;
  filtered: Stats;
  unfiltered: Stats;
  rssKiB: number;
  populateMs: number;
}


/** Starts the server in `dir` (put it on tmpfs under emulation), fills it, measures List. */
export async function measureList(dir: string, total: number, reps: number, log: (m: string) => void): Promise<ListResult> {
  mkdirSync(dir, { recursive: true });
  const sock = `${dir}/list.sock`;
  const db = `${dir}/list10k.db`;
  rmSync(db, { force: true });
  const d = startBackground("list-server", [process.execPath, `${REPO}/bench/fake-server.ts`, "fake-pool", sock, db], `${dir}/list-server.log`);
  try {
    await d.waitForSocket(sock, 120_000);
    const client = snapshotsClient(sock);
    log(`List over ${total}: populating (fake pool, real store and gRPC)`);
    const t0 = now();
    // 64 concurrent streams of Prepares fill it fast.
    await forEachConcurrently(total, 64, async (i) => {
      await client.prepare({ key: `s${i}`, labels: i % 100 === 0 ? { [SEL_LABEL]: "yes", app: `a${i}` } : { app: `a${i}` } });
    });
    const populateMs = now() - t0;
    log(`populated ${total} in ${(populateMs / 1000).toFixed(1)} s; List ×${reps}`);
    let matched = 0;
    const filtered = await samples(reps, async () => (matched = await countListed(client, [LIST_FILTER])));
    const unfiltered = await samples(Math.max(3, Math.round(reps / 4)), () => countListed(client));
    return { snapshots: total, matched, filtered: stats(filtered), unfiltered: stats(unfiltered), rssKiB: procStatusKiB(d.pid), populateMs };
  } finally {
    await d.stop();
  }
}

if (import.meta.main) {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  const out = arg("out");
  const total = Number(arg("snapshots") ?? 10_000);
  const reps = Number(arg("reps") ?? 20);
  const dir = `${process.env.TMPDIR ?? "/tmp"}/thinsnap-bench-list-${process.pid}`;
  const r = await measureList(dir, total, reps, (m) => process.stderr.write(`[list on host] ${m}\n`));
  rmSync(dir, { recursive: true, force: true });
  const host = { cpu: cpus()[0]?.model ?? "?", cpus: cpus().length, bun: Bun.version };
  const json = JSON.stringify({ ...r, host }, null, 2);
  if (out) writeFileSync(out, `${json}\n`);
  else process.stdout.write(`${json}\n`);
}
