/** Kill points (src/snapshotter/kill-points.ts): inert in production, exact when armed. */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { killHook, killPoint, KILL_POINTS } from "../../src/snapshotter/kill-points.ts";

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

describe("kill points", () => {
  test("product code imports nothing from test scaffolding", () => {
    const root = join(import.meta.dir, "../../src");
    const offenders = sources(root).filter((f) => /from "[^"]*\/(testing|tests|fakes)\//.test(readFileSync(f, "utf8")));
    expect(offenders).toEqual([]);
  });

  test("unarmed (no THINSNAP_TEST_KILL_AT): no hook, and killPoint does nothing", () => {
    expect(killHook("")).toBeNull();
    // This test process has the variable unset (bun test does not set it).
    expect(process.env.THINSNAP_TEST_KILL_AT ?? "").toBe("");
    for (const p of KILL_POINTS) killPoint(p);
  });

  test("name[:n] fires at the n-th time that point is reached, not at others", () => {
    const calls: string[] = [];
    const realKill = process.kill;
    process.kill = ((pid: number, sig: string) => {
      calls.push(`${pid}:${sig}`);
      return true;
    }) as typeof process.kill;
    const realWrite = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      const hook = killHook("commit.after-store:2")!;
      hook("commit.after-fsync");
      hook("commit.after-store");
      hook("commit.after-fsync");
      expect(calls).toEqual([]);
      expect(() => hook("commit.after-store")).toThrow("unreachable");
      expect(calls).toEqual([`${process.pid}:SIGKILL`]);
      hook("commit.after-store"); // the third time: no second kill
      expect(calls.length).toBe(1);
      const never = killHook("random:0")!;
      for (const p of KILL_POINTS) never(p);
      expect(calls.length).toBe(1);
    } finally {
      process.kill = realKill;
      process.stderr.write = realWrite;
    }
  });
});
