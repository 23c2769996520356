/**
 * `thinsnap check [--repair]`: compares the store with the pool's own view.
 * The pool's list of thin ids comes from thin_ls on a metadata snapshot
 * (thin-provisioning-tools), the only way to see ids that have no mapping.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import type { ThinPool } from "../dm/thin-pool.ts";
import { Errno, isErrno } from "../dm/errors.ts";
import { createLogger } from "../log.ts";
import { reconcile } from "../snapshotter/reconcile.ts";
import { Store } from "../store/store.ts";
import { flagHelp, type FlagSpec, type Parsed } from "./args.ts";
import { devPath } from "../pool/provision.ts";
import { thinDevicesOfPool } from "../pool/thin-devices.ts";
import { CliError, openDeviceMapper, openPool, refuseWhileServing, requireRoot } from "./runtime.ts";
import { configFromFlags, CONFIG_FLAGS } from "./config-flags.ts";

export const CHECK_FLAGS: Record<string, FlagSpec> = {
  ...CONFIG_FLAGS,
  repair: { type: "boolean", help: "fix what is found (refused while thinsnap serve runs)" },
  help: { type: "boolean", help: "show this help" },
};

export const CHECK_HELP = `Usage: thinsnap check [--repair] [flags]

Compares the metadata store with the thin-pool: thin ids the pool has and no
snapshot owns (orphans), snapshots whose thin id the pool lacks, devices in the
wrong activation state, and interrupted operations. Exit status 0 when store
and pool agree (after --repair: when everything found was fixed), 1 otherwise.

Flags:
${flagHelp(CHECK_FLAGS)}
`;

/** The pool's thin ids, read with thin_ls from a metadata snapshot; null if thin_ls is missing. */
export function poolThinIds(pool: ThinPool): number[] | null {
  const metaDev = devPath(pool.table().metadataDev);
  pool.reserveMetadataSnap();
  try {
    const r = spawnSync("thin_ls", ["--metadata-snap", "--no-headers", "-o", "DEV", metaDev], { encoding: "utf8" });
    if (r.error) return null;
    if (r.status !== 0) throw new CliError(`thin_ls failed: ${r.stderr.trim()}`);
    return r.stdout
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^\d+$/.test(l))
      .map(Number);
  } finally {
    pool.releaseMetadataSnap();
  }
}

export async function check(p: Parsed): Promise<number> {
  const cfg = await configFromFlags(p);
  requireRoot("thinsnap check");
  const repair = p.flags.repair === true;
  if (repair) await refuseWhileServing(cfg, "check --repair");
  const dm = openDeviceMapper();
  const pool = openPool(dm, cfg.poolName);
  const dbPath = `${cfg.rootPath}/metadata.db`;
  if (!existsSync(dbPath)) throw new CliError(`no store at ${dbPath} (wrong --root?)`);
  const store = Store.open(dbPath);
  const problems: string[] = [];
  const say = (s: string): void => void process.stdout.write(`${s}\n`);
  try {
    const devices = store.allDevices();
    const byId = new Map(devices.map((d) => [d.thinId, d]));
    for (const d of devices) {
      if (d.state !== "ready") problems.push(`interrupted ${d.state === "creating" ? "create" : "delete"}: thin id ${d.thinId} (${d.dmName})`);
    }
    const ids = poolThinIds(pool);
    const orphans: number[] = [];
    if (ids === null) {
      say("note: thin_ls not found (install thin-provisioning-tools): orphaned thin ids cannot be listed");
    } else {
      const inPool = new Set(ids);
      for (const id of ids) if (!byId.has(id)) orphans.push(id);
      for (const o of orphans) problems.push(`orphaned thin id ${o}: in the pool, owned by no snapshot`);
      for (const d of devices) {
        if (d.state === "ready" && !inPool.has(d.thinId)) {
          const s = store.snapshotByThinId(d.thinId);
          problems.push(`missing device: thin id ${d.thinId} of ${s ? `snapshot "${s.name}"` : d.role} is not in the pool (data lost; not repairable)`);
        }
      }
    }
    const known = new Set(devices.map((d) => d.dmName));
    for (const d of devices) {
      if (d.state !== "ready") continue;
      const s = d.role === "snapshot" ? store.snapshotByThinId(d.thinId) : null;
      const want = s !== null && s.kind !== "committed";
      const is = pool.isActive(d.dmName);
      if (want !== is) problems.push(`${d.dmName} is ${is ? "active" : "inactive"} but its ${s ? `${s.kind} snapshot "${s.name}"` : d.role} wants it ${want ? "active" : "inactive"}`);
    }
    for (const n of thinDevicesOfPool(dm, cfg.poolName)) {
      if (!known.has(n)) problems.push(`stray mapping ${n}: a thin device of the pool no snapshot owns`);
    }
    for (const x of problems) say(`problem: ${x}`);
    if (problems.length === 0) {
      say(`ok: store and pool "${cfg.poolName}" agree (${devices.length} devices, ${store.countSnapshots()} snapshots)`);
      return 0;
    }
    if (!repair) {
      say(`${problems.length} problem(s); run with --repair to fix them`);
      return 1;
    }
    const report = reconcile(store, pool, cfg.poolName, createLogger("warn"), () =>
      thinDevicesOfPool(dm, cfg.poolName).filter((n) => !known.has(n) || n.startsWith(`${cfg.poolName}-`)),
    );
    let fixedOrphans = 0;
    for (const id of orphans) {
      try {
        pool.deleteThin(id);
        fixedOrphans++;
      } catch (e) {
        if (!isErrno(e, Errno.ENODATA)) say(`could not delete orphaned thin id ${id}: ${(e as Error).message}`);
      }
    }
    say(`repaired: ${JSON.stringify({ ...report, orphansDeleted: fixedOrphans })}`);
    return fixedOrphans === orphans.length && problems.every((x) => !x.startsWith("missing device")) ? 0 : 1;
  } finally {
    store.close();
  }
}
