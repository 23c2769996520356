/**
 * One boot of the power-cut test (tests/power/power-cut.test.ts), run as
 * root in the qemu guest on a disk that outlives the guest (vmrun --disk):
 *
 *   bun tests/power/guest.ts STATE_DIR BOOT CUT_AFTER_MS
 *
 * 1. Mounts the disk (formats it on boot 0) and starts `thinsnap serve` with
 *    its store and a file-backed pool on that disk: after a cut, serve
 *    reloads the pool from its files and reconciles.
 * 2. From boot 1 on, checks what the previous boot's power cut left, against
 *    the pool itself and against the journal of acknowledged calls (see
 *    verify()). The result goes to STATE_DIR/boot-N.json; any problem exits 1.
 * 3. CUT_AFTER_MS > 0: runs a workload (two workers: Prepare, write files,
 *    Commit, Views, Removes), journalling each call before it is sent and
 *    when it returns, and a separate process cuts the power after
 *    CUT_AFTER_MS: `echo b > /proc/sysrq-trigger` reboots at once, without
 *    syncing or unmounting (the guest's page cache is lost; what its disk
 *    acknowledged is kept). qemu runs with -no-reboot, so the guest is gone.
 *    CUT_AFTER_MS = 0 (the last boot): stop serve gracefully and exit 0.
 *
 * STATE_DIR is a host directory shared into the guest (9p: each write is a
 * round trip to the host, so a journal line is on the host before the call
 * it describes is sent, and survives the cut).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { checkStore } from "../kit/cli.ts";
import { checkConsistency } from "../kit/consistency.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { Code, ConnectError, Kind, listAll, snapshotsClient, type ListedInfo, type SnapshotsClient } from "../kit/client.ts";
import { deviceMapper } from "../dm/pool-fixture.ts";
import { runOk, withMount } from "../kit/process.ts";
import type { BootReport } from "./report.ts";

const [stateDir, bootArg, cutArg] = process.argv.slice(2);
if (!stateDir || bootArg === undefined || cutArg === undefined) {
  process.stderr.write("usage: bun tests/power/guest.ts STATE_DIR BOOT CUT_AFTER_MS\n");
  process.exit(2);
}
const BOOT = Number(bootArg);
const CUT_AFTER_MS = Number(cutArg);
const DISK = process.env.THINSNAP_VM_DATA_DISK;
if (!DISK) throw new Error("no data disk (run under tests/vm/vmrun --disk FILE)");
const MNT = "/mnt/powercut";
const POOL = "tspower";
const LABEL = "containerd.io/snapshot/powercut";
const JOURNAL = `${stateDir}/journal.jsonl`;

const config: DaemonConfig = {
  poolName: POOL,
  rootPath: `${MNT}/root`,
  address: "/run/tspower/thinsnap.sock",
  baseImageSize: "64MB",
  logLevel: "info",
  pool: { dataFile: `${MNT}/pool.data`, metaFile: `${MNT}/pool.meta`, dataSize: "4GB", metaSize: "64MB" },
};

function log(msg: string): void {
  process.stderr.write(`[power boot ${BOOT}] ${msg}\n`);
}

// ---------------------------------------------------------------- journal

interface Entry {
  boot: number;
  op: "prepare" | "view" | "commit" | "remove";
  key: string;
  parent?: string;
  name?: string;
  phase: "start" | "ok" | "err";
  code?: string;
}

function journal(e: Omit<Entry, "boot">): void {
  // appendFileSync = one write(2) on the 9p share: on the host when it returns.
  appendFileSync(JOURNAL, `${JSON.stringify({ boot: BOOT, ...e })}\n`);
}

function readJournal(): Entry[] {
  if (!existsSync(JOURNAL)) return [];
  const out: Entry[] = [];
  for (const line of readFileSync(JOURNAL, "utf8").split("\n")) {
    if (line === "") continue;
    try {
      out.push(JSON.parse(line) as Entry);
    } catch {
      // the cut can only tear a line being written; it was never acknowledged
    }
  }
  return out;
}

/** Content of the file a layer writes: fixed by its key, so any boot can check it. */
function content(key: string): string {
  return `${key}\n`.repeat(512);
}

/** Committed name of an active key: a-B-N -> c-B-N. */
function committedName(key: string): string {
  return `c${key.slice(1)}`;
}

function keyOf(name: string): string {
  return `a${name.slice(1)}`;
}

// ---------------------------------------------------------------- mounts

function filesIn(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) if (f.startsWith("f-")) out[f] = readFileSync(`${dir}/${f}`, "utf8");
  return out;
}

// ---------------------------------------------------------------- verify

const KIND: Record<number, string> = { [Kind.ACTIVE]: "active", [Kind.VIEW]: "view", [Kind.COMMITTED]: "committed" };

/**
 * After a cut, with serve restarted (reconciled):
 *  - the pool and the store agree (checkConsistency: no orphan thin id, no
 *    half-made row, activation right, transaction id bound) and
 *    `thinsnap check` exits 0;
 *  - every acknowledged Commit whose snapshot was not being removed exists,
 *    committed, with its label, and shows exactly its chain's files;
 *  - every acknowledged Remove is gone;
 *  - every acknowledged Prepare/View (not later committed or removed) is
 *    there and mountable, or was cleanly rolled back (no trace in the store
 *    or pool: checked by the consistency check);
 *  - a call cut before it returned either landed or not, wholly.
 */
async function verify(c: SnapshotsClient, report: BootReport): Promise<void> {
  const problems = report.problems;
  const dm = deviceMapper();
  problems.push(...checkConsistency(dm, POOL, config.rootPath).problems);
  const chk = await checkStore(`${MNT}/thinsnap.toml`);
  if (chk.code !== 0) problems.push(`thinsnap check exited ${chk.code}: ${`${chk.stdout}${chk.stderr}`.trim()}`);

  const all = await listAll(c);
  const byName = new Map<string, ListedInfo>(all.map((i) => [i.name, i]));
  for (const i of all) {
    const k = KIND[i.kind] as "active" | "view" | "committed";
    report.snapshots[k]++;
  }

  const entries = readJournal();
  const acked = (op: Entry["op"]): Entry[] => entries.filter((e) => e.op === op && e.phase === "ok");
  const started = (op: Entry["op"], key: string): boolean => entries.some((e) => e.op === op && e.key === key && e.phase === "start");
  const ackedOf = (op: Entry["op"], key: string): boolean => entries.some((e) => e.op === op && e.key === key && e.phase === "ok");

  for (const e of acked("commit")) {
    const name = e.name!;
    if (started("remove", name)) continue;
    const i = byName.get(name);
    if (!i) problems.push(`acknowledged commit ${name} (boot ${e.boot}) is missing`);
    else if (i.kind !== Kind.COMMITTED) problems.push(`acknowledged commit ${name} is ${KIND[i.kind]}`);
    else if (i.labels[LABEL] !== name) problems.push(`acknowledged commit ${name}: label ${LABEL}=${i.labels[LABEL]}`);
    report.ackedCommitsChecked++;
  }
  for (const e of acked("remove")) {
    if (byName.has(e.key)) problems.push(`acknowledged remove of ${e.key} (boot ${e.boot}), but it exists`);
  }
  for (const e of [...acked("prepare"), ...acked("view")]) {
    if (started("commit", e.key) || started("remove", e.key)) continue;
    const i = byName.get(e.key);
    if (!i) {
      report.ackedPreparesRolledBack++;
      continue;
    }
    report.ackedPreparesKept++;
    const want = e.op === "view" ? Kind.VIEW : Kind.ACTIVE;
    if (i.kind !== want) problems.push(`acknowledged ${e.op} ${e.key} is ${KIND[i.kind]}`);
    if (i.parent !== (e.parent ?? "")) problems.push(`acknowledged ${e.op} ${e.key}: parent "${i.parent}", want "${e.parent ?? ""}"`);
  }
  // Calls the cut interrupted (started in the previous boot, never returned).
  for (const e of entries.filter((x) => x.phase === "start" && x.boot === BOOT - 1)) {
    if (ackedOf(e.op, e.key) || entries.some((x) => x.op === e.op && x.key === e.key && x.phase === "err")) continue;
    const landed =
      e.op === "remove" ? !byName.has(e.key) : e.op === "commit" ? byName.has(e.name!) : byName.has(e.key);
    if (landed) report.unackedLanded++;
    else report.unackedNotLanded++;
    if (e.op === "commit" && byName.has(e.name!) && byName.has(e.key)) {
      problems.push(`interrupted commit ${e.key} -> ${e.name}: both the key and the name exist`);
    }
  }

  // Files: every committed snapshot shows exactly the files of its chain,
  // read through a View (the committed ones of the last boot, the ones whose
  // Commit was interrupted, and a sample of older ones: a View and a mount
  // cost about a second each under emulation).
  const committed = all.filter((i) => i.kind === Kind.COMMITTED);
  const recent = committed.filter((i) => i.name.startsWith(`c-${BOOT - 1}-`));
  const older = committed.filter((i) => !i.name.startsWith(`c-${BOOT - 1}-`)).sort(() => Math.random() - 0.5).slice(0, 3);
  for (const s of [...recent, ...older]) {
    const expected: Record<string, string> = {};
    for (let n: string | undefined = s.name; n; n = byName.get(n)?.parent || undefined) {
      const k = keyOf(n);
      expected[`f-${k}`] = content(k);
    }
    const vkey = `check-${BOOT}-${s.name}`;
    const mounts = await c.view({ key: vkey, parent: s.name });
    const m = mounts.mounts[0]!;
    const got = await withMount({ type: m.type, source: m.source, options: m.options }, filesIn);
    await c.remove({ key: vkey });
    const want = Object.keys(expected).sort();
    const have = Object.keys(got).sort();
    if (want.join() !== have.join()) problems.push(`${s.name}: files [${have.join(", ")}], want [${want.join(", ")}]`);
    else for (const f of want) if (got[f] !== expected[f]) problems.push(`${s.name}: ${f} has wrong content`);
    report.filesChecked++;
  }
}

// ---------------------------------------------------------------- workload

interface Workload {
  calls: number;
  acked: number;
}

async function call<T>(e: Omit<Entry, "boot" | "phase">, p: () => Promise<T>, w: Workload): Promise<T | null> {
  journal({ ...e, phase: "start" });
  w.calls++;
  try {
    const r = await p();
    journal({ ...e, phase: "ok" });
    w.acked++;
    return r;
  } catch (err) {
    const code = err instanceof ConnectError ? Code[err.code] : String(err);
    journal({ ...e, phase: "err", code });
    throw err;
  }
}

async function workload(c: SnapshotsClient, w: Workload): Promise<void> {
  let n = 0;
  const next = (): string => `${BOOT}-${n++}`;
  const all = await listAll(c);
  const committed = new Set(all.filter((i) => i.kind === Kind.COMMITTED).map((i) => i.name));
  const parentOf = new Map(all.map((i) => [i.name, i.parent]));
  const hasChildren = (name: string): boolean => [...parentOf.values()].includes(name);
  const pick = <T>(xs: T[]): T | undefined => xs[Math.floor(Math.random() * xs.length)];

  const worker = async (): Promise<void> => {
    for (;;) {
      const r = Math.random();
      if (r < 0.65 || committed.size < 3) {
        // A layer, as image unpack makes it: Prepare, write, Commit.
        const key = `a-${next()}`;
        const parent = Math.random() < 0.3 ? "" : (pick([...committed]) ?? "");
        parentOf.set(key, parent); // before the await: the other worker must not remove the parent
        const res = await call({ op: "prepare", key, parent }, () => c.prepare({ key, parent }), w);
        const m = res!.mounts[0]!;
        await withMount({ type: m.type, source: m.source, options: m.options }, (dir) => {
          writeFileSync(`${dir}/f-${key}`, content(key));
        });
        if (Math.random() < 0.1) continue; // leave some active
        const name = committedName(key);
        await call({ op: "commit", key, name }, () => c.commit({ name, key, labels: { [LABEL]: name } }), w);
        parentOf.delete(key);
        parentOf.set(name, parent);
        committed.add(name);
      } else if (r < 0.85) {
        const leaf = pick([...committed].filter((x) => !hasChildren(x)));
        if (!leaf) continue;
        committed.delete(leaf);
        await call({ op: "remove", key: leaf }, () => c.remove({ key: leaf }), w);
        parentOf.delete(leaf);
      } else {
        const parent = pick([...committed]);
        if (!parent) continue;
        const key = `v-${next()}`;
        parentOf.set(key, parent);
        await call({ op: "view", key, parent }, () => c.view({ key, parent }), w);
        if (Math.random() < 0.5) {
          await call({ op: "remove", key }, () => c.remove({ key }), w);
          parentOf.delete(key);
        }
      }
    }
  };
  await Promise.all([worker(), worker()]);
}

// ---------------------------------------------------------------- main

mkdirSync(MNT, { recursive: true });
if (BOOT === 0) await runOk(["mkfs.ext4", "-q", "-F", DISK]);
await runOk(["mount", DISK, MNT]);
mkdirSync("/run/tspower", { recursive: true, mode: 0o700 });

const daemon = await Daemon.start({ config, configPath: `${MNT}/thinsnap.toml`, readyTimeoutMs: 180_000 });
if (!daemon.ready) throw new Error(`thinsnap serve exited during start-up:\n${daemon.lines.join("\n")}`);
const client = snapshotsClient(config.address, { timeoutMs: 120_000 });
const report: BootReport = {
  boot: BOOT,
  reconcile: daemon.reconcileReport(),
  problems: [],
  snapshots: { active: 0, view: 0, committed: 0 },
  ackedCommitsChecked: 0,
  filesChecked: 0,
  ackedPreparesKept: 0,
  ackedPreparesRolledBack: 0,
  unackedLanded: 0,
  unackedNotLanded: 0,
};
const save = (): void => writeFileSync(`${stateDir}/boot-${BOOT}.json`, `${JSON.stringify(report, null, 2)}\n`);

if (BOOT > 0) {
  await verify(client, report);
  log(`verified: ${JSON.stringify(report)}`);
  if (report.problems.length) {
    save();
    for (const p of report.problems) log(`PROBLEM: ${p}`);
    for (const l of daemon.lines) log(`serve: ${l}`);
    process.exit(1);
  }
}

if (CUT_AFTER_MS > 0) {
  const w: Workload = { calls: 0, acked: 0 };
  report.workload = { ...w, cutAfterMs: CUT_AFTER_MS };
  save();
  // A separate process pulls the plug, whatever this one is doing then.
  spawn("sh", ["-c", `sleep ${(CUT_AFTER_MS / 1000).toFixed(3)}; echo b > /proc/sysrq-trigger`], {
    stdio: "ignore",
    detached: true,
  }).unref();
  log(`workload; power cut in ${CUT_AFTER_MS} ms`);
  try {
    await workload(client, w);
  } catch (err) {
    // Any error before the cut is a failure: the workload only makes valid calls.
    log(`workload failed after ${w.calls} calls: ${err instanceof Error ? err.stack : String(err)}`);
    for (const l of daemon.lines.slice(-40)) log(`serve: ${l}`);
    report.problems.push(`workload failed: ${String(err)}`);
    save();
    process.exit(1);
  }
}

save();
await daemon.stop();
// The pool stays loaded (its loop devices hold files on the disk): the guest
// just powers off.
log("done");
