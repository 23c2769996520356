/** Hostile timing: concurrent Remove of one key, Commit racing Remove, and a random mix of calls 8 at a time. */
import { expect, test } from "bun:test";
import { Code, codeName, listAll, outcomeOf } from "../../kit/client.ts";
import { ANY_SPECIFIC, rnd, type Hostile } from "./harness.ts";

export function raceTests(h: Hostile): void {
  test(
    "races: concurrent Remove of one key, Commit racing Remove",
    async () => {
      const { c, d, finding, note } = h;
      for (let round = 0; round < 6; round++) {
        await c.prepare({ key: `r-${round}`, parent: "h-c" });
        const outs = await Promise.all(Array.from({ length: 12 }, () => outcomeOf(c.remove({ key: `r-${round}` }))));
        for (const o of outs) note("remove race", o, ["ok", Code.NotFound, Code.FailedPrecondition]);
        if (outs.filter((o) => o === "ok").length !== 1) finding(`concurrent Remove: ${outs.filter((o) => o === "ok").length} succeeded`);
      }
      for (let round = 0; round < 10; round++) {
        const key = `cr-${round}`;
        await c.prepare({ key, parent: "h-c" });
        const [co, ro] = await Promise.all([outcomeOf(c.commit({ key, name: `${key}-c` })), outcomeOf(c.remove({ key }))]);
        note("commit vs remove: commit", co, ["ok", Code.NotFound, Code.FailedPrecondition]);
        note("commit vs remove: remove", ro, ["ok", Code.NotFound, Code.FailedPrecondition]);
        const names = new Set((await listAll(c)).map((i) => i.name));
        if (co === "ok" && ro === "ok") finding(`commit and remove of ${key} both succeeded`);
        if (co === "ok" && !names.has(`${key}-c`)) finding(`commit of ${key} succeeded but ${key}-c is gone`);
        if (co !== "ok" && ro !== "ok") finding(`commit and remove of ${key} both failed (${codeName(co)}, ${codeName(ro)})`);
        if (names.has(key)) finding(`${key} still exists after the race`);
        if (names.has(`${key}-c`)) await c.remove({ key: `${key}-c` });
      }
      expect(d.running).toBe(true);
    },
    300_000,
  );

  test(
    "a random mix of calls on a small key space, 8 at a time",
    async () => {
      const { c, d, typed } = h;
      const keys = ["f0", "f1", "f2", "f3", "f4", "h-c", "h-act", "h-view", ""];
      const pickKey = (): string => keys[rnd(keys.length)]!;
      const one = async (): Promise<void> => {
        const k = pickKey();
        const p = pickKey();
        const labels = Math.random() < 0.2 ? { [`l${rnd(3)}`]: Math.random() < 0.2 ? "" : "v" } : {};
        switch (rnd(9)) {
          case 0:
            return void (await typed("fuzz prepare", c.prepare({ key: k, parent: p, labels }), ANY_SPECIFIC));
          case 1:
            return void (await typed("fuzz view", c.view({ key: k, parent: p, labels }), ANY_SPECIFIC));
          case 2:
            return void (await typed("fuzz commit", c.commit({ key: k, name: `${p}${rnd(3)}`, labels }), ANY_SPECIFIC));
          case 3:
            return void (await typed("fuzz remove", c.remove({ key: k }), ANY_SPECIFIC));
          case 4:
            return void (await typed("fuzz update", c.update({ info: { name: k, labels }, updateMask: { paths: Math.random() < 0.5 ? [] : ["labels.l1"] } }), ANY_SPECIFIC));
          case 5:
            return void (await typed("fuzz mounts", c.mounts({ key: k }), ANY_SPECIFIC));
          case 6:
            return void (await typed("fuzz usage", c.usage({ key: k }), ANY_SPECIFIC));
          case 7:
            return void (await typed("fuzz list", listAll(c, Math.random() < 0.5 ? [] : [`name==${k || "x"}`, "kind==active"]), ANY_SPECIFIC));
          default:
            return void (await typed("fuzz stat", c.stat({ key: k }), ANY_SPECIFIC));
        }
      };
      const worker = async (): Promise<void> => {
        for (let i = 0; i < 60; i++) await one();
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      expect(d.running).toBe(true);
    },
    600_000,
  );
}
