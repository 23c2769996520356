/**
 * Crash consistency of the real daemon on a real thin-pool (issue 7).
 *
 * `thinsnap serve` runs as a child process; a random mix of Prepare / View /
 * Commit / Remove / Update (chains and siblings, three workers at once) goes
 * over its socket, and the process is SIGKILLed:
 *  - at every named kill point (THINSNAP_TEST_KILL_AT=<point>[:n]), each with
 *    async_remove off and on (base.* points by changing base_image_size, so
 *    that start-up makes a new base);
 *  - from outside at random delays, also during start-up;
 *  - by THINSNAP_TEST_KILL_AT=random:P.
 * After every kill the daemon is restarted (reconciliation runs) and checked
 * against the pool itself (checkConsistency: thin_ls on a metadata snapshot,
 * the kernel's mappings, the transaction id) and against what the client was
 * told: every acknowledged snapshot exists with its kind, parent and labels;
 * an interrupted call either happened or not, cleanly. Files written before
 * Commit are read back through Views after restarts, and all of them at the
 * end; `thinsnap check` must exit 0.
 *
 * Default: every named point twice (async_remove off/on) plus random kills
 * while the time budget lasts. THINSNAP_SOAK=1: at least 200 kills (run it
 * with a longer guest timeout: tests/vm/vmrun --timeout 3600 -- ...).
 *
 * The pieces: tests/dm/crash/{run,verify,workload,cycle}.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dm as env } from "./env.ts";
import { runOk, withMount } from "../kit/process.ts";
import { createTestPool } from "./pool-fixture.ts";
import { KILL_POINTS } from "../../src/snapshotter/kill-points.ts";
import { checkStore } from "../kit/cli.ts";
import { checkConsistency } from "../kit/consistency.ts";
import { Daemon } from "../kit/daemon.ts";
import { codeName, Kind, listAll, snapshotsClient } from "../kit/client.ts";
import { CrashRun, filesIn, POOL, rnd, sameRecord, type Snap } from "./crash/run.ts";
import { verifyModel, verifyPool } from "./crash/verify.ts";
import { call, opVerify, type Ctx } from "./crash/workload.ts";
import { cycle } from "./crash/cycle.ts";

const SOAK = process.env.THINSNAP_SOAK === "1";
/** Time for the kill cycles after the named points are done (the named ones always run). */
const RANDOM_BUDGET_MS = SOAK ? 60 * 60_000 : 15_000;
const MIN_KILLS = SOAK ? 200 : 24;

describe.skipIf(!env.available)("crash consistency of thinsnap serve (SIGKILL anywhere)", () => {
  const st = new CrashRun();

  beforeAll(() => {
    st.tp = createTestPool(POOL, { dataSize: 2 * 2 ** 30, metaSize: 32 << 20 });
    st.dir = mkdtempSync("/tmp/tscrash-");
    mkdirSync(`${st.dir}/run`, { mode: 0o700 });
    st.cfg = { poolName: POOL, rootPath: `${st.dir}/root`, address: `${st.dir}/run/thinsnap.sock`, baseImageSize: "64MB" };
  });

  afterAll(async () => {
    await st.daemon?.kill();
    st.tp?.destroy();
    if (st.dir) rmSync(st.dir, { recursive: true, force: true });
  });

  // ------------------------------------------------------------------- tests

  test(
    "SIGKILL at every kill point and at random moments: store and pool stay consistent",
    async () => {
      const t0 = performance.now();
      // first start makes the base
      st.daemon = await Daemon.start({ config: st.cfg, readyTimeoutMs: 120_000 });
      expect(st.daemon.ready).toBe(true);
      await st.daemon.kill();

      // 1. every named point, async_remove off and on
      const targets: { point: string; asyncRemove: boolean; tries: number }[] = [];
      for (const asyncRemove of [false, true]) for (const point of KILL_POINTS) targets.push({ point, asyncRemove, tries: 0 });
      const firedNamed = new Map<string, number>();
      while (targets.length) {
        const t = targets.shift()!;
        t.tries++;
        const nth = t.point.startsWith("base.") || t.tries > 1 ? 1 : 1 + rnd(2);
        const how = await cycle(st, 
          {
            kind: "point",
            env: { THINSNAP_TEST_KILL_AT: `${t.point}:${nth}` },
            asyncRemove: t.asyncRemove,
            newBase: t.point.startsWith("base."),
            focus: t.point.startsWith("remove.") ? "remove" : t.point.startsWith("commit.") ? "commit" : "prepare",
          },
          20_000,
        );
        const id = `${t.point} async=${t.asyncRemove}`;
        if (how === `point ${t.point}`) firedNamed.set(id, (firedNamed.get(id) ?? 0) + 1);
        else if (t.tries < 3) targets.push(t);
        else st.problem(`kill point ${id} never reached in 3 tries (last: ${how})`);
      }
      const namedMs = performance.now() - t0;

      // 2. random moments: from outside (also during start-up) and random:P
      const t1 = performance.now();
      while (
        st.stats.totalKills() < MIN_KILLS ||
        (performance.now() - t1 < RANDOM_BUDGET_MS && (!SOAK || st.stats.totalKills() < 200 || performance.now() - t1 < 5 * 60_000))
      ) {
        if (SOAK && st.stats.totalKills() >= 200 && performance.now() - t1 > RANDOM_BUDGET_MS) break;
        const r = Math.random();
        const asyncRemove = Math.random() < 0.5;
        if (r < 0.15) {
          await cycle(st, { kind: "external-start", duringStart: true, killAfterMs: 200 + rnd(2500), asyncRemove }, 0);
        } else if (r < 0.6) {
          await cycle(st, { kind: "external", killAfterMs: 100 + rnd(3000), asyncRemove }, 8_000);
        } else {
          await cycle(st, { kind: "random", env: { THINSNAP_TEST_KILL_AT: `random:${(0.02 + Math.random() * 0.1).toFixed(3)}` }, asyncRemove }, 8_000);
        }
        if (!SOAK && performance.now() - t1 > RANDOM_BUDGET_MS && st.stats.totalKills() >= MIN_KILLS) break;
      }

      // 3. a last clean start: every file of every committed snapshot, every active usable
      st.epochNo++;
      st.daemon = await Daemon.start({ config: { ...st.cfg, asyncRemove: false, baseImageSize: st.baseSize() }, readyTimeoutMs: 120_000 });
      expect(st.daemon.ready).toBe(true);
      const rep = st.daemon.reconcileReport();
      for (const [k, v] of Object.entries(rep ?? {})) st.stats.repairs.set(k, (st.stats.repairs.get(k) ?? 0) + v);
      const c = snapshotsClient(st.cfg.address, { timeoutMs: 60_000 });
      await verifyPool(st);
      await verifyModel(st, c);
      const ctx: Ctx = { c, d: st.daemon, stop: false, failure: null, verifies: Infinity };
      const committed = [...st.model.values()].filter((s) => s.kind === "committed");
      const leaves = committed.filter((s) => !committed.some((x) => x.parent === s.name));
      for (const leaf of leaves) await opVerify(st, ctx, leaf);
      for (const a of [...st.model.values()].filter((s) => s.kind === "active")) {
        const r = await call(st, ctx, "mounts", null, () => c.mounts({ key: a.name }));
        if (r) {
          const seen = await withMount(r.mounts[0]!, filesIn);
          if (!sameRecord(seen, a.files)) st.problem(`active "${a.name}" shows ${JSON.stringify(seen)}, want ${JSON.stringify(a.files)}`);
        }
      }
      if (ctx.failure) st.problem(`final verification: ${ctx.failure.what}: [${codeName(ctx.failure.err.code)}] ${ctx.failure.err.rawMessage}`);
      const unverified = [...st.model.values()].filter((s) => s.kind === "committed" && !s.verified).map((s) => s.name);
      if (unverified.length) st.problem(`committed snapshots whose files were not read back: ${unverified.join(", ")}`);
      await verifyPool(st);
      const chk = await checkStore(st.daemon.configPath);
      if (chk.code !== 0) st.problem(`thinsnap check exited ${chk.code}: ${chk.stdout}${chk.stderr}`);

      // 4. remove everything: only the base is left in the pool
      const byDepth = [...st.model.values()];
      const depth = (s: Snap): number => (s.parent ? 1 + depth(st.model.get(s.parent)!) : 0);
      byDepth.sort((a, b) => depth(b) - depth(a));
      for (const s of byDepth) await c.remove({ key: s.name });
      st.model.clear();
      await c.cleanup({});
      await verifyPool(st);
      const left = checkConsistency(st.tp.dm, POOL, st.cfg.rootPath);
      if (left.poolIds.length !== 1) st.problem(`after removing everything the pool has thin ids ${left.poolIds.join(",")} (want only the base)`);
      await st.daemon.stop();

      const table: Record<string, number | string> = {};
      for (const [k, v] of [...st.stats.kills].sort()) table[`kill: ${k}`] = v;
      table["kills total"] = st.stats.totalKills();
      for (const [k, v] of [...st.stats.repairs].sort()) table[`repair: ${k}`] = v;
      table.cycles = st.stats.cycles;
      table["named points fired"] = `${firedNamed.size}/${KILL_POINTS.length * 2}`;
      table["named phase s"] = Math.round(namedMs / 1000);
      table["total s"] = Math.round((performance.now() - t0) / 1000);
      for (const [k, v] of st.stats.ms) table[`time in ${k} s`] = Math.round(v / 1000);
      console.log("crash consistency: kills and repairs");
      console.table(table);
      console.log("crash consistency: calls by outcome");
      console.table(Object.fromEntries([...st.stats.ops].sort()));

      expect(st.problems).toEqual([]);
      expect(firedNamed.size).toBe(KILL_POINTS.length * 2);
      expect(st.stats.totalKills()).toBeGreaterThanOrEqual(MIN_KILLS);
    },
    SOAK ? 4 * 3600_000 : 900_000,
  );

  test(
    "power-loss style: SIGKILL right after a burst of writes, page cache dropped, store opens and reconciles",
    async () => {
      st.daemon = await Daemon.start({ config: { ...st.cfg, baseImageSize: st.baseSize() }, readyTimeoutMs: 120_000 });
      expect(st.daemon.ready).toBe(true);
      const c = snapshotsClient(st.cfg.address, { timeoutMs: 60_000 });
      await c.prepare({ key: "pl-base-a" });
      await c.commit({ key: "pl-base-a", name: "pl-base" });
      const acked = new Set<string>();
      const committed = new Set<string>();
      // the burst: 24 prepares (half on a parent), 8 commits, label updates, all at once
      const burst: Promise<unknown>[] = [];
      for (let i = 0; i < 24; i++) {
        const key = `pl-${i}`;
        burst.push(
          c
            .prepare({ key, parent: i % 2 ? "pl-base" : "", labels: { n: String(i) } })
            .then(async () => {
              acked.add(key);
              if (i < 8) {
                await c.commit({ key, name: `pl-c${i}`, labels: { n: String(i) } });
                acked.delete(key);
                committed.add(`pl-c${i}`);
              } else {
                await c.update({ info: { name: key, labels: { u: "1" } }, updateMask: { paths: ["labels.u"] } });
              }
            })
            .catch(() => undefined),
        );
      }
      await Promise.all(burst);
      await st.daemon.kill();
      await runOk(["sync"]);
      writeFileSync("/proc/sys/vm/drop_caches", "3");
      st.daemon = await Daemon.start({ config: { ...st.cfg, baseImageSize: st.baseSize() }, readyTimeoutMs: 120_000 });
      expect(st.daemon.ready).toBe(true);
      const r = checkConsistency(st.tp.dm, POOL, st.cfg.rootPath);
      expect(r.problems).toEqual([]);
      const c2 = snapshotsClient(st.cfg.address, { timeoutMs: 60_000 });
      const listed = new Map((await listAll(c2)).map((i) => [i.name, i]));
      for (const k of acked) {
        expect(listed.get(k)?.kind).toBe(Kind.ACTIVE);
        expect(listed.get(k)?.labels.u).toBe("1");
      }
      for (const k of committed) expect(listed.get(k)?.kind).toBe(Kind.COMMITTED);
      expect(acked.size + committed.size).toBe(24);
      console.log(`power-loss case: ${acked.size} active + ${committed.size} committed acknowledged, all present; reconcile: ${JSON.stringify(st.daemon.reconcileReport())}`);
      await st.daemon.stop();
    },
    300_000,
  );
});

