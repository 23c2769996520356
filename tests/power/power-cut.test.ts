/**
 * Power cuts (issue 7): the guest itself loses power mid-workload, not just
 * the thinsnap process. Runs on the host: boots the qemu guest (tests/vm/vmrun)
 * several times on one disk file. Each boot but the last runs a workload and
 * cuts its own power at a random moment (sysrq b: reboot without sync, page
 * cache lost); the next boot restarts thinsnap on the same disk and checks
 * that the store opens, reconciles, agrees with the pool and with every call
 * that was acknowledged before the cut (tests/power/guest.ts).
 *
 * Default: 3 cuts. THINSNAP_SOAK=1: 12.
 */
import { afterAll, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { REPO, run } from "../kit/process.ts";
import type { BootReport } from "./report.ts";

const CUTS = process.env.THINSNAP_SOAK === "1" ? 12 : 3;
const state = mkdtempSync(path.join(process.env.THINSNAP_POWER_DIR ?? tmpdir(), "thinsnap-power-"));
const disk = path.join(state, "disk.img");

afterAll(() => {
  if (process.env.THINSNAP_KEEP_POWER !== "1") rmSync(state, { recursive: true, force: true });
});

async function boot(n: number, cutAfterMs: number): Promise<{ rc: number; out: string }> {
  const r = await run(
    [
      "bash",
      path.join(REPO, "tests/vm/vmrun"),
      "--timeout",
      "900",
      "--disk",
      disk,
      "--share",
      state,
      "--",
      path.join(REPO, "node_modules/.bin/bun"),
      "tests/power/guest.ts",
      state,
      String(n),
      String(cutAfterMs),
    ],
    { cwd: REPO },
  );
  return { rc: r.code, out: `${r.stdout}${r.stderr}` };
}

/** Calls the guest started so far (journal lines of phase "start"). */
function callsStarted(): number {
  const f = path.join(state, "journal.jsonl");
  return existsSync(f) ? readFileSync(f, "utf8").split("\n").filter((l) => l.includes('"phase":"start"')).length : 0;
}

test(
  `power cuts: ${CUTS} cuts of the guest mid-workload, then the store opens, reconciles and keeps every acknowledged call`,
  async () => {
    writeFileSync(disk, "");
    truncateSync(disk, 8 * 1024 ** 3);
    const rows: string[] = [];
    for (let b = 0; b <= CUTS; b++) {
      const last = b === CUTS;
      // Under emulation a layer (Prepare, mount, write, umount, Commit) takes
      // a few seconds: cut after 4-24 s, i.e. anywhere from the first calls on.
      const cut = last ? 0 : 4000 + Math.floor(Math.random() * 20_000);
      const before = callsStarted();
      const { rc, out } = await boot(b, cut);
      const reportFile = path.join(state, `boot-${b}.json`);
      const report = existsSync(reportFile) ? (JSON.parse(readFileSync(reportFile, "utf8")) as BootReport) : null;
      if (!report || report.problems.length || (last ? rc !== 0 : rc !== 125)) {
        throw new Error(
          `boot ${b} (cut after ${cut} ms): vmrun exit ${rc} (want ${last ? 0 : "125: power cut, no exit status"}); ` +
            `problems: ${JSON.stringify(report?.problems ?? "no report")}\n${out.split("\n").slice(-80).join("\n")}`,
        );
      }
      const calls = callsStarted() - before;
      rows.push(
        `boot ${b}: ${last ? "final check" : `cut after ${(cut / 1000).toFixed(1)} s, ${calls} calls`}; ` +
          `reconcile ${JSON.stringify(report.reconcile ?? {})}; snapshots ${JSON.stringify(report.snapshots)}; ` +
          `acked commits checked ${report.ackedCommitsChecked}, chains' files read ${report.filesChecked}, ` +
          `acked prepares kept/rolled back ${report.ackedPreparesKept}/${report.ackedPreparesRolledBack}, ` +
          `interrupted calls landed/not ${report.unackedLanded}/${report.unackedNotLanded}`,
      );
      console.log(rows.at(-1));
    }
    expect(rows.length).toBe(CUTS + 1);
  },
  (CUTS + 1) * 900_000,
);
