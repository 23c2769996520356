/**
 * `thinsnap check [--repair]`: compares the store with the pool's own view.
 * The pool's list of thin ids comes from thin_ls on a metadata snapshot
 * (thin-provisioning-tools), the only way to see ids that have no mapping.
 */
import { existsSync } from "node:fs";
import { describeProblem, inspect, type Problem } from "../consistency/inspect.ts";
import { readPoolView, readStoreView } from "../consistency/views.ts";
import { poolThinIds, thinDevicesOfPool } from "../dm/pool-contents.ts";
import { createLogger } from "../log.ts";
import { reconcile } from "../snapshotter/reconcile.ts";
import { Store } from "../store/store.ts";
import { flagHelp, type FlagSpec, type Parsed } from "./args.ts";
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
  const say = (s: string): void => void process.stdout.write(`${s}\n`);
  try {
    let thinLsMissing = false;
    const look = (): { problems: Problem[]; thinIds: number[] | null } => {
      const thinIds = poolThinIds(pool);
      thinLsMissing = thinIds === null;
      const sv = readStoreView(store);
      const pv = readPoolView(pool, sv.devices, {
        mapped: thinDevicesOfPool(dm, cfg.poolName),
        thinIds,
        nodeExists: (n) => existsSync(`/dev/mapper/${n}`),
      });
      // Without thin_ls the window's ids are only suspects: start-up probes them, check cannot.
      const problems = inspect(sv, pv).filter((x) => x.kind !== "orphan" || x.certain);
      return { problems, thinIds };
    };
    const found = look();
    if (thinLsMissing) say("note: thin_ls not found (install thin-provisioning-tools): orphaned thin ids cannot be listed");
    for (const x of found.problems) say(`problem: ${describeProblem(x)}`);
    if (found.problems.length === 0) {
      say(`ok: store and pool "${cfg.poolName}" agree (${store.allDevices().length} devices, ${store.countSnapshots()} snapshots)`);
      return 0;
    }
    if (!repair) {
      say(`${found.problems.length} problem(s); run with --repair to fix them`);
      return 1;
    }
    const report = reconcile(store, pool, cfg.poolName, createLogger("warn"), {
      listDmDevices: () => thinDevicesOfPool(dm, cfg.poolName),
      thinIds: found.thinIds,
    });
    say(`repaired: ${JSON.stringify(report)}`);
    const left = look().problems;
    for (const x of left) say(`left: ${describeProblem(x)}`);
    return left.length === 0 ? 0 : 1;
  } finally {
    store.close();
  }
}
