/**
 * A [pool] table in the config: `thinsnap serve` creates the file-backed
 * pool (src/pool/provision.ts), a restart over the same files reloads it with
 * its snapshots, `thinsnap check` agrees with it, and `thinsnap pool destroy`
 * removes it with its files.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { dm as env } from "./env.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { snapshotsClient } from "../kit/client.ts";
import { checkStore, destroyFilePool } from "../kit/cli.ts";

const POOL = "tscfgpool";

describe.skipIf(!env.available)("a [pool] table in the config", () => {
  const dir = env.available ? mkdtempSync("/tmp/tscfgpool-") : "";
  const daemons: Daemon[] = [];

  afterAll(async () => {
    for (const d of daemons) await d.kill();
    await destroyFilePool(POOL, { deleteFiles: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test(
    "serve creates the pool, a restart reloads it, check agrees, pool destroy removes it",
    async () => {
      const cfg: DaemonConfig = {
        poolName: POOL,
        rootPath: `${dir}/root`,
        address: `${dir}/ts.sock`,
        pool: { dataFile: `${dir}/pool.data`, metaFile: `${dir}/pool.meta`, dataSize: "512MB", metaSize: "64MB" },
      };
      const start = async (): Promise<Daemon> => {
        const d = await Daemon.start({ config: cfg, readyTimeoutMs: 120_000 });
        daemons.push(d);
        return d;
      };
      let d = await start();
      expect(d.lines.some((l) => l.includes("created file-backed thin-pool"))).toBe(true);
      await snapshotsClient(cfg.address).prepare({ key: "a", parent: "" });
      await d.kill("SIGTERM");

      // as after a reboot: no pool device, no loop devices, the files kept
      let r = await destroyFilePool(POOL, { deleteFiles: false });
      expect(r.stdout).toContain(`destroyed thin-pool "${POOL}" (files kept:`);
      d = await start();
      expect(d.lines.some((l) => l.includes("reloaded file-backed thin-pool"))).toBe(true);
      expect((await snapshotsClient(cfg.address).stat({ key: "a" })).info?.name).toBe("a");
      await d.kill("SIGTERM");

      const check = await checkStore(d.configPath);
      expect(check.stdout + check.stderr).toContain(`ok: store and pool "${POOL}" agree`);
      expect(check.code).toBe(0);

      r = await destroyFilePool(POOL, { deleteFiles: true });
      expect(r.stdout).toContain(`destroyed thin-pool "${POOL}" (files deleted:`);
      expect(existsSync(`${dir}/pool.data`) || existsSync(`${dir}/pool.meta`)).toBe(false);
    },
    600_000,
  );
});
