/**
 * List filters in the compiled executable (dist/thinsnap, `npm run build`):
 * the "~=" regexps run on re2js, which must be bundled into the binary and
 * work there, including the limits' refusals.
 */
import { describe, expect, test } from "bun:test";
import { dm as env } from "./env.ts";
import { binaryMissing, withBinaryDaemon } from "../kit/binary.ts";
import { Code, errorOf, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";
import { MAX_FILTER_REGEXPS } from "../../src/filters/limits.ts";

const noBinary = binaryMissing("List filters in the compiled binary", env.available);

async function names(c: SnapshotsClient, filters: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const res of c.list({ filters })) for (const i of res.info) out.push(i.name);
  return out.sort();
}

describe.skipIf(!env.available || noBinary)("List filters in the compiled binary", () => {
  test("regexp filters match like Go's regexp; over-limit Lists are refused", async () => {
    await withBinaryDaemon("tslfbin", "256M", { logLevel: "info" }, async (d) => {
      const c = snapshotsClient(d.config.address);
      await c.prepare({ key: "default/1/abc", parent: "", labels: { "containerd.io/gc.root": "2024", k: "Σίσυφος" } });
      await c.view({ key: "v", parent: "", labels: { k: "KELVIN" } });
      // RE2 syntax and semantics: classes, Unicode, case folding (K ~ U+212A), anchors.
      expect(await names(c, ["name~=^default/[0-9]+/"])).toEqual(["default/1/abc"]);
      expect(await names(c, ['labels.k~="^\\\\p{Greek}+$"'])).toEqual(["default/1/abc"]);
      expect(await names(c, ["labels.k~=(?i)^\u212aelvin$"])).toEqual(["v"]);
      expect(await names(c, ["kind~=^(view|active)$,labels.k~=/^[A-Z]+$/"])).toEqual(["v"]);
      expect(await names(c, ['labels."containerd.io/gc.root"~=^20', "name==v"])).toEqual(["default/1/abc", "v"]);
      // Go's errors, and a Perl construct RE2 has not.
      const bad = await errorOf(names(c, ['name~="(?=a)"']));
      expect(bad.code).toBe(Code.InvalidArgument);
      expect(bad.rawMessage).toContain("invalid regexp: error parsing regexp: invalid or unsupported Perl syntax: `(?=`");
      // A limit.
      const many = Array.from({ length: MAX_FILTER_REGEXPS + 1 }, (_, i) => `name~=^x${i}$`);
      const over = await errorOf(names(c, many));
      expect(over.code).toBe(Code.InvalidArgument);
      expect(over.rawMessage).toContain("MAX_FILTER_REGEXPS");
      const long = await errorOf(names(c, ['labels.k~="[a-z]{999}[a-z]{999}[a-z]{999}[a-z]{999}N"']));
      expect(long.code).toBe(Code.InvalidArgument);
      expect(long.rawMessage).toContain("MAX_REGEXP_PROGRAM");
      await c.remove({ key: "v" });
      await c.remove({ key: "default/1/abc" });
    });
  }, 300_000);
});
