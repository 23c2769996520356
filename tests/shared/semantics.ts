/**
 * containerd's snapshot semantics, as one suite run against any backend:
 * tests/unit (fake pool) and tests/dm (a real thin-pool in the guest).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SnapshotterError, type ErrorCode } from "../../src/errors.ts";
import type { Info, Snapshotter } from "../../src/snapshotter/types.ts";
import { FSTYPE_LABEL } from "../../src/snapshotter/labels.ts";

export interface Backend {
  sn: Snapshotter;
  fsType: string;
  /** Pretends to (or really does) write `bytes` to a new file `file` of an active snapshot. */
  write(key: string, bytes: number, file?: string): Promise<void>;
  teardown(): Promise<void>;
}

export async function expectCode(p: Promise<unknown>, code: ErrorCode, msgPart?: string): Promise<void> {
  let err: unknown = null;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SnapshotterError);
  expect((err as SnapshotterError).code).toBe(code);
  if (msgPart) expect((err as Error).message).toContain(msgPart);
}

async function names(sn: Snapshotter, filters: string[]): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((i: Info) => void out.push(i.name), filters);
  return out.sort();
}

export function describeSemantics(label: string, make: () => Promise<Backend>, enabled = true): void {
  describe.skipIf(!enabled)(`snapshot semantics (${label})`, () => {
    let b: Backend;
    let sn: Snapshotter;
    beforeAll(async () => {
      b = await make();
      sn = b.sn;
    });
    afterAll(async () => {
      await b?.teardown();
    });

    test("prepare → mounts → commit → child prepare/view", async () => {
      const m = await sn.prepare("default/1/extract-1 sha256:abc", "", { labels: { a: "1", empty: "" } });
      expect(m).toHaveLength(1);
      expect(m[0]!.type).toBe(b.fsType);
      expect(m[0]!.source).toMatch(/^\/dev\/mapper\//);
      // An unpack (containerd's "extract-" key): ext4 without write barriers (Commit's fsync makes it durable).
      expect(m[0]!.options).toEqual(b.fsType === "xfs" ? ["nouuid"] : b.fsType === "ext4" ? ["nobarrier"] : []);
      expect(await sn.mounts("default/1/extract-1 sha256:abc")).toEqual(m);
      const st = await sn.stat("default/1/extract-1 sha256:abc");
      expect(st.kind).toBe("active");
      expect(st.parent).toBe("");
      expect(st.labels).toEqual({ a: "1", [FSTYPE_LABEL]: b.fsType });
      await b.write("default/1/extract-1 sha256:abc", 1 << 20);

      const before = Date.now();
      await sn.commit("sha256:layer1", "default/1/extract-1 sha256:abc", { labels: { c: "x" } });
      const c = await sn.stat("sha256:layer1");
      expect(c.kind).toBe("committed");
      expect(c.labels).toEqual({ c: "x", [FSTYPE_LABEL]: b.fsType });
      expect(c.created.getTime()).toBeGreaterThanOrEqual(before - 1);
      expect(c.updated.getTime()).toBe(c.created.getTime());
      await expectCode(sn.stat("default/1/extract-1 sha256:abc"), "not_found");

      const child = await sn.prepare("child", "sha256:layer1");
      expect(child[0]!.source).not.toBe(m[0]!.source);
      expect(child[0]!.options).toEqual(b.fsType === "xfs" ? ["nouuid"] : []);
      expect((await sn.stat("child")).parent).toBe("sha256:layer1");
      const view = await sn.view("view1", "sha256:layer1");
      expect(view[0]!.options).toEqual(b.fsType === "xfs" ? ["nouuid", "ro"] : ["ro"]);
      expect((await sn.stat("view1")).kind).toBe("view");
    });

    test("error classes of containerd", async () => {
      await expectCode(sn.prepare("child", ""), "already_exists", "child");
      await expectCode(sn.prepare("sha256:layer1", ""), "already_exists"); // one key space
      await expectCode(sn.prepare("x1", "missing-parent"), "not_found", "missing-parent");
      await expectCode(sn.prepare("x2", "child"), "invalid_argument", "not committed");
      await expectCode(sn.view("x3", "view1"), "invalid_argument");
      await expectCode(sn.commit("sha256:layer1", "child"), "already_exists");
      await expectCode(sn.commit("newname", "nope"), "not_found");
      await expectCode(sn.commit("newname", "view1"), "failed_precondition");
      await expectCode(sn.commit("newname", "sha256:layer1"), "failed_precondition");
      await expectCode(sn.remove("nope"), "not_found");
      await expectCode(sn.remove("sha256:layer1"), "failed_precondition", "children");
      await expectCode(sn.mounts("sha256:layer1"), "failed_precondition");
      await expectCode(sn.mounts("nope"), "not_found");
      await expectCode(sn.stat("nope"), "not_found");
      await expectCode(sn.usage("nope"), "not_found");
      await expectCode(sn.prepare("big", "", { labels: { k: "v".repeat(5000) } }), "invalid_argument");
      await expectCode(sn.prepare("", ""), "invalid_argument");
      await expectCode(sn.commit("", "child"), "invalid_argument");
      // failed calls changed nothing
      await expectCode(sn.stat("x1"), "not_found");
      await expectCode(sn.stat("newname"), "not_found");
    });

    test("update: replace, per-key set/delete, bad path, times", async () => {
      await sn.prepare("upd", "", { labels: { l1: "v1" } });
      const st0 = await sn.stat("upd");
      await Bun.sleep(5);
      let st = await sn.update({ name: "upd", labels: { l1: "v1", l2: "v2", l3: "v3" } }, []);
      expect(st.labels).toEqual({ l1: "v1", l2: "v2", l3: "v3" });
      expect(st.created.getTime()).toBe(st0.created.getTime());
      expect(st.updated.getTime()).toBeGreaterThan(st0.updated.getTime());
      expect(st.kind).toBe("active");
      st = await sn.update({ name: "upd", labels: { l1: "updated", l4: "v4" } }, ["labels.l1", "labels.l2"]);
      expect(st.labels).toEqual({ l1: "updated", l3: "v3" });
      st = await sn.update({ name: "upd", labels: { l4: "v4", e: "" } }, ["labels"]);
      expect(st.labels).toEqual({ l4: "v4" });
      expect(await sn.stat("upd")).toEqual(st);
      await expectCode(sn.update({ name: "upd", labels: {} }, ["parent"]), "invalid_argument");
      await expectCode(sn.update({ name: "upd", labels: {} }, ["labels.x", "kind"]), "invalid_argument");
      expect((await sn.stat("upd")).labels).toEqual({ l4: "v4" }); // nothing half-applied
      await expectCode(sn.update({ name: "nope", labels: {} }, []), "not_found");
      await sn.remove("upd");
    });

    test("usage: own bytes only, never negative, frozen at commit", async () => {
      await sn.prepare("u-base", "");
      await b.write("u-base", 4 << 20);
      const u0 = await sn.usage("u-base");
      expect(u0.size).toBeGreaterThanOrEqual(4n << 20n);
      await sn.commit("u-layer", "u-base");
      const uc = await sn.usage("u-layer");
      expect(uc.size).toBe(u0.size);
      await sn.prepare("u-child", "u-layer");
      const uchild0 = await sn.usage("u-child");
      expect(uchild0.size).toBe(0n); // shares all blocks with the parent
      // A new file: rewriting the parent's blocks in place would map no new
      // addresses, and usage (like the reference's) counts mapped addresses.
      await b.write("u-child", 2 << 20, "other");
      const uchild = await sn.usage("u-child");
      expect(uchild.size).toBeGreaterThanOrEqual(2n << 20n);
      expect(uchild.size).toBeLessThan(u0.size + (2n << 20n));
      await sn.view("u-view", "u-layer");
      expect((await sn.usage("u-view")).size).toBe(0n);
      await sn.remove("u-view");
      await sn.remove("u-child");
      await sn.remove("u-layer");
    });

    test("walk with filters", async () => {
      await sn.prepare("w/a", "", { labels: { "containerd.io/gc.root": "yes", team: "x" } });
      await sn.commit("w-committed", "w/a", { labels: { "containerd.io/gc.root": "yes", team: "y" } });
      await sn.prepare("w/b", "w-committed", { labels: { team: "x" } });
      await sn.view("w/c", "w-committed");
      const all = await names(sn, []);
      expect(all).toEqual(expect.arrayContaining(["w-committed", "w/b", "w/c"]));
      expect(await names(sn, ["kind==committed,name~=^w-"])).toEqual(["w-committed"]);
      expect(await names(sn, ['labels."containerd.io/gc.root"==yes'])).toEqual(["w-committed"]);
      expect(await names(sn, ["labels.team==x", "kind==view,name~=^w/"])).toEqual(["w/b", "w/c"]);
      expect(await names(sn, ["parent==w-committed"])).toEqual(["w/b", "w/c"]);
      expect(await names(sn, ["parent==w-committed,labels.team"])).toEqual(["w/b"]);
      expect(await names(sn, ["parent==w-committed,labels.team!=x"])).toEqual(["w/c"]);
      await expectCode(sn.walk(() => {}, ["name=="]), "invalid_argument");
      await expectCode(sn.walk(() => {}, ["labels.(bad"]), "invalid_argument");
      for (const k of ["w/c", "w/b", "w-committed"]) await sn.remove(k);
    });

    test("remove: leaf first, then parent; keys are reusable", async () => {
      await sn.prepare("r1", "");
      await sn.commit("r-c1", "r1");
      await sn.prepare("r2", "r-c1");
      await sn.commit("r-c2", "r2");
      await expectCode(sn.remove("r-c1"), "failed_precondition");
      await sn.remove("r-c2");
      await sn.remove("r-c1");
      await sn.cleanup();
      await expectCode(sn.stat("r-c1"), "not_found");
      await sn.prepare("r1", "");
      await sn.remove("r1");
      await sn.cleanup();
    });

    test("keys with any bytes", async () => {
      const keys = ["a b/c", "../../etc/passwd", "ключ/ü/🙂", "x".repeat(2000), "default/5/name"];
      for (const k of keys) await sn.prepare(k, "");
      for (const k of keys) {
        const m = await sn.mounts(k);
        expect(m[0]!.source).toMatch(/^\/dev\/mapper\/[\w.-]+$/); // never derived from the key
        expect((await sn.stat(k)).name).toBe(k);
      }
      for (const k of keys) await sn.remove(k);
    });

    test("cleanup of the tree made above leaves only what is left", async () => {
      await sn.remove("view1");
      await sn.remove("child");
      await sn.remove("sha256:layer1");
      await sn.cleanup();
      expect(await names(sn, [])).toEqual([]);
    });
  });
}
