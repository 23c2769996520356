/** Hostile use of the snapshot rules: wrong parents, cycles through Commit names, immutable fields, wrong kinds, bad and pathological filters. */
import { expect, test } from "bun:test";
import { Code, Kind, listAll, type Outcome } from "../../kit/client.ts";
import type { Hostile } from "./harness.ts";

export function semanticsTests(h: Hostile): void {
  test(
    "wrong parents, cycles through Commit names, immutable fields, wrong kinds",
    async () => {
      const { c, d, typed } = h;
      const t = (w: string, p: Promise<unknown>, a: Outcome[]): Promise<Outcome> => typed(w, p, a);
      await t("prepare missing parent", c.prepare({ key: "p1", parent: "nope" }), [Code.NotFound]);
      await t("prepare parent active", c.prepare({ key: "p2", parent: "h-act" }), [Code.InvalidArgument, Code.FailedPrecondition]);
      await t("prepare parent view", c.prepare({ key: "p3", parent: "h-view" }), [Code.InvalidArgument, Code.FailedPrecondition]);
      await t("view parent active", c.view({ key: "p4", parent: "h-act" }), [Code.InvalidArgument, Code.FailedPrecondition]);
      await t("prepare self-parent", c.prepare({ key: "p5", parent: "p5" }), [Code.NotFound]);
      await t("prepare existing committed name", c.prepare({ key: "h-c" }), [Code.AlreadyExists]);
      await t("commit to own key", c.commit({ key: "h-act", name: "h-act" }), [Code.AlreadyExists]);
      await t("commit to parent name", c.commit({ key: "h-act", name: "h-c" }), [Code.AlreadyExists]);
      await t("commit to a view's name", c.commit({ key: "h-act", name: "h-view" }), [Code.AlreadyExists]);
      await t("commit a view", c.commit({ key: "h-view", name: "h-v2" }), [Code.FailedPrecondition]);
      await t("commit a committed", c.commit({ key: "h-c", name: "h-c2" }), [Code.FailedPrecondition]);
      await t("commit missing", c.commit({ key: "nope", name: "h-c3" }), [Code.NotFound]);
      await t("commit rebase", c.commit({ key: "h-act", name: "h-c4", parent: "h-view" }), [Code.Unimplemented, Code.InvalidArgument]);
      await t("mounts committed", c.mounts({ key: "h-c" }), [Code.FailedPrecondition]);
      await t("remove parent with children", c.remove({ key: "h-c" }), [Code.FailedPrecondition]);
      for (const path of ["kind", "parent", "name", "created_at", "updated_at", "labels.", "label.x", "", "labels.a.b"]) {
        await t(`update path ${JSON.stringify(path)}`, c.update({ info: { name: "h-act", kind: Kind.COMMITTED, parent: "x" }, updateMask: { paths: [path] } }), [
          Code.InvalidArgument,
          "ok",
        ]);
      }
      const st = await c.stat({ key: "h-act" });
      expect(st.info?.kind).toBe(Kind.ACTIVE);
      expect(st.info?.parent).toBe("h-c");
      await t("update missing", c.update({ info: { name: "nope", labels: { a: "b" } } }), [Code.NotFound]);
      await t("update no info", c.update({}), [Code.NotFound, Code.InvalidArgument]);
      await t("usage missing", c.usage({ key: "nope" }), [Code.NotFound]);
      await t("remove missing", c.remove({ key: "nope" }), [Code.NotFound]);
      expect(d.running).toBe(true);
    },
    600_000,
  );

  test(
    "filters: bad syntax is InvalidArgument, pathological regexps finish in bounded time",
    async () => {
      const { c, d, finding, typed } = h;
      await c.update({ info: { name: "h-act", labels: { k: "x".repeat(4000) } }, updateMask: { paths: ["labels.k"] } });
      const bad = ["labels.", "name==", "(", 'name=="x",', 'labels."x', 'name~="("', "kind==active|", "\u0000", 'labels.a=="unterminated', "==x", "name!", 'name~="[z-a]"', "labels.a==b==c"];
      for (const f of bad) await typed(`list filter ${JSON.stringify(f)}`, listAll(c, [f]), [Code.InvalidArgument, "ok"]);
      const slow = ['labels.k~="(x+x+)+y"', 'labels.k~="(x*)*y"', 'name~="^(a|a)*$"', 'labels.k~="(.*){1,32}y"', 'labels.k~="x{1000}x{1000}y"'];
      for (const f of slow) {
        const t0 = performance.now();
        // over the matching budget (src/filters/limits.ts) is ResourceExhausted, naming the limit
        await typed(`list regexp ${f}`, listAll(c, [f]), ["ok", Code.InvalidArgument, Code.ResourceExhausted]);
        const ms = performance.now() - t0;
        if (ms > 5000) finding(`filter ${f} took ${Math.round(ms)} ms`);
      }
      expect(d.running).toBe(true);
    },
    300_000,
  );
}
