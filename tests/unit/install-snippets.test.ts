/**
 * One source for what thinsnap prints and packages: packaging/containerd/*.toml
 * and packaging/thinsnap.service are src/install/snippets.ts's texts, and each
 * holds the lines containerd needs.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "smol-toml";
import { DEFAULT_CONFIG_PATH, DEFAULTS, parseConfig } from "../../src/config/config.ts";
import { unifiedDiff } from "../../src/install/diff.ts";
import {
  containerdSnippet,
  defaultPlanOptions,
  nodeConfig,
  PACKAGED_SNIPPETS,
  renderPackagedSnippet,
  systemdUnit,
} from "../../src/install/snippets.ts";

const PACKAGING = join(import.meta.dir, "../../packaging");
const FIX = "run `bun packaging/write-snippets.ts` after changing src/install/snippets.ts";

describe("packaging/ is generated from src/install/snippets.ts", () => {
  test("packaging/containerd/*.toml", () => {
    expect(readdirSync(join(PACKAGING, "containerd")).sort()).toEqual(PACKAGED_SNIPPETS.map((s) => s.file).sort());
    for (const s of PACKAGED_SNIPPETS) {
      const file = readFileSync(join(PACKAGING, "containerd", s.file), "utf8");
      if (file !== renderPackagedSnippet(s)) throw new Error(`packaging/containerd/${s.file} differs: ${FIX}`);
    }
  });

  test("packaging/thinsnap.service", () => {
    const unit = readFileSync(join(PACKAGING, "thinsnap.service"), "utf8");
    if (unit !== systemdUnit()) throw new Error(`packaging/thinsnap.service differs: ${FIX}`);
    expect(unit).toContain(`ExecStart=/usr/local/bin/thinsnap serve --config ${DEFAULT_CONFIG_PATH}\n`);
    expect(unit).toContain("Type=notify\n");
    expect(unit).toContain("Before=containerd.service\n");
  });
});

describe("the snippets hold containerd's lines", () => {
  /** A snippet's value at a path of keys. */
  const doc = (file: string) => {
    const d: unknown = parse(readFileSync(join(PACKAGING, "containerd", file), "utf8"));
    return (...path: string[]): unknown => path.reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], d);
  };

  test("1.6 and 1.7: version 2, proxy plugin, CRI's snapshotter; 1.7 lists thinsnap for the transfer service", () => {
    for (const f of ["containerd-1.6.toml", "containerd-1.7.toml"]) {
      const d = doc(f);
      expect(d("version")).toBe(2);
      expect(d("proxy_plugins", "thinsnap")).toEqual({ type: "snapshot", address: DEFAULTS.address, exports: { root: DEFAULTS.rootPath } });
      expect(d("plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter")).toBe("thinsnap");
    }
    expect(doc("containerd-1.6.toml")("plugins", "io.containerd.transfer.v1.local")).toBeUndefined();
    expect(doc("containerd-1.7.toml")("plugins", "io.containerd.transfer.v1.local", "unpack_config")).toContainEqual({ platform: "linux/amd64", snapshotter: "thinsnap" });
  });

  test("2.x: version 3, exports.root, unpack_config, CRI images snapshotter; kata: both runtime lines", () => {
    const d = doc("containerd-2.x.toml");
    expect(d("version")).toBe(3);
    expect(d("proxy_plugins", "thinsnap", "exports", "root")).toBe(DEFAULTS.rootPath);
    expect(d("plugins", "io.containerd.transfer.v1.local", "unpack_config")).toEqual([
      { platform: "linux/amd64", snapshotter: "overlayfs" },
      { platform: "linux/amd64", snapshotter: "thinsnap" },
    ]);
    expect(d("plugins", "io.containerd.cri.v1.images", "snapshotter")).toBe("thinsnap");
    const k = doc("containerd-2.x-kata.toml");
    expect(k("plugins", "io.containerd.cri.v1.images", "snapshotter")).toBeUndefined();
    expect(k("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "kata", "snapshotter")).toBe("thinsnap");
    expect(k("plugins", "io.containerd.cri.v1.images", "runtime_platforms", "kata", "snapshotter")).toBe("thinsnap");
  });

  test("the printed snippet follows the containerd found", () => {
    const s16 = containerdSnippet(defaultPlanOptions({ major: 1, minor: 6, patch: 20 }));
    expect(s16).toContain("containerd 1.6.20");
    expect(parse(s16)["version"]).toBe(2);
    const s2 = parse(containerdSnippet(defaultPlanOptions({ major: 2, minor: 1, patch: 0 })));
    expect(s2["version"]).toBe(3);
    expect(parse(containerdSnippet(defaultPlanOptions(null)))["version"]).toBe(3);
  });

  test("a node install's thinsnap config loads, with a file-backed pool", () => {
    const c = parseConfig(nodeConfig({ poolName: "p1", dataSize: "20GB", address: DEFAULTS.address }), "config.toml");
    expect(c.poolName).toBe("p1");
    expect(c.address).toBe(DEFAULTS.address);
    expect(c.pool?.dataSize).toBe(20n * 2n ** 30n);
    expect(parseConfig(nodeConfig({ poolName: "p1", dataSize: "20GB", address: "/run/x.sock" }), "c.toml").address).toBe("/run/x.sock");
  });
});

describe("unified diff", () => {
  test("hunks with context, nothing for equal texts", () => {
    const a = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"].join("\n") + "\n";
    const b = a.replace("b\n", "b\nB\n").replace("j\n", "J\n");
    expect(unifiedDiff(a, a, "x", "y")).toBe("");
    expect(unifiedDiff(a, b, "x", "y")).toBe(
      ["--- x", "+++ y", "@@ -1,5 +1,6 @@", " a", " b", "+B", " c", " d", " e", "@@ -7,4 +8,4 @@", " g", " h", " i", "-j", "+J", ""].join("\n"),
    );
    expect(unifiedDiff("", "x\n", "a", "b")).toBe("--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n");
  });
});
