/**
 * Builds dist/thinsnap: one executable (bun build --compile) that runs with no
 * node_modules and no Bun installed. libdevmapper is loaded at run time.
 * Prints the binary's size and start-up time.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import pkg from "./package.json" with { type: "json" };

const out = "dist/thinsnap";
let revision = "unknown";
try {
  revision = execFileSync("git", ["rev-parse", "--short=12", "HEAD"], { encoding: "utf8" }).trim();
  if (execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], { encoding: "utf8" }).trim()) {
    revision += "-dirty";
  }
} catch {
  // not a git checkout: keep "unknown"
}
const buildDate = new Date().toISOString().replace(/\.\d+Z$/, "Z");

mkdirSync("dist", { recursive: true });
const t0 = performance.now();
const result = await Bun.build({
  // The kernel worker threads' code is its own entry point (dm/kernel-worker.js
  // inside the executable), so that a thread loads src/dm only.
  entrypoints: ["src/cli/main.ts", "src/dm/kernel-worker.ts"],
  compile: { outfile: out },
  minify: true,
  sourcemap: "none",
  define: {
    THINSNAP_VERSION: JSON.stringify(pkg.version),
    THINSNAP_REVISION: JSON.stringify(revision),
    THINSNAP_BUILD_DATE: JSON.stringify(buildDate),
  },
});
if (!result.success) {
  for (const l of result.logs) console.error(l);
  process.exit(1);
}
const buildMs = performance.now() - t0;
const size = statSync(out).size;

// Start-up: the median of 5 runs of `--version`.
const times: number[] = [];
let version = "";
for (let i = 0; i < 5; i++) {
  const s = performance.now();
  const r = spawnSync(out, ["--version"], { encoding: "utf8" });
  times.push(performance.now() - s);
  if (r.status !== 0) {
    console.error(`${out} --version failed: ${r.stderr}`);
    process.exit(1);
  }
  version = r.stdout.trim();
}
times.sort((a, b) => a - b);
console.log(`built ${out} in ${(buildMs / 1000).toFixed(1)} s`);
console.log(`  ${version}`);
console.log(`  size      ${(size / 2 ** 20).toFixed(1)} MiB`);
console.log(`  start-up  ${times[2]!.toFixed(0)} ms (median of 5 runs of --version)`);
