/**
 * Out of space, through the real daemon (issue 7):
 *  - DATA: a 192 MiB pool under a 512 MiB base; a snapshot is written with
 *    dd until the pool runs out (mode out_of_data_space). New Prepare / View
 *    / Commit are refused with ResourceExhausted carrying used/total numbers,
 *    nothing half-created is left, existing snapshots stay readable, and once
 *    the filler is removed work resumes;
 *  - min_free_space refuses new devices while the pool still has room;
 *  - METADATA: a pool with a 1 MiB metadata device, filled by new snapshots
 *    that each get one 4 KiB write (which unshares their mapping tree) until
 *    the daemon refuses (before the kernel would turn the pool read-only),
 *    then the same checks.
 *
 * The daemon's log says so (issue 14): the pool watcher's warnings when free
 * data space crosses min_free_space and the pool's low-water mark (either
 * way), its error when the pool is out of data space, and one warning per
 * episode of refusals (further ones are summarized).
 *
 * The kernel queues writes to a full pool for no_space_timeout (60 s) before
 * failing them; the test lowers that module parameter to 2 s in the guest.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { checkConsistency } from "../kit/consistency.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { Code, errorOf, listAll, outcomeOf, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";
import { waitFor } from "../kit/process.ts";

const NO_SPACE_TIMEOUT = "/sys/module/dm_thin_pool/parameters/no_space_timeout";
const NUMBERS = /data \d+\/\d+ blocks of \d+ bytes used, metadata \d+\/\d+ blocks used/;

async function run(cmd: string[], allowFail = false): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  if (code !== 0 && !allowFail) throw new Error(`${cmd.join(" ")}: exit ${code}: ${err}${out}`);
  return { code, out: out + err };
}

interface M {
  type: string;
  source: string;
  options: string[];
}

async function mountAt(m: M, extra: string[] = []): Promise<string> {
  const dir = mkdtempSync("/tmp/tsspace-mnt-");
  const opts = [...m.options, ...extra];
  await run(["mount", "-t", m.type, ...(opts.length ? ["-o", opts.join(",")] : []), m.source, dir]);
  return dir;
}

async function umount(dir: string): Promise<void> {
  await run(["umount", dir], true);
  rmSync(dir, { recursive: true, force: true });
}

/** The first log line of `d` matching `re`, waiting for it (the pool watcher reads the pool every 2 s). */
async function logged(d: Daemon, re: RegExp): Promise<string> {
  let line: string | undefined;
  try {
    await waitFor(`log line ${re}`, () => (line = d.lines.find((l) => re.test(l))) !== undefined, { timeoutMs: 10_000, intervalMs: 100 });
  } catch (e) {
    throw new Error(`${(e as Error).message}; log:\n${d.logs()}`);
  }
  return line!;
}

const linesOf = (d: Daemon, re: RegExp): string[] => d.lines.filter((l) => re.test(l));

/** The pool watcher's and the space log's lines (src/metrics/pool-watch.ts, space-log.ts), in text format. */
const LOG = {
  belowReserve: /level=warn msg="thin-pool free data space fell below min_free_space: new snapshots are refused/,
  lowWater: /level=warn msg="thin-pool free data space fell to its low-water mark: extend the data device or free space soon"/,
  aboveLowWater: /level=warn msg="thin-pool free data space is back above its low-water mark"/,
  outOfData: /level=error msg="thin-pool is out of data space: [^"]*" [^\n]*status=out_of_data_space/,
  refusing: (resource: string): RegExp =>
    new RegExp(`level=warn msg="refusing new snapshots for lack of space \\(ResourceExhausted\\); further refusals are summarized" resource=${resource} `),
};

function problemsOf(tp: TestPool, root: string): string[] {
  return checkConsistency(tp.dm, tp.name, root).problems;
}

describe.skipIf(!env.available)("out of space (real daemon, real pool)", () => {
  let dir: string;
  let savedTimeout: string | null = null;
  const daemons: Daemon[] = [];
  const pools: TestPool[] = [];

  beforeAll(() => {
    dir = mkdtempSync("/tmp/tsspace-");
    if (existsSync(NO_SPACE_TIMEOUT)) {
      savedTimeout = readFileSync(NO_SPACE_TIMEOUT, "utf8").trim();
      writeFileSync(NO_SPACE_TIMEOUT, "2");
    }
  });

  afterAll(async () => {
    for (const d of daemons) await d.kill();
    for (const p of pools) p.destroy();
    if (savedTimeout !== null) writeFileSync(NO_SPACE_TIMEOUT, savedTimeout);
    rmSync(dir, { recursive: true, force: true });
  }, 300_000);

  async function start(cfg: DaemonConfig): Promise<{ d: Daemon; c: SnapshotsClient }> {
    const d = await Daemon.start({ config: cfg, readyTimeoutMs: 120_000 });
    daemons.push(d);
    expect(d.ready).toBe(true);
    return { d, c: snapshotsClient(cfg.address, { timeoutMs: 120_000 }) };
  }

  test(
    "data space: min_free_space first, then a full pool: ResourceExhausted, nothing half-made, reads work, recovery",
    async () => {
      const tp = createTestPool("tsspdata", { dataSize: 192 << 20 });
      pools.push(tp);
      mkdirSync(`${dir}/data-run`, { mode: 0o700 });
      const cfg: DaemonConfig = {
        poolName: tp.name,
        rootPath: `${dir}/data-root`,
        address: `${dir}/data-run/s.sock`,
        baseImageSize: "512MB",
        minFreeSpace: "50%",
      };
      let { d, c } = await start(cfg);

      // a committed snapshot with a file, and a view of it, before the pool fills
      const a = await c.prepare({ key: "keep-a" });
      let m = await mountAt(a.mounts[0]!);
      writeFileSync(`${m}/keep`, "still here");
      await umount(m);
      await c.commit({ key: "keep-a", name: "keep", labels: { l: "1" } });
      const kv = await c.view({ key: "keep-v", parent: "keep" });
      await c.prepare({ key: "other-a", parent: "keep" });

      // 1. min_free_space: fill past half, the pool still has room but new devices are refused
      const f = await c.prepare({ key: "filler" });
      const fm = await mountAt(f.mounts[0]!);
      await run(["dd", "if=/dev/zero", `of=${fm}/half`, "bs=1M", "count=110", "oflag=direct", "status=none"]);
      let st = tp.pool.status();
      expect(st.mode).toBe("rw");
      const reserveErr = await errorOf(c.prepare({ key: "refused-by-reserve" }));
      expect(reserveErr.code).toBe(Code.ResourceExhausted);
      expect(reserveErr.rawMessage).toContain("too little free data space");
      expect(reserveErr.rawMessage).toMatch(NUMBERS);
      expect((await errorOf(c.view({ key: "refused-view", parent: "keep" }))).code).toBe(Code.ResourceExhausted);
      expect(problemsOf(tp, cfg.rootPath)).toEqual([]);
      console.log(`min_free_space 50%: refused at ${st.usedDataBlocks}/${st.totalDataBlocks} data blocks: ${reserveErr.rawMessage}`);
      // the log: the watcher's crossing of min_free_space (with the reserve in bytes), one refusal warning for both refusals
      const reserveLine = await logged(d, LOG.belowReserve);
      expect(reserveLine).toContain(` min_free_space_bytes=${(st.totalDataBlocks * tp.pool.blockSize()) / 2n}`);
      expect(linesOf(d, LOG.refusing("min_free_space"))).toHaveLength(1);
      expect(linesOf(d, LOG.refusing("min_free_space"))[0]).toContain("too little free data space");
      expect(linesOf(d, LOG.lowWater)).toEqual([]); // 110 of 192 MiB used: well above the mark

      // 2. fill the pool completely (no reserve)
      await d.stop();
      ({ d, c } = await start({ ...cfg, minFreeSpace: 0 }));
      const dd = await run(["dd", "if=/dev/zero", `of=${fm}/rest`, "bs=1M", "count=400", "oflag=direct", "status=none"], true);
      expect(dd.code).not.toBe(0); // ENOSPC/EIO once the pool is out of space
      st = tp.pool.status();
      console.log(`data space: dd stopped with "${dd.out.trim()}"; pool ${st.mode} at ${st.usedDataBlocks}/${st.totalDataBlocks} blocks`);
      expect(st.mode).toBe("out_of_data_space");
      await umount(fm);

      const results: Record<string, string> = {};
      const prepErr = await errorOf(c.prepare({ key: "new-1" }));
      results.prepare = `${Code[prepErr.code]}: ${prepErr.rawMessage}`;
      expect(prepErr.code).toBe(Code.ResourceExhausted);
      expect(prepErr.rawMessage).toMatch(NUMBERS);
      const viewErr = await errorOf(c.view({ key: "new-v", parent: "keep" }));
      results.view = `${Code[viewErr.code]}: ${viewErr.rawMessage}`;
      expect(viewErr.code).toBe(Code.ResourceExhausted);
      // Commit of an active snapshot while the pool is out of data space
      const commitOutcome = await outcomeOf(c.commit({ key: "other-a", name: "other" }));
      results.commit = commitOutcome === "ok" ? "OK" : Code[commitOutcome];
      console.log("data space: answers on a full pool", results);
      // the log: the low-water mark crossed, the pool out of data space (an error saying what to do), the refusals
      const lowLine = await logged(d, LOG.lowWater);
      expect(lowLine).toMatch(/ low_water_mark_bytes=\d+/);
      expect(await logged(d, LOG.outOfData)).toContain("Extend the data device");
      expect(linesOf(d, LOG.refusing("data"))).toHaveLength(1);
      expect(linesOf(d, LOG.belowReserve)).toEqual([]); // min_free_space 0: no reserve to cross
      // reads, labels and the listing still work; nothing half-made
      expect((await c.stat({ key: "keep" })).info?.labels.l).toBe("1");
      await c.update({ info: { name: "keep", labels: { l: "2" } }, updateMask: { paths: ["labels.l"] } });
      const names = (await listAll(c)).map((i) => i.name).sort();
      expect(names).not.toContain("new-1");
      expect(names).not.toContain("new-v");
      expect(names).not.toContain("refused-by-reserve");
      expect(problemsOf(tp, cfg.rootPath)).toEqual([]);
      // an existing snapshot stays readable
      m = await mountAt(kv.mounts[0]!);
      expect(readFileSync(`${m}/keep`, "utf8")).toBe("still here");
      await umount(m);
      // a restart on a full pool works too
      await d.stop();
      ({ d, c } = await start({ ...cfg, minFreeSpace: 0 }));
      expect(problemsOf(tp, cfg.rootPath)).toEqual([]);

      // 3. remove the filler: the pool leaves out_of_data_space, work resumes
      await c.remove({ key: "filler" });
      await c.cleanup({});
      st = tp.pool.status();
      expect(st.mode).toBe("rw");
      // this daemon started on a full pool (low-water line at its first read) and sees it recover
      await logged(d, LOG.lowWater);
      await logged(d, LOG.aboveLowWater);
      await logged(d, /level=warn msg="thin-pool is writable again" [^\n]*was=out_of_data_space/);
      const again = await c.prepare({ key: "new-1", parent: "keep" });
      m = await mountAt(again.mounts[0]!);
      expect(readFileSync(`${m}/keep`, "utf8")).toBe("still here");
      writeFileSync(`${m}/after`, "after recovery");
      await umount(m);
      await c.commit({ key: "new-1", name: "new" });
      expect(problemsOf(tp, cfg.rootPath)).toEqual([]);
      await d.stop();
    },
    600_000,
  );

  test(
    "metadata space: a 1 MiB metadata device filled until refusal; pool stays writable, nothing half-made, recovery",
    async () => {
      const tp = createTestPool("tsspmeta", { dataSize: 1 << 30, metaSize: 1 << 20 });
      pools.push(tp);
      mkdirSync(`${dir}/meta-run`, { mode: 0o700 });
      const cfg: DaemonConfig = {
        poolName: tp.name,
        rootPath: `${dir}/meta-root`,
        address: `${dir}/meta-run/s.sock`,
        baseImageSize: "64MB",
      };
      const { d, c } = await start(cfg);
      const a = await c.prepare({ key: "m-a" });
      const m = await mountAt(a.mounts[0]!);
      writeFileSync(`${m}/f`, "meta");
      await umount(m);
      await c.commit({ key: "m-a", name: "m-base" });
      const view = await c.view({ key: "m-view", parent: "m-base" });
      const st0 = tp.pool.status();

      // A write to a new snapshot breaks its sharing of the origin's mapping
      // tree: each "Prepare + one 4 KiB write" costs a few metadata blocks
      // (a bare Prepare costs ~1/80 of one). Status already leaves out the
      // kernel's own metadata reserve.
      const block = Buffer.alloc(4096, 0x5a);
      const touch = (source: string): void => {
        const fd = openSync(source, "r+");
        try {
          writeSync(fd, block, 0, block.length, 0);
          fsyncSync(fd); // FLUSH: the pool commits its metadata
        } finally {
          closeSync(fd);
        }
      };
      let refusal: { code: Code; msg: string } | null = null;
      let made = 0;
      const t0 = performance.now();
      while (!refusal && made < 3000) {
        const batch = await Promise.all(
          [0, 1, 2, 3].map(async (i) => {
            const k = `m-x${made + i}`;
            try {
              const r = await c.prepare({ key: k, parent: "m-base", labels: { n: k } });
              touch(r.mounts[0]!.source);
              return null;
            } catch (e) {
              const err = e as { code: Code; rawMessage: string };
              return { code: err.code, msg: err.rawMessage, key: k };
            }
          }),
        );
        made += 4;
        refusal = batch.find((x) => x !== null) ?? null;
      }
      const st = tp.pool.status();
      console.log(
        `metadata space: ~${made} written snapshots in ${Math.round((performance.now() - t0) / 1000)} s; metadata ${st0.usedMetadataBlocks} -> ` +
          `${st.usedMetadataBlocks}/${st.totalMetadataBlocks} blocks; pool ${st.mode}; refusal: ${refusal?.msg}`,
      );
      expect(refusal?.code).toBe(Code.ResourceExhausted);
      expect(refusal?.msg).toContain("metadata is nearly full");
      expect(refusal?.msg).toMatch(NUMBERS);
      expect(st.mode).toBe("rw"); // refused before the kernel turns the pool read-only
      expect(st.needsCheck).toBe(false);
      expect((await errorOf(c.view({ key: "m-more-v", parent: "m-base" }))).code).toBe(Code.ResourceExhausted);
      expect(problemsOf(tp, cfg.rootPath)).toEqual([]);
      const names = (await listAll(c)).map((i) => i.name);
      const refusedKey = (refusal as { key?: string } | null)?.key ?? "";
      expect(names).not.toContain(refusedKey);
      expect(names).not.toContain("m-more-v");
      // existing snapshots stay readable
      const vm = await mountAt(view.mounts[0]!);
      expect(readFileSync(`${vm}/f`, "utf8")).toBe("meta");
      await umount(vm);
      // remove a quarter of them: work resumes
      const victims = names.filter((n) => n.startsWith("m-x")).slice(0, Math.ceil(made / 4));
      for (const v of victims) await c.remove({ key: v });
      await c.cleanup({});
      await c.prepare({ key: "m-more", parent: "m-base" });
      await c.view({ key: "m-more-v", parent: "m-base" });
      expect(tp.pool.status().mode).toBe("rw");
      expect(problemsOf(tp, cfg.rootPath)).toEqual([]);
      await d.stop();
    },
    600_000,
  );
});
