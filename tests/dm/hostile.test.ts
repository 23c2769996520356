/**
 * A hostile client against the real daemon's socket (issue 7): garbage and
 * truncated protobuf, wrong wire types, envelope tricks, oversized labels and
 * messages, odd keys (empty, 1 MiB, "/", "..", NUL, spaces, unicode), wrong
 * parents, cycles through Commit names, Update of immutable fields, bad and
 * pathological filters, racing Remove/Commit, and a random mix. Every request
 * must get a specific gRPC code (never Unknown; Internal is a finding), the
 * daemon must stay up, and afterwards no device or row may be left over.
 *
 * One daemon for all scenarios (tests/dm/hostile/*.ts, in this order); the
 * last test is the verdict over every answer they got.
 */
import { describe, expect, test } from "bun:test";
import { dm as env } from "./env.ts";
import { checkConsistency } from "../kit/consistency.ts";
import { listAll, outcomeOf } from "../kit/client.ts";
import { hostileSuite, POOL } from "./hostile/harness.ts";
import { inputTests } from "./hostile/inputs.ts";
import { raceTests } from "./hostile/races.ts";
import { semanticsTests } from "./hostile/semantics.ts";
import { wireTests } from "./hostile/wire.ts";

describe.skipIf(!env.available)("hostile client (real daemon, real pool)", () => {
  const h = hostileSuite();
  wireTests(h);
  inputTests(h);
  semanticsTests(h);
  raceTests(h);

  test(
    "the daemon is up, no device or row leaked, and every answer had a specific code",
    async () => {
      const { c, d, cfg, tp, counter, findings } = h;
      expect(d.running).toBe(true);
      // remove everything, leaves first
      for (let pass = 0; pass < 10; pass++) {
        const all = await listAll(c);
        if (all.length === 0) break;
        const parents = new Set(all.map((i) => i.parent).filter((p) => p !== ""));
        for (const i of all) if (!parents.has(i.name)) await outcomeOf(c.remove({ key: i.name }));
      }
      await c.cleanup({});
      const left = await listAll(c);
      const r = checkConsistency(tp.dm, POOL, cfg.rootPath);
      const errors = d.linesAt("error");
      console.log(`hostile: ${counter.total()} requests; by code:`);
      console.table(Object.fromEntries(counter.byCode()));
      console.table(counter.table());
      console.log(`daemon error log lines: ${errors.length}`);
      for (const l of errors.slice(0, 10)) console.log(`  ${l.slice(0, 300)}`);
      console.log(`${findings.length} finding(s), listed above as FINDING lines`);
      expect(left).toEqual([]);
      expect(r.problems).toEqual([]);
      expect(r.poolIds.length).toBe(1); // the base
      expect(counter.total()).toBeGreaterThanOrEqual(1000);
      expect(findings).toEqual([]); // every finding fails: the ones reported earlier are fixed
      await d.stop();
    },
    300_000,
  );
});
