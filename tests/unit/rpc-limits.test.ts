/**
 * Key and label caps, label keys that are JS property names, and containerd
 * 2.x's Commit parent contract -- over the real socket with the real
 * snapshotter (on the in-memory pool).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { MAX_KEY_BYTES, MAX_LABEL_BYTES, MAX_LABELS_TOTAL_BYTES } from "../../src/snapshotter/labels.ts";
import { MAX_REQUEST_BYTES } from "../../src/rpc/limits.ts";
import { startServer, type RunningServer } from "../../src/rpc/server.ts";
import { createSnapshotsService } from "../../src/rpc/service.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { Code, codeOf, errorOf, Kind, listAll, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";

let dir: string;
let sn: ThinSnapshotter;
let server: RunningServer;
let client: SnapshotsClient;
const calls: [string, string, number][] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "thinsnap-limits-"));
  sn = await ThinSnapshotter.open(TEST_OPTIONS, { store: Store.open(join(dir, "db")), pool: new FakePool(), format: async () => {} });
  server = await startServer({
    socketPath: join(dir, "sock"),
    service: createSnapshotsService(sn),
    observe: (method, code, seconds) => calls.push([method, code, seconds]),
  });
  client = snapshotsClient(server.address);
});
afterAll(async () => {
  await server.close(500);
  await sn.close();
  rmSync(dir, { recursive: true, force: true });
});

/** `n` labels of exactly MAX_LABEL_BYTES each (key + value). */
function fullLabels(n: number, prefix = "k"): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const k = `${prefix}${String(i).padStart(5, "0")}`;
    out[k] = "v".repeat(MAX_LABEL_BYTES - k.length);
  }
  return out;
}
const AT_CAP = MAX_LABELS_TOTAL_BYTES / MAX_LABEL_BYTES - 1; // leaves room for the fstype label

test("keys and names over MAX_KEY_BYTES are InvalidArgument and create nothing", async () => {
  const long = "k".repeat(MAX_KEY_BYTES + 1);
  for (const p of [client.prepare({ key: long }), client.view({ key: long })]) {
    const err = await errorOf(p);
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toContain(`limit of ${MAX_KEY_BYTES}`);
  }
  // Counted in UTF-8 bytes.
  expect(await codeOf(client.prepare({ key: "é".repeat(MAX_KEY_BYTES / 2 + 1) }))).toBe(Code.InvalidArgument);
  expect(await listAll(client)).toEqual([]);
  const exact = "k".repeat(MAX_KEY_BYTES);
  await client.prepare({ key: exact });
  expect(await codeOf(client.commit({ key: exact, name: long }))).toBe(Code.InvalidArgument);
  expect((await client.stat({ key: exact })).info?.kind).toBe(Kind.ACTIVE);
  await client.remove({ key: exact });
  console.log(`key cap: ${MAX_KEY_BYTES + 1}-byte key -> InvalidArgument; ${MAX_KEY_BYTES} bytes accepted`);
});

test("labels over MAX_LABELS_TOTAL_BYTES are InvalidArgument on Prepare, Commit and Update; nothing changes", async () => {
  const over = fullLabels(AT_CAP + 2);
  const err = await errorOf(client.prepare({ key: "big", labels: over }));
  expect(err.code).toBe(Code.InvalidArgument);
  expect(err.rawMessage).toContain(`limit of ${MAX_LABELS_TOTAL_BYTES}`);
  expect(await codeOf(client.stat({ key: "big" }))).toBe(Code.NotFound);

  // At the cap: accepted, and Stat and List answer.
  await client.prepare({ key: "full", labels: fullLabels(AT_CAP) });
  expect(Object.keys((await client.stat({ key: "full" })).info?.labels ?? {})).toHaveLength(AT_CAP + 1);
  expect(await codeOf(client.commit({ key: "full", name: "full-c", labels: over }))).toBe(Code.InvalidArgument);
  expect((await client.stat({ key: "full" })).info?.kind).toBe(Kind.ACTIVE);

  // Repeated Updates cannot grow labels past the cap.
  const before = (await client.stat({ key: "full" })).info?.labels;
  const more = fullLabels(2, "x");
  const upd = await errorOf(
    client.update({ info: { name: "full", labels: more }, updateMask: { paths: Object.keys(more).map((k) => `labels.${k}`) } }),
  );
  expect(upd.code).toBe(Code.InvalidArgument);
  expect((await client.stat({ key: "full" })).info?.labels).toEqual(before!);
  await client.remove({ key: "full" });
  console.log(`label cap: ${AT_CAP + 2} x ${MAX_LABEL_BYTES} B -> InvalidArgument; ${AT_CAP} accepted`);
});

test("150 snapshots at the label cap: every Stat and a full List answer", async () => {
  for (let i = 0; i < 150; i++) await sn.prepare(`s${i}`, "", { labels: fullLabels(AT_CAP) });
  expect((await client.stat({ key: "s149" })).info?.name).toBe("s149");
  expect((await listAll(client)).length).toBe(150);
  for (let i = 0; i < 150; i++) await sn.remove(`s${i}`);
}, 60_000);

test("a request at the caps fits MAX_REQUEST_BYTES; a larger body is ResourceExhausted", async () => {
  const key = "k".repeat(MAX_KEY_BYTES);
  // The least efficient realistic shape: many small labels, each in the mask.
  const labels: Record<string, string> = {};
  let total = 0;
  for (let i = 0; total + 40 <= MAX_LABELS_TOTAL_BYTES - 100; i++) {
    const k = `containerd.io/l${i}`;
    labels[k] = "v".repeat(40 - k.length);
    total += 40;
  }
  await client.prepare({ key });
  const paths = Object.keys(labels).map((k) => `labels.${k}`);
  await client.update({ info: { name: key, labels, parent: key }, updateMask: { paths } });
  expect(await codeOf(client.stat({ key: "k".repeat(MAX_REQUEST_BYTES) }))).toBe(Code.ResourceExhausted);
  // A long (but in-limit) key still gets its NotFound: the message is bounded.
  expect(await codeOf(client.stat({ key: "k".repeat(MAX_REQUEST_BYTES / 2) }))).toBe(Code.NotFound);
  await client.remove({ key });
});

test("label keys that are JS property names are plain data", async () => {
  const names = ["__proto__", "toString", "constructor", "hasOwnProperty"];
  const labels: Record<string, string> = Object.create(null);
  for (const [k, v] of Object.entries({ toString: "t", constructor: "c", hasOwnProperty: "h" })) labels[k] = v;
  labels["__proto__"] = "p";
  await client.prepare({ key: "odd", labels });
  const got = (await client.stat({ key: "odd" })).info?.labels ?? {};
  expect(Object.hasOwn(got, "__proto__")).toBe(true);
  for (const k of names) expect(Object.getOwnPropertyDescriptor(got, k)?.value).toBe(labels[k]);

  // Masked Updates on those names: set, delete, and one absent from the request.
  const r = await client.update({
    info: { name: "odd", labels: { constructor: "c2" } },
    updateMask: { paths: ["labels.toString", "labels.constructor", "labels.valueOf"] },
  });
  expect(Object.hasOwn(r.info?.labels ?? {}, "toString")).toBe(false);
  expect(r.info?.labels["constructor"]).toBe("c2");
  expect(Object.hasOwn(r.info?.labels ?? {}, "valueOf")).toBe(false);
  const proto = Object.create(null) as Record<string, string>;
  proto["__proto__"] = "p2";
  const u = await client.update({ info: { name: "odd", labels: proto }, updateMask: { paths: ["labels.__proto__"] } });
  expect(Object.getOwnPropertyDescriptor(u.info?.labels, "__proto__")?.value).toBe("p2");

  await client.commit({ key: "odd", name: "odd-c", labels });
  const c = (await client.stat({ key: "odd-c" })).info?.labels ?? {};
  expect(Object.getOwnPropertyDescriptor(c, "__proto__")?.value).toBe("p");
  expect(c["toString"]).toBe("t");
  // Listed too, and a filter on such a label matches only the real one.
  const listed = await listAll(client, ['labels."toString"==t']);
  expect(listed.map((i) => i.name)).toEqual(["odd-c"]);
  await client.remove({ key: "odd-c" });
});

test("Commit parent (containerd 2.2+): same accepted, different InvalidArgument, parentless refused unchanged", async () => {
  await client.prepare({ key: "a" });
  await client.commit({ key: "a", name: "base" });
  await client.prepare({ key: "a2" });
  await client.commit({ key: "a2", name: "other" });

  await client.prepare({ key: "same", parent: "base" });
  await client.commit({ key: "same", name: "same-c", parent: "base" });
  expect((await client.stat({ key: "same-c" })).info?.parent).toBe("base");

  await client.prepare({ key: "diff", parent: "base" });
  const d = await errorOf(client.commit({ key: "diff", name: "diff-c", parent: "other" }));
  expect(d.code).toBe(Code.InvalidArgument);
  expect(d.rawMessage).toContain('"base"');
  expect((await client.stat({ key: "diff" })).info?.kind).toBe(Kind.ACTIVE);
  expect(await codeOf(client.stat({ key: "diff-c" }))).toBe(Code.NotFound);

  await client.prepare({ key: "orphan" });
  const o = await errorOf(client.commit({ key: "orphan", name: "orphan-c", parent: "base" }));
  expect(o.code).toBe(Code.FailedPrecondition);
  expect(o.rawMessage).toContain("cannot adopt");
  const st = (await client.stat({ key: "orphan" })).info;
  expect(st?.kind).toBe(Kind.ACTIVE);
  expect(st?.parent).toBe("");
  expect(await codeOf(client.stat({ key: "orphan-c" }))).toBe(Code.NotFound);
  // Still committable without the parent.
  await client.commit({ key: "orphan", name: "orphan-c" });
  for (const k of ["orphan-c", "diff", "same-c", "other", "base"]) await client.remove({ key: k });
  console.log("commit parent: same OK, different InvalidArgument, parentless FailedPrecondition (unchanged)");
});

test("containerd 2.3's unpack labels are stored and returned; Prepare mounts are never read-only, View's always", async () => {
  const unpack = {
    "containerd.io/snapshot/diff-id": "sha256:" + "a".repeat(64),
    "containerd.io/snapshot/parent-chain-id": "sha256:" + "b".repeat(64),
    "containerd.io/snapshot.ref": "sha256:" + "c".repeat(64),
  };
  const p = await client.prepare({ key: "extract-1", labels: unpack });
  for (const m of p.mounts) expect(m.options).not.toContain("ro");
  expect((await client.stat({ key: "extract-1" })).info?.labels).toMatchObject(unpack);
  await client.commit({ key: "extract-1", name: "layer", labels: unpack });
  expect((await client.stat({ key: "layer" })).info?.labels).toMatchObject(unpack);
  expect((await listAll(client, ['labels."containerd.io/snapshot/diff-id"'])).map((i) => i.name)).toEqual(["layer"]);

  const child = await client.prepare({ key: "child", parent: "layer", labels: unpack });
  for (const m of child.mounts) expect(m.options).not.toContain("ro");
  for (const m of (await client.mounts({ key: "child" })).mounts) expect(m.options).not.toContain("ro");
  for (const parent of ["", "layer"]) {
    const v = await client.view({ key: `view-${parent}`, parent });
    expect(v.mounts.length).toBeGreaterThan(0);
    for (const m of v.mounts) expect(m.options).toContain("ro");
    for (const m of (await client.mounts({ key: `view-${parent}` })).mounts) expect(m.options).toContain("ro");
    await client.remove({ key: `view-${parent}` });
  }
  await client.remove({ key: "child" });
  await client.remove({ key: "layer" });
});

test("the interceptor chain reports every call to its observer", async () => {
  calls.length = 0;
  await client.prepare({ key: "obs" });
  expect(await codeOf(client.stat({ key: "nope" }))).toBe(Code.NotFound);
  await listAll(client);
  await client.remove({ key: "obs" });
  expect(calls.map(([m, c]) => `${m} ${c}`)).toEqual(["Prepare OK", "Stat NotFound", "List OK", "Remove OK"]);
  for (const [, , s] of calls) expect(s).toBeGreaterThanOrEqual(0);
});
