/**
 * The end-to-end demo (tests/e2e/demo.ts, `npm run demo`) as a test: every
 * step succeeds, the container output is right, and the pool's data usage
 * returns to its starting value after containerd's GC.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { containerdInstalled } from "../kit/containerd.ts";
import { runDemo } from "../e2e/demo.ts";
import { dm } from "./env.ts";

const SKIP = !dm.available
  ? dm.reason
  : !containerdInstalled()
    ? "containerd or ctr is not installed (apt-get install containerd)"
    : !existsSync("/sys/fs/cgroup/cgroup.controllers")
      ? "no cgroup2 at /sys/fs/cgroup (runc needs it)"
      : null;
if (SKIP !== null) console.warn(`tests/dm/e2e.test.ts SKIPPED: ${SKIP}`);

describe.skipIf(SKIP !== null)("end-to-end demo", () => {
  test("runs every step and leaves the pool as it found it", async () => {
    const lines: string[] = [];
    // the executable the README builds, as `npm run demo` runs it (npm test builds it first)
    const binary = existsSync("dist/thinsnap") ? "dist/thinsnap" : undefined;
    const r = await runDemo({ dir: "/tmp/thinsnap-e2e-test", pool: "thinsnap-e2e-test", print: (l) => lines.push(l), binary });
    if (!r.ok) console.error(lines.join("\n"));
    expect(r.error).toBeNull();
    expect(r.ok).toBe(true);
    expect(r.steps.length).toBe(9);
    expect(r.steps.every((s) => s.ok)).toBe(true);
    expect(r.helloOutput).toBe("hello from a container on a thin-pool\n");
    expect(r.writeOutput.split("\n").slice(0, 5)).toEqual(["data", "1.txt", "2.txt", "3.txt", "top.txt"]);
    expect(r.dataUsed.peak).toBeGreaterThan(r.dataUsed.start + (8n << 20n));
    expect(r.dataUsed.end).toBe(r.dataUsed.start);
    expect(lines[lines.length - 1]).toBe("demo: OK");
    console.log(lines.filter((l) => /^\s+[\d.]+s\s+(ok|FAIL)|total$/.test(l)).join("\n"));
  }, 600_000);
});
