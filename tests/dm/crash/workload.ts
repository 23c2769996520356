/** The crash test's workload: three workers of Prepare / View / Commit / Remove / Update / reads, files written and read back. */
import { writeFileSync } from "node:fs";
import { FSTYPE_LABEL } from "../../../src/snapshotter/labels.ts";
import { codeName, ConnectError, listAll, type SnapshotsClient } from "../../kit/client.ts";
import type { Daemon } from "../../kit/daemon.ts";
import { withMount, type MountSpec } from "../../kit/process.ts";
import { filesIn, pick, sameRecord, type CrashRun, type Pending, type Snap } from "./run.ts";

export interface Ctx {
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
export async function call<T>(st: CrashRun, ctx: Ctx, what: string, p: Pending | null, fn: () => Promise<T>): Promise<T | null> {
  try {
    const r = await fn();
    st.stats.op(`${what} OK`);
    return r;
  } catch (e) {
    const err = ConnectError.from(e);
    st.stats.op(`${what} ${codeName(err.code)}`);
    if (p) st.pending.push(p);
    ctx.failure ??= { what: `${what} ${p ? JSON.stringify(p) : ""}`, err };
    ctx.stop = true;
    return null;
  }
}

/** Prepare on a committed parent (or none). */
export async function opPrepare(st: CrashRun, ctx: Ctx, thenCommit: boolean): Promise<void> {
  const parents = [...st.model.values()].filter((s) => s.kind === "committed" && !st.removing.has(s.name));
  const parent = Math.random() < 0.25 || parents.length === 0 ? "" : pick(parents)!.name;
  const key = st.newKey("a");
  const labels = { "t.op": key, "t.epoch": String(st.epochNo) };
  if (parent) st.hold(parent);
  st.hold(key);
  try {
    const r = await call(st, ctx, "prepare", { op: "prepare", key, parent, labels }, () => ctx.c.prepare({ key, parent, labels }));
    if (!r) return;
    const pf = parent ? st.model.get(parent)!.files : {};
    st.model.set(key, {
      name: key,
      kind: "active",
      parent,
      labels: { ...labels, [FSTYPE_LABEL]: "ext4" },
      files: { ...pf },
      written: false,
      verified: false,
      epoch: st.epochNo,
    });
    if (thenCommit && !ctx.stop) await finishActive(st, ctx, key, r.mounts[0]!);
  } finally {
    st.release(key);
    if (parent) st.release(parent);
  }
}

/** Mounts an active snapshot, checks its files, writes its own, unmounts, commits. */
export async function finishActive(st: CrashRun, ctx: Ctx, key: string, mount?: MountSpec): Promise<void> {
  const s = st.model.get(key)!;
  let m = mount;
  if (!m) {
    const r = await call(st, ctx, "mounts", null, () => ctx.c.mounts({ key }));
    if (!r) return;
    m = r.mounts[0]!;
  }
  const content = `${key} written in epoch ${st.epochNo} ${Math.random()}`;
  const seen = await withMount(m, (d) => {
    const before = filesIn(d);
    if (!s.written) writeFileSync(`${d}/f-${key}`, content);
    return before;
  });
  if (!sameRecord(seen, s.files)) {
    st.problem(`active "${key}" shows ${JSON.stringify(Object.keys(seen))}, want ${JSON.stringify(Object.keys(s.files))}`);
  }
  if (!s.written) {
    s.files[`f-${key}`] = content;
    s.written = true;
  }
  if (ctx.stop) return;
  const name = st.newKey("c");
  const labels = { "t.committed": name };
  const ok = await call(st, ctx, "commit", { op: "commit", key, name, labels }, () => ctx.c.commit({ key, name, labels }));
  if (ok === null) return;
  st.model.delete(key);
  st.model.set(name, { ...s, name, kind: "committed", labels: { ...labels, [FSTYPE_LABEL]: "ext4" }, verified: false, epoch: st.epochNo });
}

/** Reads a committed snapshot's files back through a View. */
export async function opVerify(st: CrashRun, ctx: Ctx, target: Snap): Promise<void> {
  const key = st.newKey("v");
  const labels = { "t.verify": target.name };
  st.hold(target.name);
  st.hold(key);
  try {
    const r = await call(st, ctx, "view", { op: "view", key, parent: target.name, labels }, () =>
      ctx.c.view({ key, parent: target.name, labels }),
    );
    if (!r) return;
    st.model.set(key, { name: key, kind: "view", parent: target.name, labels: { ...labels, [FSTYPE_LABEL]: "ext4" }, files: { ...target.files }, written: false, verified: false, epoch: st.epochNo });
    const seen = await withMount(r.mounts[0]!, filesIn);
    if (!sameRecord(seen, target.files)) {
      st.problem(`view of "${target.name}" shows ${JSON.stringify(seen)}, want ${JSON.stringify(target.files)}`);
    } else {
      // its ancestors' files were there too
      for (let a: Snap | undefined = target; a; a = a.parent ? st.model.get(a.parent) : undefined) a.verified = true;
      st.stats.op("files verified");
    }
    if (ctx.stop) return;
    st.removing.add(key);
    const ok = await call(st, ctx, "remove", { op: "remove", key }, () => ctx.c.remove({ key }));
    if (ok !== null) st.model.delete(key);
  } finally {
    st.removing.delete(key);
    st.release(key);
    st.release(target.name);
  }
}

export async function opView(st: CrashRun, ctx: Ctx): Promise<void> {
  const parent = pick([...st.model.values()].filter((s) => s.kind === "committed" && !st.removing.has(s.name)));
  if (!parent) return;
  const key = st.newKey("v");
  const labels = { "t.op": key };
  st.hold(parent.name);
  st.hold(key);
  try {
    const r = await call(st, ctx, "view", { op: "view", key, parent: parent.name, labels }, () =>
      ctx.c.view({ key, parent: parent.name, labels }),
    );
    if (r) {
      st.model.set(key, { name: key, kind: "view", parent: parent.name, labels: { ...labels, [FSTYPE_LABEL]: "ext4" }, files: { ...parent.files }, written: false, verified: false, epoch: st.epochNo });
    }
  } finally {
    st.release(key);
    st.release(parent.name);
  }
}

export async function opRemove(st: CrashRun, ctx: Ctx): Promise<void> {
  const cands = [...st.model.values()].filter((s) => !st.isBusy(s.name) && !st.hasChildren(s.name));
  // prefer views and actives; committed leaves too, less often
  const t = pick(cands.filter((s) => s.kind !== "committed" || Math.random() < 0.4));
  if (!t) return;
  st.hold(t.name);
  st.removing.add(t.name);
  try {
    const ok = await call(st, ctx, "remove", { op: "remove", key: t.name }, () => ctx.c.remove({ key: t.name }));
    if (ok !== null) st.model.delete(t.name);
  } finally {
    st.removing.delete(t.name);
    st.release(t.name);
  }
}

export async function opUpdate(st: CrashRun, ctx: Ctx): Promise<void> {
  const t = pick([...st.model.values()].filter((s) => !st.isBusy(s.name)));
  if (!t) return;
  const value = `u${++st.seq}`;
  st.hold(t.name);
  try {
    const r = await call(st, ctx, "update", { op: "update", key: t.name, value }, () =>
      ctx.c.update({ info: { name: t.name, labels: { "t.upd": value } }, updateMask: { paths: ["labels.t.upd"] } }),
    );
    if (r) {
      t.labels["t.upd"] = value;
      if (r.info?.labels["t.upd"] !== value) st.problem(`update of "${t.name}" answered labels ${JSON.stringify(r.info?.labels)}`);
    }
  } finally {
    st.release(t.name);
  }
}

export async function opRead(st: CrashRun, ctx: Ctx): Promise<void> {
  const t = pick([...st.model.values()].filter((x) => !st.isBusy(x.name)));
  if (Math.random() < 0.5 || !t) {
    await call(st, ctx, "list", null, () => listAll(ctx.c));
  } else {
    await call(st, ctx, "stat", null, () => ctx.c.stat({ key: t.name }));
    if (!ctx.stop && !st.isBusy(t.name)) await call(st, ctx, "usage", null, () => ctx.c.usage({ key: t.name }));
  }
}

export async function worker(st: CrashRun, ctx: Ctx, deadline: number): Promise<void> {
  while (!ctx.stop && ctx.d.running && performance.now() < deadline) {
    const unverified = [...st.model.values()].filter((s) => s.kind === "committed" && !s.verified && s.epoch < st.epochNo && !st.isBusy(s.name));
    const idleActive = [...st.model.values()].filter((s) => s.kind === "active" && !st.isBusy(s.name));
    let r = Math.random();
    const crowded = st.model.size > 50;
    if (ctx.focus === "remove" && Math.random() < 0.5) r = 0.75;
    if (ctx.focus === "commit" && Math.random() < 0.5) r = idleActive.length ? 0.4 : 0.6;
    if (ctx.focus === "prepare" && Math.random() < 0.5) r = 0.6;
    if (unverified.length && r < 0.3 && ctx.verifies > 0) {
      ctx.verifies--;
      await opVerify(st, ctx, pick(unverified)!);
    }
    else if (idleActive.length && r < 0.45) {
      const a = pick(idleActive)!;
      st.hold(a.name);
      try {
        await finishActive(st, ctx, a.name);
      } finally {
        st.release(a.name);
      }
    } else if (r < (crowded ? 0.5 : 0.7)) await opPrepare(st, ctx, Math.random() < 0.7);
    else if (r < (crowded ? 0.85 : 0.8)) await opRemove(st, ctx);
    else if (r < 0.88) await opView(st, ctx);
    else if (r < 0.94) await opUpdate(st, ctx);
    else await opRead(st, ctx);
  }
}
