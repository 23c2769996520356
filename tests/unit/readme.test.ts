/** The README's config reference is the key table's own rendering (`thinsnap config keys`). */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { keysMarkdown } from "../../src/config/docs.ts";

test("README's key table is what the config table produces", () => {
  const readme = readFileSync(join(import.meta.dir, "../../README.md"), "utf8");
  const m = /<!-- config-keys:begin -->\n([\s\S]*?)<!-- config-keys:end -->/.exec(readme);
  expect(m).not.toBeNull();
  expect(m![1]!.trim()).toBe(keysMarkdown().trim());
});
