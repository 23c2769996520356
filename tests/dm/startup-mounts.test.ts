/**
 * Start-up and mounts (issue 12), through the real daemon:
 *  - serve leaves other people's mounts alone, even where it used to look
 *    ($TMPDIR/thinsnap-base-*), and a busy one there does not stop it;
 *  - the base's temporary mount is made in a 0700 directory under root_path;
 *  - a base mount a killed thinsnap left there is unmounted at the next
 *    start; if it is busy, the failure is logged, the half-made base is
 *    queued for the remover, and serve runs; once free, a later start
 *    finishes the job and store and pool agree.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { sh } from "../kit/process.ts";
import { checkConsistency } from "../kit/consistency.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { snapshotsClient } from "../kit/client.ts";
import { baseMountDir } from "../../src/snapshotter/mkfs.ts";

/** Mount points in this mount namespace (unescaped enough for our paths: no spaces). */
function mountPoints(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => l.split(" ")[4]!);
}

describe.skipIf(!env.available)("start-up and mounts (real daemon, real pool)", () => {
  let dir: string;
  const daemons: Daemon[] = [];
  const pools: TestPool[] = [];
  const sleepers: Bun.Subprocess[] = [];
  const mounts: string[] = [];

  beforeAll(() => {
    dir = mkdtempSync("/tmp/tsmounts-");
  });

  afterAll(async () => {
    for (const s of sleepers) s.kill("SIGKILL");
    for (const d of daemons) await d.kill();
    for (const m of mounts.reverse()) Bun.spawnSync(["umount", "-l", m]);
    for (const p of pools) p.destroy();
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  function config(name: string): { cfg: DaemonConfig; tp: TestPool } {
    const tp = createTestPool(name, { dataSize: 512 << 20 });
    pools.push(tp);
    mkdirSync(`${dir}/${name}-run`, { mode: 0o700 });
    return { cfg: { poolName: tp.name, rootPath: `${dir}/${name}-root`, address: `${dir}/${name}-run/s.sock` }, tp };
  }

  async function start(cfg: DaemonConfig, env: Record<string, string> = {}): Promise<Daemon> {
    const d = await Daemon.start({ config: cfg, env, readyTimeoutMs: 120_000 });
    daemons.push(d);
    return d;
  }

  /** A process whose working directory is `where`: the mount there cannot be unmounted (EBUSY). */
  function pin(where: string): Bun.Subprocess {
    const s = Bun.spawn(["sleep", "600"], { cwd: where, stdout: "ignore", stderr: "ignore" });
    sleepers.push(s);
    return s;
  }

  test(
    "foreign mounts under $TMPDIR/thinsnap-base-*, one of them busy, are left alone and serve runs; the base mount dir is 0700 under root_path",
    async () => {
      const src = mkdtempSync(join(dir, "src-"));
      writeFileSync(`${src}/mine`, "not thinsnap's");
      const idle = mkdtempSync(join(tmpdir(), "thinsnap-base-"));
      const busy = mkdtempSync(join(tmpdir(), "thinsnap-base-"));
      for (const m of [idle, busy]) {
        sh("mount", ["--bind", src, m]);
        mounts.push(m);
      }
      pin(busy);
      const { cfg, tp } = config("tsmntforeign");
      const d = await start(cfg);
      expect({ ready: d.ready, running: d.running, exit: d.exit }).toEqual({ ready: true, running: true, exit: null });
      expect(mountPoints()).toContain(idle);
      expect(mountPoints()).toContain(busy);
      expect(readFileSync(`${idle}/mine`, "utf8")).toBe("not thinsnap's");
      // it serves
      const c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      await c.prepare({ key: "a" });
      // the base was formatted and its lost+found removed through a mount in root_path
      const mdir = baseMountDir(cfg.rootPath);
      expect(statSync(mdir).mode & 0o777).toBe(0o700);
      expect(mountPoints()).not.toContain(mdir);
      expect(checkConsistency(tp.dm, cfg.poolName, cfg.rootPath).problems).toEqual([]);
      await d.stop();
    },
    300_000,
  );

  test(
    "a base mount left by a killed thinsnap: busy, it is logged and queued and serve runs; free, the next start unmounts it",
    async () => {
      const { cfg, tp } = config("tsmntstale");
      const mdir = baseMountDir(cfg.rootPath);
      const killed = await start(cfg, { THINSNAP_TEST_KILL_AT: "base.while-mounted" });
      expect(killed.ready).toBe(false);
      expect(killed.exit?.signal).toBe("SIGKILL");
      expect(mountPoints()).toContain(mdir);
      mounts.push(mdir);

      // busy: the unmount fails, start-up goes on
      const sleeper = pin(mdir);
      const d = await start(cfg);
      expect({ ready: d.ready, running: d.running }).toEqual({ ready: true, running: true });
      expect(d.linesAt("error").some((l) => l.includes("could not unmount a base mount"))).toBe(true);
      expect(d.reconcileReport()).toMatchObject({ busy: 1, queued: 1 });
      expect(mountPoints()).toContain(mdir);
      const c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      await c.prepare({ key: "a" });
      await c.commit({ key: "a", name: "c" });
      // only the half-made base is left, waiting for the remover
      const waiting = checkConsistency(tp.dm, cfg.poolName, cfg.rootPath, { allowDeleting: true });
      expect(waiting.problems).toEqual([]);
      expect(waiting.store.devices.filter((x) => x.state === "deleting").map((x) => x.role)).toEqual(["base"]);
      await d.stop();

      // free: the next start unmounts it, and the half-made base is deleted
      sleeper.kill("SIGKILL");
      await sleeper.exited;
      const again = await start(cfg);
      expect(again.ready).toBe(true);
      expect(again.linesAt("info").some((l) => l.includes("unmounted a base mount left by a killed thinsnap"))).toBe(true);
      expect(mountPoints()).not.toContain(mdir);
      expect(again.reconcileReport()).toMatchObject({ deleted: 1 });
      expect(checkConsistency(tp.dm, cfg.poolName, cfg.rootPath).problems).toEqual([]);
      await again.stop();
    },
    300_000,
  );
});
