/** `thinsnap pool status` text: the thresholds rows (the figures come from poolFigures, tested with the pool watcher). */
import { expect, test } from "bun:test";
import { poolReportText, type PoolReport } from "../../src/cli/pool.ts";

const MiB = 1n << 20n;
const report = (t: PoolReport["thresholds"]): PoolReport => ({
  pool: "p",
  transactionId: "3",
  mode: "rw",
  needsCheck: false,
  blockSize: String(64n << 10n),
  data: { used: "16", total: "16384", usedBytes: String(MiB), totalBytes: String(1024n * MiB), percent: 0.09 },
  metadata: { used: "10", total: "4096", percent: 0.24 },
  thresholds: t,
  activeDevices: [],
  snapshots: { committed: 3 },
  devicesByState: { ready: 4 },
});

const row = (text: string, name: string): string | undefined =>
  text.split("\n").find((l) => l.startsWith(`${name} `))?.slice(name.length).trim();

test("the low-water mark and min_free_space rows say where each is and whether the pool is below it", () => {
  const text = poolReportText(
    report({ freeBytes: String(1023n * MiB), lowWaterMark: { bytes: String(100n * MiB), below: false }, minFreeSpace: { bytes: String(1100n * MiB), below: true } }),
  );
  expect(row(text, "free data")).toBe("1023 MiB");
  expect(row(text, "low-water mark")).toBe("at 100 MiB free");
  expect(row(text, "min_free_space")).toBe("at 1.07 GiB free (BELOW IT: new snapshots are refused)");
  expect(row(text, "snapshots")).toBe("3 committed");
});

test("a pool without a low-water mark or reserve says none", () => {
  const text = poolReportText(report({ freeBytes: "0", lowWaterMark: null, minFreeSpace: null }));
  expect(row(text, "low-water mark")).toBe("none");
  expect(row(text, "min_free_space")).toBe("none");
});
