/** After each restart: the store and pool agree with each other, and with what the client was told. */
import { FSTYPE_LABEL } from "../../../src/snapshotter/labels.ts";
import { listAll, type ListedInfo, type SnapshotsClient } from "../../kit/client.ts";
import { checkConsistency, waitNoDeleting } from "../../kit/consistency.ts";
import { KIND_OF, POOL, sameRecord, type CrashRun } from "./run.ts";

/** Resolves interrupted calls against what the daemon lists, then compares everything. */
export async function verifyModel(st: CrashRun, c: SnapshotsClient): Promise<void> {
  const listed = new Map<string, ListedInfo>((await listAll(c)).map((i) => [i.name, i]));
  for (const p of st.pending) {
    switch (p.op) {
      case "prepare":
      case "view": {
        const l = listed.get(p.key);
        if (!l) break; // rolled back (checkConsistency proves it was clean)
        const parent = st.model.get(p.parent);
        st.model.set(p.key, {
          name: p.key,
          kind: p.op === "prepare" ? "active" : "view",
          parent: p.parent,
          labels: { ...p.labels, [FSTYPE_LABEL]: "ext4" },
          files: { ...(parent?.files ?? {}) },
          written: false,
          verified: false,
          epoch: st.epochNo,
        });
        st.stats.op(`resolved ${p.op}: happened`);
        break;
      }
      case "commit": {
        const a = listed.get(p.key);
        const b = listed.get(p.name);
        const s = st.model.get(p.key);
        if (a && b) st.problem(`interrupted commit ${p.key} -> ${p.name}: both exist`);
        else if (!a && !b) st.problem(`interrupted commit ${p.key} -> ${p.name}: neither exists (snapshot lost)`);
        else if (b && s) {
          st.model.delete(p.key);
          st.model.set(p.name, { ...s, name: p.name, kind: "committed", labels: { ...p.labels, [FSTYPE_LABEL]: "ext4" }, verified: false, epoch: st.epochNo });
          st.stats.op("resolved commit: happened");
        } else st.stats.op("resolved commit: not happened");
        break;
      }
      case "remove":
        if (!listed.has(p.key)) {
          st.model.delete(p.key);
          st.stats.op("resolved remove: happened");
        } else st.stats.op("resolved remove: not happened");
        break;
      case "update": {
        const s = st.model.get(p.key);
        const l = listed.get(p.key);
        if (s && l && l.labels["t.upd"] === p.value) s.labels["t.upd"] = p.value;
        break;
      }
    }
  }
  st.pending = [];
  for (const s of st.model.values()) {
    const l = listed.get(s.name);
    if (!l) {
      st.problem(`acknowledged ${s.kind} snapshot "${s.name}" is gone`);
      st.model.delete(s.name);
      continue;
    }
    const kind = KIND_OF[l.kind];
    if (kind !== s.kind || l.parent !== s.parent || !sameRecord(l.labels, s.labels)) {
      st.problem(
        `snapshot "${s.name}" differs: have ${JSON.stringify({ kind, parent: l.parent, labels: l.labels })}, ` +
          `want ${JSON.stringify({ kind: s.kind, parent: s.parent, labels: s.labels })}`,
      );
      s.labels = l.labels;
    }
  }
  for (const name of listed.keys()) if (!st.model.has(name)) st.problem(`unexpected snapshot "${name}" (never acknowledged)`);
}

/** The pool and store agree (after the async remover caught up). */
export async function verifyPool(st: CrashRun, allowDeleting = false): Promise<void> {
  if (!allowDeleting && !(await waitNoDeleting(st.cfg.rootPath))) st.problem("devices still 'deleting' after 20 s");
  const r = checkConsistency(st.tp.dm, POOL, st.cfg.rootPath, { allowDeleting });
  for (const p of r.problems) st.problem(p);
  // every thin id is the base's or a snapshot's
  const snapIds = new Set(r.store.snapshots.map((s) => s.thinId));
  const baseIds = new Set(r.store.devices.filter((d) => d.role === "base").map((d) => d.thinId));
  const deleting = new Set(r.store.devices.filter((d) => d.state === "deleting").map((d) => d.thinId));
  for (const id of r.poolIds) {
    if (!snapIds.has(id) && !baseIds.has(id) && !deleting.has(id)) st.problem(`thin id ${id} belongs to no snapshot and is not the base`);
  }
}
