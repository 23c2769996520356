/**
 * The README's walk-through (tests/dm/walkthrough.ts reads it) holds only
 * steps the guest test knows how to run, its containerd snippet is the one
 * thinsnap prints, and the install block copies files that exist.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "smol-toml";
import { DEFAULTS } from "../../src/config/config.ts";
import { containerdSnippet, defaultPlanOptions } from "../../src/install/snippets.ts";
import { containerdSnippetOf, installSources, stepsOf, walkthroughSteps, WALKTHROUGH_DOC } from "../dm/walkthrough.ts";

const REPO = join(import.meta.dir, "../..");
const doc = readFileSync(WALKTHROUGH_DOC, "utf8");

describe(`the walk-through in ${WALKTHROUGH_DOC.replace(`${REPO}/`, "")}`, () => {
  test("every line is a step the guest test runs, in the operator's order", () => {
    const kinds = walkthroughSteps(doc).map((s) => s.kind);
    expect(kinds).toEqual(["npm-ci", "build", "serve", "restart-containerd", "pull", "ctr", "thinsnap", "thinsnap", "stop-serve", "thinsnap"]);
    expect(() => stepsOf("sudo rm -rf /")).toThrow("a step the test does not know");
  });
  test("its containerd snippet is the proxy plugin table thinsnap prints for every containerd, on the default socket", () => {
    const shown: unknown = parse(containerdSnippetOf(doc));
    expect(shown).toEqual({ proxy_plugins: { thinsnap: { type: "snapshot", address: DEFAULTS.address } } });
    for (const v of [{ major: 1, minor: 6, patch: 20 }, { major: 1, minor: 7, patch: 0 }, { major: 2, minor: 3, patch: 0 }, null]) {
      const printed = parse(containerdSnippet(defaultPlanOptions(v))) as { proxy_plugins: { thinsnap: Record<string, unknown> } };
      const { exports: _exports, ...table } = printed.proxy_plugins.thinsnap;
      expect(shown).toEqual({ proxy_plugins: { thinsnap: table } });
    }
  });
  test("the install block copies files of this repository", () => {
    const srcs = installSources(doc);
    expect(srcs).toEqual(["dist/thinsnap", "packaging/thinsnap.service"]);
    for (const s of srcs.filter((x) => !x.startsWith("dist/"))) expect(existsSync(join(REPO, s))).toBe(true);
  });
});
