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
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dm as env } from "./env.ts";
import { run, withMountAsync, type MountSpec } from "../lib/proc.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { KILL_POINTS } from "../../src/testing/kill-point.ts";
import { FSTYPE_LABEL } from "../../src/snapshotter/labels.ts";
import {
  checkConsistency,
  Daemon,
  runCheck,
  waitNoDeleting,
  type DaemonConfig,
} from "../lib/daemon-for-reliability.ts";
import { codeName, ConnectError, Kind, listAll, snapshotsClient, type ListedInfo, type SnapshotsClient } from "../lib/client.ts";

const SOAK = process.env.THINSNAP_SOAK === "1";
/** Time for the kill cycles after the named points are done (the named ones always run). */
const RANDOM_BUDGET_MS = SOAK ? 60 * 60_000 : 15_000;
const MIN_KILLS = SOAK ? 200 : 24;
const POOL = "tscrash";

type SKind = "active" | "view" | "committed";
interface Snap {
  name: string;
  kind: SKind;
  parent: string;
  labels: Record<string, string>;
  /** Files the snapshot must show (its ancestors' and, once written, its own). */
  files: Record<string, string>;
  /** active: its own file was written. */
  written: boolean;
  /** committed: its files were read back through a View after a restart. */
  verified: boolean;
  epoch: number;
}

type Pending =
  | { op: "prepare" | "view"; key: string; parent: string; labels: Record<string, string> }
  | { op: "commit"; key: string; name: string; labels: Record<string, string> }
  | { op: "remove"; key: string }
  | { op: "update"; key: string; value: string };

const KIND_OF: Record<number, SKind> = { [Kind.ACTIVE]: "active", [Kind.VIEW]: "view", [Kind.COMMITTED]: "committed" };

function filesIn(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = readFileSync(`${dir}/${f}`, "utf8");
  return out;
}

function sameRecord(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

function rnd(n: number): number {
  return Math.floor(Math.random() * n);
}

function pick<T>(xs: T[]): T | undefined {
  return xs.length ? xs[rnd(xs.length)] : undefined;
}

class Stats {
  kills = new Map<string, number>();
  repairs = new Map<string, number>();
  ops = new Map<string, number>();
  cycles = 0;
  startFailures = 0;
  /** Milliseconds spent per phase of the cycles. */
  ms = new Map<string, number>();
  time(phase: string, t0: number): void {
    this.ms.set(phase, (this.ms.get(phase) ?? 0) + (performance.now() - t0));
  }
  kill(kind: string): void {
    this.kills.set(kind, (this.kills.get(kind) ?? 0) + 1);
  }
  op(what: string): void {
    this.ops.set(what, (this.ops.get(what) ?? 0) + 1);
  }
  totalKills(): number {
    let n = 0;
    for (const v of this.kills.values()) n += v;
    return n;
  }
}

describe.skipIf(!env.available)("crash consistency of thinsnap serve (SIGKILL anywhere)", () => {
  let tp: TestPool;
  let dir: string;
  let cfg: DaemonConfig;
  let daemon: Daemon | null = null;
  const problems: string[] = [];
  const stats = new Stats();

  const model = new Map<string, Snap>();
  let pending: Pending[] = [];
  const busy = new Map<string, number>();
  /** Snapshots with a Remove in flight: not to be used as a parent or read. */
  const removing = new Set<string>();
  let seq = 0;
  let epochNo = 0;

  const hold = (k: string): void => void busy.set(k, (busy.get(k) ?? 0) + 1);
  const release = (k: string): void => {
    const n = (busy.get(k) ?? 0) - 1;
    if (n <= 0) busy.delete(k);
    else busy.set(k, n);
  };
  const isBusy = (k: string): boolean => (busy.get(k) ?? 0) > 0;
  const hasChildren = (k: string): boolean => [...model.values()].some((s) => s.parent === k);
  const problem = (s: string): void => {
    problems.push(`[cycle ${stats.cycles}] ${s}`);
    console.error(`PROBLEM: [cycle ${stats.cycles}] ${s}`);
  };

  beforeAll(() => {
    tp = createTestPool(POOL, { dataSize: 2 * 2 ** 30, metaSize: 32 << 20 });
    dir = mkdtempSync("/tmp/tscrash-");
    mkdirSync(`${dir}/run`, { mode: 0o700 });
    cfg = { poolName: POOL, rootPath: `${dir}/root`, address: `${dir}/run/thinsnap.sock`, baseImageSize: "64MB" };
  });

  afterAll(async () => {
    await daemon?.kill();
    tp?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // ------------------------------------------------------------ verification

  /** Resolves interrupted calls against what the daemon lists, then compares everything. */
  async function verifyModel(c: SnapshotsClient): Promise<void> {
    const listed = new Map<string, ListedInfo>((await listAll(c)).map((i) => [i.name, i]));
    for (const p of pending) {
      switch (p.op) {
        case "prepare":
        case "view": {
          const l = listed.get(p.key);
          if (!l) break; // rolled back (checkConsistency proves it was clean)
          const parent = model.get(p.parent);
          model.set(p.key, {
            name: p.key,
            kind: p.op === "prepare" ? "active" : "view",
            parent: p.parent,
            labels: { ...p.labels, [FSTYPE_LABEL]: "ext4" },
            files: { ...(parent?.files ?? {}) },
            written: false,
            verified: false,
            epoch: epochNo,
          });
          stats.op(`resolved ${p.op}: happened`);
          break;
        }
        case "commit": {
          const a = listed.get(p.key);
          const b = listed.get(p.name);
          const s = model.get(p.key);
          if (a && b) problem(`interrupted commit ${p.key} -> ${p.name}: both exist`);
          else if (!a && !b) problem(`interrupted commit ${p.key} -> ${p.name}: neither exists (snapshot lost)`);
          else if (b && s) {
            model.delete(p.key);
            model.set(p.name, { ...s, name: p.name, kind: "committed", labels: { ...p.labels, [FSTYPE_LABEL]: "ext4" }, verified: false, epoch: epochNo });
            stats.op("resolved commit: happened");
          } else stats.op("resolved commit: not happened");
          break;
        }
        case "remove":
          if (!listed.has(p.key)) {
            model.delete(p.key);
            stats.op("resolved remove: happened");
          } else stats.op("resolved remove: not happened");
          break;
        case "update": {
          const s = model.get(p.key);
          const l = listed.get(p.key);
          if (s && l && l.labels["t.upd"] === p.value) s.labels["t.upd"] = p.value;
          break;
        }
      }
    }
    pending = [];
    for (const s of model.values()) {
      const l = listed.get(s.name);
      if (!l) {
        problem(`acknowledged ${s.kind} snapshot "${s.name}" is gone`);
        model.delete(s.name);
        continue;
      }
      const kind = KIND_OF[l.kind];
      if (kind !== s.kind || l.parent !== s.parent || !sameRecord(l.labels, s.labels)) {
        problem(
          `snapshot "${s.name}" differs: have ${JSON.stringify({ kind, parent: l.parent, labels: l.labels })}, ` +
            `want ${JSON.stringify({ kind: s.kind, parent: s.parent, labels: s.labels })}`,
        );
        s.labels = l.labels;
      }
    }
    for (const name of listed.keys()) if (!model.has(name)) problem(`unexpected snapshot "${name}" (never acknowledged)`);
  }

  /** The pool and store agree (after the async remover caught up). */
  async function verifyPool(allowDeleting = false): Promise<void> {
    if (!allowDeleting && !(await waitNoDeleting(cfg.rootPath))) problem("devices still 'deleting' after 20 s");
    const r = checkConsistency(tp.dm, POOL, cfg.rootPath, { allowDeleting });
    for (const p of r.problems) problem(p);
    // every thin id is the base's or a snapshot's
    const snapIds = new Set(r.store.snapshots.map((s) => s.thinId));
    const baseIds = new Set(r.store.devices.filter((d) => d.role === "base").map((d) => d.thinId));
    const deleting = new Set(r.store.devices.filter((d) => d.state === "deleting").map((d) => d.thinId));
    for (const id of r.poolIds) {
      if (!snapIds.has(id) && !baseIds.has(id) && !deleting.has(id)) problem(`thin id ${id} belongs to no snapshot and is not the base`);
    }
  }

  // --------------------------------------------------------------- workload

  interface Ctx {
    c: SnapshotsClient;
    d: Daemon;
    stop: boolean;
    /** First failure that may be the daemon dying. */
    failure: { what: string; err: ConnectError } | null;
    /** Views still allowed for reading back files this cycle (they cost mounts). */
    verifies: number;
    /** Which operation to favour (to reach a kill point sooner). */
    focus?: "prepare" | "commit" | "remove";
  }

  /** Runs one call; on failure records the interrupted op and stops the epoch. */
  async function call<T>(ctx: Ctx, what: string, p: Pending | null, fn: () => Promise<T>): Promise<T | null> {
    try {
      const r = await fn();
      stats.op(`${what} OK`);
      return r;
    } catch (e) {
      const err = ConnectError.from(e);
      stats.op(`${what} ${codeName(err.code)}`);
      if (p) pending.push(p);
      ctx.failure ??= { what: `${what} ${p ? JSON.stringify(p) : ""}`, err };
      ctx.stop = true;
      return null;
    }
  }

  function newKey(prefix: string): string {
    return `${prefix}${++seq}`;
  }

  /** Prepare on a committed parent (or none). */
  async function opPrepare(ctx: Ctx, thenCommit: boolean): Promise<void> {
    const parents = [...model.values()].filter((s) => s.kind === "committed" && !removing.has(s.name));
    const parent = Math.random() < 0.25 || parents.length === 0 ? "" : pick(parents)!.name;
    const key = newKey("a");
    const labels = { "t.op": key, "t.epoch": String(epochNo) };
    if (parent) hold(parent);
    hold(key);
    try {
      const r = await call(ctx, "prepare", { op: "prepare", key, parent, labels }, () => ctx.c.prepare({ key, parent, labels }));
      if (!r) return;
      const pf = parent ? model.get(parent)!.files : {};
      model.set(key, {
        name: key,
        kind: "active",
        parent,
        labels: { ...labels, [FSTYPE_LABEL]: "ext4" },
        files: { ...pf },
        written: false,
        verified: false,
        epoch: epochNo,
      });
      if (thenCommit && !ctx.stop) await finishActive(ctx, key, r.mounts[0]!);
    } finally {
      release(key);
      if (parent) release(parent);
    }
  }

  /** Mounts an active snapshot, checks its files, writes its own, unmounts, commits. */
  async function finishActive(ctx: Ctx, key: string, mount?: MountSpec): Promise<void> {
    const s = model.get(key)!;
    let m = mount;
    if (!m) {
      const r = await call(ctx, "mounts", null, () => ctx.c.mounts({ key }));
      if (!r) return;
      m = r.mounts[0]!;
    }
    const content = `${key} written in epoch ${epochNo} ${Math.random()}`;
    const seen = await withMountAsync(m, (d) => {
      const before = filesIn(d);
      if (!s.written) writeFileSync(`${d}/f-${key}`, content);
      return before;
    });
    if (!sameRecord(seen, s.files)) {
      problem(`active "${key}" shows ${JSON.stringify(Object.keys(seen))}, want ${JSON.stringify(Object.keys(s.files))}`);
    }
    if (!s.written) {
      s.files[`f-${key}`] = content;
      s.written = true;
    }
    if (ctx.stop) return;
    const name = newKey("c");
    const labels = { "t.committed": name };
    const ok = await call(ctx, "commit", { op: "commit", key, name, labels }, () => ctx.c.commit({ key, name, labels }));
    if (ok === null) return;
    model.delete(key);
    model.set(name, { ...s, name, kind: "committed", labels: { ...labels, [FSTYPE_LABEL]: "ext4" }, verified: false, epoch: epochNo });
  }

  /** Reads a committed snapshot's files back through a View. */
  async function opVerify(ctx: Ctx, target: Snap): Promise<void> {
    const key = newKey("v");
    const labels = { "t.verify": target.name };
    hold(target.name);
    hold(key);
    try {
      const r = await call(ctx, "view", { op: "view", key, parent: target.name, labels }, () =>
        ctx.c.view({ key, parent: target.name, labels }),
      );
      if (!r) return;
      model.set(key, { name: key, kind: "view", parent: target.name, labels: { ...labels, [FSTYPE_LABEL]: "ext4" }, files: { ...target.files }, written: false, verified: false, epoch: epochNo });
      const seen = await withMountAsync(r.mounts[0]!, filesIn);
      if (!sameRecord(seen, target.files)) {
        problem(`view of "${target.name}" shows ${JSON.stringify(seen)}, want ${JSON.stringify(target.files)}`);
      } else {
        // its ancestors' files were there too
        for (let a: Snap | undefined = target; a; a = a.parent ? model.get(a.parent) : undefined) a.verified = true;
        stats.op("files verified");
      }
      if (ctx.stop) return;
      removing.add(key);
      const ok = await call(ctx, "remove", { op: "remove", key }, () => ctx.c.remove({ key }));
      if (ok !== null) model.delete(key);
    } finally {
      removing.delete(key);
      release(key);
      release(target.name);
    }
  }

  async function opView(ctx: Ctx): Promise<void> {
    const parent = pick([...model.values()].filter((s) => s.kind === "committed" && !removing.has(s.name)));
    if (!parent) return;
    const key = newKey("v");
    const labels = { "t.op": key };
    hold(parent.name);
    hold(key);
    try {
      const r = await call(ctx, "view", { op: "view", key, parent: parent.name, labels }, () =>
        ctx.c.view({ key, parent: parent.name, labels }),
      );
      if (r) {
        model.set(key, { name: key, kind: "view", parent: parent.name, labels: { ...labels, [FSTYPE_LABEL]: "ext4" }, files: { ...parent.files }, written: false, verified: false, epoch: epochNo });
      }
    } finally {
      release(key);
      release(parent.name);
    }
  }

  async function opRemove(ctx: Ctx): Promise<void> {
    const cands = [...model.values()].filter((s) => !isBusy(s.name) && !hasChildren(s.name));
    // prefer views and actives; committed leaves too, less often
    const t = pick(cands.filter((s) => s.kind !== "committed" || Math.random() < 0.4));
    if (!t) return;
    hold(t.name);
    removing.add(t.name);
    try {
      const ok = await call(ctx, "remove", { op: "remove", key: t.name }, () => ctx.c.remove({ key: t.name }));
      if (ok !== null) model.delete(t.name);
    } finally {
      removing.delete(t.name);
      release(t.name);
    }
  }

  async function opUpdate(ctx: Ctx): Promise<void> {
    const t = pick([...model.values()].filter((s) => !isBusy(s.name)));
    if (!t) return;
    const value = `u${++seq}`;
    hold(t.name);
    try {
      const r = await call(ctx, "update", { op: "update", key: t.name, value }, () =>
        ctx.c.update({ info: { name: t.name, labels: { "t.upd": value } }, updateMask: { paths: ["labels.t.upd"] } }),
      );
      if (r) {
        t.labels["t.upd"] = value;
        if (r.info?.labels["t.upd"] !== value) problem(`update of "${t.name}" answered labels ${JSON.stringify(r.info?.labels)}`);
      }
    } finally {
      release(t.name);
    }
  }

  async function opRead(ctx: Ctx): Promise<void> {
    const t = pick([...model.values()].filter((x) => !isBusy(x.name)));
    if (Math.random() < 0.5 || !t) {
      await call(ctx, "list", null, () => listAll(ctx.c));
    } else {
      await call(ctx, "stat", null, () => ctx.c.stat({ key: t.name }));
      if (!ctx.stop && !isBusy(t.name)) await call(ctx, "usage", null, () => ctx.c.usage({ key: t.name }));
    }
  }

  async function worker(ctx: Ctx, deadline: number): Promise<void> {
    while (!ctx.stop && ctx.d.running && performance.now() < deadline) {
      const unverified = [...model.values()].filter((s) => s.kind === "committed" && !s.verified && s.epoch < epochNo && !isBusy(s.name));
      const idleActive = [...model.values()].filter((s) => s.kind === "active" && !isBusy(s.name));
      let r = Math.random();
      const crowded = model.size > 50;
      if (ctx.focus === "remove" && Math.random() < 0.5) r = 0.75;
      if (ctx.focus === "commit" && Math.random() < 0.5) r = idleActive.length ? 0.4 : 0.6;
      if (ctx.focus === "prepare" && Math.random() < 0.5) r = 0.6;
      if (unverified.length && r < 0.3 && ctx.verifies > 0) {
        ctx.verifies--;
        await opVerify(ctx, pick(unverified)!);
      }
      else if (idleActive.length && r < 0.45) {
        const a = pick(idleActive)!;
        hold(a.name);
        try {
          await finishActive(ctx, a.name);
        } finally {
          release(a.name);
        }
      } else if (r < (crowded ? 0.5 : 0.7)) await opPrepare(ctx, Math.random() < 0.7);
      else if (r < (crowded ? 0.85 : 0.8)) await opRemove(ctx);
      else if (r < 0.88) await opView(ctx);
      else if (r < 0.94) await opUpdate(ctx);
      else await opRead(ctx);
    }
  }

  interface Plan {
    kind: string;
    env?: Record<string, string>;
    /** External SIGKILL this long after the daemon is ready (or after spawn if duringStart). */
    killAfterMs?: number;
    duringStart?: boolean;
    asyncRemove: boolean;
    /** Bump base_image_size so that this start makes a new base. */
    newBase?: boolean;
    focus?: Ctx["focus"];
  }

  /**
   * base_image_size of the current config: a new size per new-base cycle. (Two
   * sizes toggled would fall back to the old base whenever the previous cycle
   * killed the making of the new one, and the base.* point would not be reached.)
   */
  let baseGen = 0;
  const baseSize = (): string => `${64 + (baseGen % 64)}MB`;

  /**
   * One cycle: start (with the plan's kill arming), verify the state the last
   * kill left, run the workload until the daemon dies. Returns what killed it.
   */
  async function cycle(plan: Plan, workMs: number): Promise<string> {
    stats.cycles++;
    epochNo++;
    if (plan.newBase) baseGen++;
    // Every other cycle with the kernel calls on worker threads (kernel_threads).
    const config = { ...cfg, asyncRemove: plan.asyncRemove, baseImageSize: baseSize(), kernelThreads: epochNo % 2 === 0 ? 4 : 0 };
    let externalTimer: ReturnType<typeof setTimeout> | null = null;
    let killedExternally = false;
    let d: Daemon;
    if (plan.duringStart) {
      // start without waiting: kill at a random moment of start-up
      const starting = Daemon.start({ config, env: plan.env ?? {}, readyTimeoutMs: 120_000 });
      const t0 = performance.now();
      d = await startAndKillAt(starting, plan.killAfterMs ?? 0);
      killedExternally = d.exit?.signal === "SIGKILL" && !d.lines.some((l) => l.startsWith("kill-point:"));
      stats.op(`start killed after ${Math.round((performance.now() - t0) / 1000)} s`);
    } else {
      const ts = performance.now();
      d = await Daemon.start({ config, env: plan.env ?? {}, readyTimeoutMs: 120_000 });
      stats.time("start", ts);
    }
    daemon = d;
    if (d.ready) {
      const rep = d.reconcileReport();
      for (const [k, v] of Object.entries(rep ?? {})) stats.repairs.set(k, (stats.repairs.get(k) ?? 0) + v);
    } else if (d.exit && !plan.duringStart) {
      // a kill point in start-up (base.*) or a start-up failure
      if (!d.lines.some((l) => l.startsWith("kill-point:"))) {
        stats.startFailures++;
        problem(`daemon exited during start-up (${JSON.stringify(d.exit)}): ${d.lines.slice(-5).join(" | ")}`);
      }
    }
    if (d.ready && d.running) {
      const c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      // state left by the previous kill (only while nothing is in flight)
      let tv = performance.now();
      await verifyPool();
      stats.time("check pool", tv);
      tv = performance.now();
      if (d.running) await verifyModel(c);
      stats.time("check model", tv);
      const ctx: Ctx = { c, d, stop: false, failure: null, verifies: 1, focus: plan.focus };
      if (plan.killAfterMs !== undefined && !plan.duringStart) {
        externalTimer = setTimeout(() => {
          killedExternally = true;
          void d.kill();
        }, plan.killAfterMs);
      }
      const deadline = performance.now() + workMs;
      const tw = performance.now();
      await Promise.all([worker(ctx, deadline), worker(ctx, deadline), worker(ctx, deadline)]);
      stats.time("workload", tw);
      const te = performance.now();
      if (ctx.failure && d.running) {
        // Either the daemon is dying right now, or a call failed for real.
        const gone = await Promise.race([d.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
        if (!gone && !killedExternally) {
          problem(`${ctx.failure.what} failed while the daemon stayed up: [${codeName(ctx.failure.err.code)}] ${ctx.failure.err.rawMessage}`);
        }
      }
      stats.time("wait for exit", te);
    }
    if (externalTimer) clearTimeout(externalTimer);
    let how: string;
    const fired = d.lines.find((l) => l.startsWith("kill-point: SIGKILL at "));
    if (fired) how = `point ${fired.slice("kill-point: SIGKILL at ".length)}`;
    else if (killedExternally) how = plan.duringStart ? "external (during start-up)" : "external";
    else if (!d.running) how = `exited ${JSON.stringify(d.exit)}`;
    else {
      how = "not reached";
      await d.kill();
    }
    await d.exited;
    if (how.startsWith("point") && plan.kind.startsWith("random")) how = `random ${how}`;
    if (how !== "not reached") stats.kill(how.replace(/^point /, `point(async=${plan.asyncRemove}) `));
    return how;
  }

  async function startAndKillAt(starting: Promise<Daemon>, ms: number): Promise<Daemon> {
    // Daemon.start resolves only when ready (or dead); kill from outside by pid meanwhile.
    let pidKilled = false;
    const killer = (async () => {
      await Bun.sleep(ms);
      // the newest thinsnap child of ours: found through /proc (its cmdline names our config)
      for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
        try {
          const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          if (cmd.includes(`${cfg.rootPath}.toml`) && cmd.includes("serve")) {
            process.kill(Number(pid), "SIGKILL");
            pidKilled = true;
          }
        } catch {
          // raced with its exit
        }
      }
    })();
    const d = await starting;
    await killer;
    if (!pidKilled && d.running) await d.kill(); // it was ready before the delay ran out
    await d.exited;
    return d;
  }

  // ------------------------------------------------------------------- tests

  test(
    "SIGKILL at every kill point and at random moments: store and pool stay consistent",
    async () => {
      const t0 = performance.now();
      // first start makes the base
      daemon = await Daemon.start({ config: cfg, readyTimeoutMs: 120_000 });
      expect(daemon.ready).toBe(true);
      await daemon.kill();

      // 1. every named point, async_remove off and on
      const targets: { point: string; asyncRemove: boolean; tries: number }[] = [];
      for (const asyncRemove of [false, true]) for (const point of KILL_POINTS) targets.push({ point, asyncRemove, tries: 0 });
      const firedNamed = new Map<string, number>();
      while (targets.length) {
        const t = targets.shift()!;
        t.tries++;
        const nth = t.point.startsWith("base.") || t.tries > 1 ? 1 : 1 + rnd(2);
        const how = await cycle(
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
        else problem(`kill point ${id} never reached in 3 tries (last: ${how})`);
      }
      const namedMs = performance.now() - t0;

      // 2. random moments: from outside (also during start-up) and random:P
      const t1 = performance.now();
      while (
        stats.totalKills() < MIN_KILLS ||
        (performance.now() - t1 < RANDOM_BUDGET_MS && (!SOAK || stats.totalKills() < 200 || performance.now() - t1 < 5 * 60_000))
      ) {
        if (SOAK && stats.totalKills() >= 200 && performance.now() - t1 > RANDOM_BUDGET_MS) break;
        const r = Math.random();
        const asyncRemove = Math.random() < 0.5;
        if (r < 0.15) {
          await cycle({ kind: "external-start", duringStart: true, killAfterMs: 200 + rnd(2500), asyncRemove }, 0);
        } else if (r < 0.6) {
          await cycle({ kind: "external", killAfterMs: 100 + rnd(3000), asyncRemove }, 8_000);
        } else {
          await cycle({ kind: "random", env: { THINSNAP_TEST_KILL_AT: `random:${(0.02 + Math.random() * 0.1).toFixed(3)}` }, asyncRemove }, 8_000);
        }
        if (!SOAK && performance.now() - t1 > RANDOM_BUDGET_MS && stats.totalKills() >= MIN_KILLS) break;
      }

      // 3. a last clean start: every file of every committed snapshot, every active usable
      epochNo++;
      daemon = await Daemon.start({ config: { ...cfg, asyncRemove: false, baseImageSize: baseSize() }, readyTimeoutMs: 120_000 });
      expect(daemon.ready).toBe(true);
      const rep = daemon.reconcileReport();
      for (const [k, v] of Object.entries(rep ?? {})) stats.repairs.set(k, (stats.repairs.get(k) ?? 0) + v);
      const c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      await verifyPool();
      await verifyModel(c);
      const ctx: Ctx = { c, d: daemon, stop: false, failure: null, verifies: Infinity };
      const committed = [...model.values()].filter((s) => s.kind === "committed");
      const leaves = committed.filter((s) => !committed.some((x) => x.parent === s.name));
      for (const leaf of leaves) await opVerify(ctx, leaf);
      for (const a of [...model.values()].filter((s) => s.kind === "active")) {
        const r = await call(ctx, "mounts", null, () => c.mounts({ key: a.name }));
        if (r) {
          const seen = await withMountAsync(r.mounts[0]!, filesIn);
          if (!sameRecord(seen, a.files)) problem(`active "${a.name}" shows ${JSON.stringify(seen)}, want ${JSON.stringify(a.files)}`);
        }
      }
      if (ctx.failure) problem(`final verification: ${ctx.failure.what}: [${codeName(ctx.failure.err.code)}] ${ctx.failure.err.rawMessage}`);
      const unverified = [...model.values()].filter((s) => s.kind === "committed" && !s.verified).map((s) => s.name);
      if (unverified.length) problem(`committed snapshots whose files were not read back: ${unverified.join(", ")}`);
      await verifyPool();
      const chk = await runCheck(daemon.configPath);
      if (chk.code !== 0) problem(`thinsnap check exited ${chk.code}: ${chk.out}`);

      // 4. remove everything: only the base is left in the pool
      const byDepth = [...model.values()];
      const depth = (s: Snap): number => (s.parent ? 1 + depth(model.get(s.parent)!) : 0);
      byDepth.sort((a, b) => depth(b) - depth(a));
      for (const s of byDepth) await c.remove({ key: s.name });
      model.clear();
      await c.cleanup({});
      await verifyPool();
      const left = checkConsistency(tp.dm, POOL, cfg.rootPath);
      if (left.poolIds.length !== 1) problem(`after removing everything the pool has thin ids ${left.poolIds.join(",")} (want only the base)`);
      await daemon.stop();

      const table: Record<string, number | string> = {};
      for (const [k, v] of [...stats.kills].sort()) table[`kill: ${k}`] = v;
      table["kills total"] = stats.totalKills();
      for (const [k, v] of [...stats.repairs].sort()) table[`repair: ${k}`] = v;
      table.cycles = stats.cycles;
      table["named points fired"] = `${firedNamed.size}/${KILL_POINTS.length * 2}`;
      table["named phase s"] = Math.round(namedMs / 1000);
      table["total s"] = Math.round((performance.now() - t0) / 1000);
      for (const [k, v] of stats.ms) table[`time in ${k} s`] = Math.round(v / 1000);
      console.log("crash consistency: kills and repairs");
      console.table(table);
      console.log("crash consistency: calls by outcome");
      console.table(Object.fromEntries([...stats.ops].sort()));

      expect(problems).toEqual([]);
      expect(firedNamed.size).toBe(KILL_POINTS.length * 2);
      expect(stats.totalKills()).toBeGreaterThanOrEqual(MIN_KILLS);
    },
    SOAK ? 4 * 3600_000 : 900_000,
  );

  test(
    "power-loss style: SIGKILL right after a burst of writes, page cache dropped, store opens and reconciles",
    async () => {
      daemon = await Daemon.start({ config: { ...cfg, baseImageSize: baseSize() }, readyTimeoutMs: 120_000 });
      expect(daemon.ready).toBe(true);
      const c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
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
      await daemon.kill();
      await run(["sync"]);
      writeFileSync("/proc/sys/vm/drop_caches", "3");
      daemon = await Daemon.start({ config: { ...cfg, baseImageSize: baseSize() }, readyTimeoutMs: 120_000 });
      expect(daemon.ready).toBe(true);
      const r = checkConsistency(tp.dm, POOL, cfg.rootPath);
      expect(r.problems).toEqual([]);
      const c2 = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      const listed = new Map((await listAll(c2)).map((i) => [i.name, i]));
      for (const k of acked) {
        expect(listed.get(k)?.kind).toBe(Kind.ACTIVE);
        expect(listed.get(k)?.labels.u).toBe("1");
      }
      for (const k of committed) expect(listed.get(k)?.kind).toBe(Kind.COMMITTED);
      expect(acked.size + committed.size).toBe(24);
      console.log(`power-loss case: ${acked.size} active + ${committed.size} committed acknowledged, all present; reconcile: ${JSON.stringify(daemon.reconcileReport())}`);
      await daemon.stop();
    },
    300_000,
  );
});
