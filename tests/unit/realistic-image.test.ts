/**
 * The benchmark's realistic image kit: the OCI layer rules of expectedTree
 * (whiteouts, opaque directories, hard links), the tar writer's PAX records
 * (long paths, xattrs) and hard links as GNU tar reads them, and verifyTree.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tar, type TarEntry } from "../kit/oci-image.ts";
import { expectedTree, getXattr, OPAQUE_MARKER, verifyTree } from "../kit/realistic-image.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("expectedTree", () => {
  const l1: TarEntry[] = [
    { type: "dir", path: "a" },
    { type: "file", path: "a/x", data: "x" },
    { type: "file", path: "a/y", data: "y" },
    { type: "dir", path: "a/sub" },
    { type: "file", path: "a/sub/z", data: "z" },
    { type: "dir", path: "c", mode: 0o750 },
    { type: "file", path: "c/old", data: "old" },
    { type: "file", path: "f", data: "file" },
    { type: "hardlink", path: "a/x.hl", target: "a/x" },
  ];
  const l2: TarEntry[] = [
    { type: "file", path: "a/.wh.sub", data: "" },
    { type: "file", path: "a/.wh.x", data: "" },
    { type: "dir", path: "c", mode: 0o750 },
    { type: "file", path: "c/new", data: "new" },
    { type: "file", path: `c/${OPAQUE_MARKER}`, data: "" },
    { type: "dir", path: "f" },
    { type: "file", path: "f/in", data: "in" },
    { type: "file", path: "deep/er/file", data: "d" },
  ];

  test("whiteouts remove a file and a subtree of the lower layers; hard links keep their own path", () => {
    const t = expectedTree([l1, l2]);
    expect(t.has("a/x")).toBe(false);
    expect(t.has("a/sub")).toBe(false);
    expect(t.has("a/sub/z")).toBe(false);
    expect(t.get("a/y")).toMatchObject({ type: "file", size: 1 });
    expect(t.get("a/x.hl")).toMatchObject({ type: "file", link: "a/x" });
  });

  test("an opaque directory hides the lower layers' children, not its own layer's", () => {
    const t = expectedTree([l1, l2]);
    expect(t.has("c/old")).toBe(false);
    expect(t.get("c/new")).toMatchObject({ type: "file" });
    expect(t.get("c")).toEqual({ type: "dir", mode: 0o750 });
  });

  test("a directory replaces a file; missing parents are made 0755", () => {
    const t = expectedTree([l1, l2]);
    expect(t.get("f")).toEqual({ type: "dir", mode: 0o755 });
    expect(t.get("deep")).toEqual({ type: "dir", mode: 0o755 });
    expect(t.get("deep/er")).toEqual({ type: "dir", mode: 0o755 });
  });

  test("a hard link to something that is not a file is an error", () => {
    expect(() => expectedTree([[{ type: "hardlink", path: "l", target: "nothing" }]])).toThrow(/not a file/);
  });
});

describe("tar writer and verifyTree (extracted by GNU tar)", () => {
  const long = `${"d".repeat(60)}/${"e".repeat(60)}/${"f".repeat(60)}/${"g".repeat(90)}`;
  const layer: TarEntry[] = [
    { type: "dir", path: "etc" },
    { type: "file", path: "etc/conf", data: "conf\n", mode: 0o600 },
    { type: "file", path: "etc/attr", data: "attr", xattrs: { "user.thinsnap.test": "value 1" } },
    { type: "symlink", path: "etc/link", target: "conf" },
    { type: "hardlink", path: "etc/conf.hl", target: "etc/conf" },
    { type: "dir", path: long.slice(0, long.lastIndexOf("/")) },
    { type: "file", path: long, data: "long path\n" },
  ];

  const extract = (): string | null => {
    const d = mkdtempSync(join(tmpdir(), "realistic-"));
    dirs.push(d);
    writeFileSync(join(d, "layer.tar"), tar(layer));
    const root = join(d, "root");
    const r = Bun.spawnSync(["sh", "-c", `mkdir ${root} && tar --xattrs --xattrs-include='user.*' -C ${root} -xf ${d}/layer.tar`]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    return root;
  };

  test("a correct tree has no differences; a changed one has", () => {
    const root = extract()!;
    const t = expectedTree([layer]);
    // Some filesystems (tmpfs before 6.6) have no user xattrs: skip that part there.
    const xattrs = getXattr(join(root, "etc/attr"), "user.thinsnap.test") !== null;
    if (!xattrs) t.set("etc/attr", { ...(t.get("etc/attr") as { type: "file"; mode: number; size: number; hash: string }), xattrs: undefined });
    expect(verifyTree(root, t)).toEqual([]);
    if (xattrs) expect(getXattr(join(root, "etc/attr"), "user.thinsnap.test")).toBe("value 1");

    writeFileSync(join(root, "etc/conf"), "cong\n");
    rmSync(join(root, long));
    writeFileSync(join(root, "extra"), "");
    const diff = verifyTree(root, t);
    expect(diff).toContain("etc/conf: content differs");
    expect(diff).toContain(`missing ${long}`);
    expect(diff).toContain("unexpected extra");
  });
});

describe("tar: hard links", () => {
  test("a hard link's header carries its target's mode (unpackers chmod the shared inode to it)", () => {
    const a = tar([
      { type: "file", path: "bin/run", data: "#!/bin/sh\n", mode: 0o755 },
      { type: "hardlink", path: "bin/run.hl", target: "bin/run" },
    ]);
    // ustar: 512-byte header, data padded to 512; the mode is octal at offset 100
    const modeAt = (off: number): number => parseInt(a.subarray(off + 100, off + 107).toString("latin1"), 8);
    const typeAt = (off: number): string => String.fromCharCode(a[off + 156]!);
    expect([typeAt(0), modeAt(0)]).toEqual(["0", 0o755]);
    expect([typeAt(1024), modeAt(1024)]).toEqual(["1", 0o755]);
  });
});
