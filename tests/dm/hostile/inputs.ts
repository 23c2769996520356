/** Hostile sizes and names: labels over the limits, messages over 16 MiB, big-but-legal label maps, odd and huge keys. */
import { MAX_LABELS_TOTAL_BYTES } from "../../../src/snapshotter/labels.ts";
import { expect, test } from "bun:test";
import { Code, codeName, ConnectError, listAll, outcomeOf, snapshotsClient, type SnapshotsClient } from "../../kit/client.ts";
import type { Hostile } from "./harness.ts";

export function inputTests(h: Hostile): void {
  test(
    "labels: over 4 KiB per label, over 16 MiB per message, and big-but-legal label maps",
    async () => {
      const { c, d, finding, typed, fresh } = h;
      const big = { k: "v".repeat(4096) };
      await typed("prepare label>4KiB", c.prepare({ key: "h-big1", labels: big }), [Code.InvalidArgument]);
      await typed("view label>4KiB", c.view({ key: "h-big2", parent: "h-c", labels: big }), [Code.InvalidArgument]);
      await typed("commit label>4KiB", c.commit({ key: "h-act", name: "h-big3", labels: big }), [Code.InvalidArgument]);
      await typed("update label>4KiB", c.update({ info: { name: "h-c", labels: big } }), [Code.InvalidArgument]);
      await typed("prepare empty label key", c.prepare({ key: "h-big4", labels: { "": "v" } }), [Code.InvalidArgument, "ok"]);
      // 17 MiB in one message: 4400 labels of ~4000 bytes
      const huge: Record<string, string> = {};
      for (let i = 0; i < 4400; i++) huge[`l${i}`] = "x".repeat(3990);
      await typed("prepare 17MiB message", fresh().prepare({ key: "h-huge", labels: huge }), [Code.ResourceExhausted]);
      // does the refused 17 MiB call spoil its connection for the next call?
      const shared = fresh();
      await typed("prepare 17MiB message (shared conn)", shared.prepare({ key: "h-huge", labels: huge }), [Code.ResourceExhausted]);
      // After refusing it the server closes that connection gracefully
      // (GOAWAY, NO_ERROR, seen with a frame-logging proxy): grpc-go, i.e.
      // containerd, just opens a new one (checked by hand: three Stats after
      // a refused 17 MiB Prepare all succeed), while Bun's http2 client fails
      // later calls on the old session with ENHANCE_YOUR_CALM locally, never
      // sending them. So: OK or that client-side error, and a new connection works.
      const again = await shared.stat({ key: "h-c" }).then(
        () => "ok",
        (e: unknown) => ConnectError.from(e).rawMessage,
      );
      if (again !== "ok" && !again.includes("ENHANCE_YOUR_CALM")) finding(`stat after a refused 17MiB call, same conn: ${again}`);
      await typed("stat after a refused 17MiB call, new conn", fresh().stat({ key: "h-c" }), ["ok"]);
      expect(d.running).toBe(true);
      // 7 MiB of labels is over the per-snapshot cap (and the request limit): refused, nothing made.
      const seven: Record<string, string> = {};
      for (let i = 0; i < 1800; i++) seven[`l${i}`] = "y".repeat(3990);
      await typed("prepare 7MiB labels", fresh().prepare({ key: "h-lab1", labels: seven }), [Code.ResourceExhausted, Code.InvalidArgument]);
      await typed("stat after refused 7MiB labels", fresh().stat({ key: "h-lab1" }), [Code.NotFound]);
      // The most that is legal (MAX_LABELS_TOTAL_BYTES) on three snapshots: Stat and List work.
      const most: Record<string, string> = {};
      for (let i = 0; i < Math.floor(MAX_LABELS_TOTAL_BYTES / 4000); i++) most[`l${i}`] = "y".repeat(4000 - `l${i}`.length);
      await typed("prepare labels at the cap", fresh().prepare({ key: "h-lab1", labels: most }), ["ok"]);
      await typed("view labels at the cap", fresh().view({ key: "h-lab2", parent: "h-c", labels: most }), ["ok"]);
      await typed("stat labels at the cap", fresh().stat({ key: "h-lab1" }), ["ok"]);
      const t0 = performance.now();
      await typed("prepare labels at the cap (3rd)", fresh().prepare({ key: "h-lab3", labels: most }), ["ok"]);
      const lo3 = await typed("list 3 snapshots with labels at the cap", listAll(fresh()), ["ok"]);
      await typed("list one snapshot with labels at the cap", listAll(fresh(), ["name==h-lab1"]), ["ok"]);
      console.log(`list with big label maps: 3 snapshots at the cap -> ${codeName(lo3)} (${Math.round(performance.now() - t0)} ms)`);
      for (const k of ["h-lab1", "h-lab2", "h-lab3"]) await typed(`remove ${k}`, fresh().remove({ key: k }), ["ok", Code.NotFound]);
      expect(d.running).toBe(true);
    },
    600_000,
  );

  test(
    "odd keys: empty, 1 MiB, '/', '..', NUL, spaces, unicode",
    async () => {
      const { c, d, cfg, finding, typed } = h;
      const keys: [string, string][] = [
        ["slash", "a/b/c"],
        ["dotdot", "../../etc/passwd"],
        ["dot", "."],
        ["space", " lead and trail "],
        ["newline", "line1\nline2"],
        ["unicode", "键🔑\u202Eabc"],
        ["nul", "nul\u0000tail"],
        ["quote", 'q"uo\\te'],
        ["percent", "%00%ff%"],
        ["long", "k".repeat(4096)],
      ];
      for (const [what, key] of keys) {
        const o = await typed(`prepare key ${what}`, c.prepare({ key, parent: "h-c", labels: { w: what } }), ["ok", Code.InvalidArgument]);
        if (o !== "ok") continue;
        const st = await c.stat({ key }).catch((e: unknown) => ConnectError.from(e));
        if (st instanceof ConnectError || st.info?.name !== key) {
          finding(`key ${what}: stat after prepare gave ${st instanceof ConnectError ? codeName(st.code) : JSON.stringify(st.info?.name)}`);
        }
        const listed = (await listAll(c)).filter((i) => i.labels.w === what).map((i) => i.name);
        if (listed.length !== 1 || listed[0] !== key) finding(`key ${what}: listed as ${JSON.stringify(listed)}`);
        if (what === "nul") {
          const prefix = await outcomeOf(c.stat({ key: "nul" }));
          if (prefix !== Code.NotFound) finding(`key with NUL: stat("nul") gave ${codeName(prefix)} (key cut at the NUL?)`);
        }
        // the long key is at the key cap (MAX_KEY_BYTES): its name must fit too
        const name = `${what === "long" ? key.slice("-committed".length) : key}-committed`;
        await typed(`commit key ${what}`, c.commit({ key, name }), ["ok"]);
        await typed(`remove key ${what}`, c.remove({ key: name }), ["ok"]);
      }
      // the empty key
      const e1 = await typed("prepare key ''", c.prepare({ key: "" }), ["ok", Code.InvalidArgument]);
      if (e1 === "ok") {
        finding("Prepare with an empty key succeeded (containerd's metadata layer refuses empty keys)");
        await typed("commit key '' -> ''", c.commit({ key: "", name: "" }), [Code.AlreadyExists, Code.InvalidArgument]);
        await typed("remove key ''", c.remove({ key: "" }), ["ok"]);
      }
      await c.prepare({ key: "h-act-empty", parent: "h-c" });
      const ce = await typed("commit to name ''", c.commit({ key: "h-act-empty", name: "" }), [Code.InvalidArgument, Code.AlreadyExists]);
      if (ce === "ok") {
        // a snapshot named "": its children's parent field reads "" = "no parent"
        await c.prepare({ key: "child-of-empty", parent: "" });
        const parentSeen = (await c.stat({ key: "child-of-empty" })).info?.parent;
        finding(`Commit to the empty name succeeded; a child Prepare'd with parent "" is then parentless (parent ${JSON.stringify(parentSeen)}): the snapshot named "" cannot be used as a parent`);
        await c.remove({ key: "child-of-empty" });
        await c.remove({ key: "" });
      } else await c.remove({ key: "h-act-empty" });
      // 1 MiB keys: the key comes back in error messages (grpc-message trailer)
      // (each on its own connection: a failure can take the whole HTTP/2 session down)
      const mib = "m".repeat(1 << 20);
      const own = (): SnapshotsClient => snapshotsClient(cfg.address, { timeoutMs: 60_000 });
      await typed("stat 1MiB key (absent)", own().stat({ key: mib }), [Code.NotFound, Code.InvalidArgument]);
      const p1 = await typed("prepare 1MiB key", own().prepare({ key: mib }), ["ok", Code.InvalidArgument]);
      if (p1 === "ok") {
        await typed("prepare 1MiB key again", own().prepare({ key: mib }), [Code.AlreadyExists]);
        await typed("remove 1MiB key", own().remove({ key: mib }), ["ok"]);
      }
      await typed("prepare 1MiB parent (absent)", own().prepare({ key: "h-x", parent: mib }), [Code.NotFound, Code.InvalidArgument]);
      // the same with a 16 KiB key, which fits the usual HTTP/2 header limits
      const k16 = "k".repeat(16 << 10);
      await typed("stat 16KiB key (absent)", own().stat({ key: k16 }), [Code.NotFound]);
      expect(d.running).toBe(true);
    },
    600_000,
  );
}
