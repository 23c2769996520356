/**
 * `thinsnap check [--repair]` on a real pool: it reports what inspect()
 * finds (an orphaned thin id only thin_ls can see, a stray mapping, devices
 * in the wrong activation state), --repair fixes all of it through
 * reconcile, and afterwards check and the tests' checkConsistency agree.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { checkConsistency, readStore } from "../kit/consistency.ts";
import { Daemon, daemonEntry, type DaemonConfig } from "../kit/daemon.ts";
import { snapshotsClient } from "../kit/client.ts";

async function check(configPath: string, repair: boolean): Promise<{ code: number; out: string }> {
  const entry = await daemonEntry();
  const r = Bun.spawnSync([...entry, "check", "--config", configPath, ...(repair ? ["--repair"] : [])], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, out: `${r.stdout.toString()}${r.stderr.toString()}` };
}

describe.skipIf(!env.available)("thinsnap check (real pool)", () => {
  let dir: string;
  let tp: TestPool;
  let d: Daemon | null = null;

  beforeAll(() => {
    dir = mkdtempSync("/tmp/tscheck-");
    tp = createTestPool("tscheck", { dataSize: 512 << 20 });
  });

  afterAll(async () => {
    await d?.kill();
    tp.destroy();
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test(
    "reports an orphan, a stray mapping and wrong activations; --repair fixes them",
    async () => {
      mkdirSync(`${dir}/run`, { mode: 0o700 });
      const cfg: DaemonConfig = { poolName: tp.name, rootPath: `${dir}/root`, address: `${dir}/run/s.sock` };
      d = await Daemon.start({ config: cfg, readyTimeoutMs: 120_000 });
      const c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      await c.prepare({ key: "a" });
      await c.commit({ key: "a", name: "base-layer" });
      await c.prepare({ key: "b", parent: "base-layer" });
      await d.stop();
      expect(await check(d.configPath, false)).toMatchObject({ code: 0, out: expect.stringContaining("ok: store and pool") });

      const rows = readStore(cfg.rootPath);
      const dmOf = (kind: string): string => {
        const s = rows.snapshots.find((x) => x.kind === kind)!;
        return rows.devices.find((x) => x.thinId === s.thinId)!.dmName;
      };
      const size = 64n << 20n;
      tp.pool.createThin(500); // outside every window: only thin_ls sees it
      tp.pool.activate(`${tp.name}-snap-500`, 500, size);
      tp.pool.activate(dmOf("committed"), rows.snapshots.find((x) => x.kind === "committed")!.thinId, size);
      tp.pool.deactivate(dmOf("active"));

      const found = await check(d.configPath, false);
      expect(found.code).toBe(1);
      expect(found.out).toContain("problem: orphaned thin id 500");
      expect(found.out).toContain(`problem: stray mapping ${tp.name}-snap-500`);
      expect(found.out).toContain(`problem: ${dmOf("committed")} is mapped but its committed snapshot "base-layer" wants it inactive`);
      expect(found.out).toContain(`problem: ${dmOf("active")} is not mapped but its active snapshot "b" wants it active`);
      expect(found.out).toContain("4 problem(s); run with --repair");

      const fixed = await check(d.configPath, true);
      expect(fixed.out).toContain("repaired:");
      expect(fixed.out).not.toContain("left:");
      expect(fixed.code).toBe(0);
      expect(checkConsistency(tp.dm, tp.name, cfg.rootPath).problems).toEqual([]);
      expect(await check(d.configPath, false)).toMatchObject({ code: 0 });
      expect(tp.pool.isActive(dmOf("active"))).toBe(true);
    },
    300_000,
  );
});
