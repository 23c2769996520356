/**
 * The node installer's OCI image (packaging/image.ts, `npm run image`): the
 * tarball is a valid OCI layout (every blob's digest and size, the config's
 * diff_ids, the index's name annotation) and holds busybox's sh and chroot,
 * the C libraries and the binary. Built from dist/thinsnap when it is there
 * (npm test builds it first), else from a stand-in binary.
 * tests/dm/install.test.ts imports it into containerd.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildInstallerImage, IMAGE_BINARY, IMAGE_NAME, sharedLibraries } from "../../packaging/image.ts";
import { MEDIA } from "../kit/oci-image.ts";

interface Member {
  type: string;
  data: Buffer;
  mode: number;
  link: string;
}

/** The members of a ustar archive (the subset tests/kit/oci-image.ts writes). */
function untar(buf: Buffer): Map<string, Member> {
  const out = new Map<string, Member>();
  const str = (off: number, len: number): string => buf.toString("utf8", off, off + len).replace(/\0.*$/s, "");
  for (let off = 0; off + 512 <= buf.length; ) {
    if (buf.subarray(off, off + 512).every((b) => b === 0)) break;
    const prefix = str(off + 345, 155);
    const name = (prefix ? `${prefix}/` : "") + str(off, 100);
    const size = parseInt(str(off + 124, 12), 8);
    const sum = parseInt(str(off + 148, 8), 8);
    let check = 0;
    for (let i = 0; i < 512; i++) check += i >= 148 && i < 156 ? 0x20 : buf[off + i]!;
    expect(check).toBe(sum);
    out.set(name, { type: str(off + 156, 1), data: buf.subarray(off + 512, off + 512 + size), mode: parseInt(str(off + 100, 8), 8), link: str(off + 157, 100) });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

const sha = (b: Uint8Array): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** Checks the OCI layout; returns the layers' members, in order. */
function validate(path: string, name: string): Map<string, Member>[] {
  const files = untar(readFileSync(path));
  expect(JSON.parse(files.get("oci-layout")!.data.toString())).toEqual({ imageLayoutVersion: "1.0.0" });
  const blob = (d: Desc): Buffer => {
    const b = files.get(`blobs/sha256/${d.digest.slice(7)}`);
    if (!b) throw new Error(`blob ${d.digest} missing`);
    expect(sha(b.data)).toBe(d.digest);
    expect(b.data.length).toBe(d.size);
    return b.data;
  };
  const index = JSON.parse(files.get("index.json")!.data.toString()) as { manifests: Desc[] };
  expect(index.manifests).toHaveLength(1);
  const m = index.manifests[0]!;
  expect(m.annotations?.["io.containerd.image.name"]).toBe(name);
  const manifest = JSON.parse(blob(m).toString()) as { config: Desc; layers: Desc[] };
  const config = JSON.parse(blob(manifest.config).toString()) as { rootfs: { diff_ids: string[] }; config: { Cmd: string[] } };
  expect(config.config.Cmd).toEqual([IMAGE_BINARY, "--help"]);
  return manifest.layers.map((l, i) => {
    const data = l.mediaType === MEDIA.layerGzip ? Buffer.from(Bun.gunzipSync(new Uint8Array(blob(l)))) : blob(l);
    expect(sha(data)).toBe(config.rootfs.diff_ids[i]!);
    return untar(data);
  });
}

const dir = mkdtempSync(join(tmpdir(), "thinsnap-image-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the installer image", () => {
  test("a valid OCI layout with busybox (sh, chroot), the libraries and the binary", () => {
    const binary = join(import.meta.dir, "../../package.json"); // any file stands in for the executable
    const img = buildInstallerImage({ binary, out: join(dir, "small.tar"), libs: ["/bin/busybox"], gzip: true });
    expect(img.name).toBe(IMAGE_NAME);
    const [base, libs, bin] = validate(img.path, IMAGE_NAME);
    expect(base!.get("bin/busybox")!.mode).toBe(0o755);
    expect(base!.get("bin/chroot")).toMatchObject({ type: "2", link: "busybox" });
    expect(base!.get("bin/sh")).toMatchObject({ type: "2", link: "busybox" });
    expect(libs!.has("bin/busybox")).toBe(true);
    expect(bin!.get(IMAGE_BINARY.slice(1))!.data.equals(readFileSync(binary))).toBe(true);
    // Deterministic: the same inputs, the same image.
    const again = buildInstallerImage({ binary, out: join(dir, "again.tar"), libs: ["/bin/busybox"], gzip: true });
    expect(again.manifest.digest).toBe(img.manifest.digest);
  }, 30_000);

  const dist = join(import.meta.dir, "../../dist/thinsnap");
  test.skipIf(!existsSync(dist))("from dist/thinsnap: what `npm run image` builds", () => {
    const libs = sharedLibraries(dist);
    expect(libs.some((l) => /\/libc\.so\.6$/.test(l))).toBe(true);
    expect(libs.some((l) => /ld-linux/.test(l))).toBe(true);
    const img = buildInstallerImage({ binary: dist, out: join(dir, "thinsnap.tar") });
    const [, lib, bin] = validate(img.path, IMAGE_NAME);
    for (const l of libs) expect(lib!.has(l.slice(1))).toBe(true);
    expect(bin!.get(IMAGE_BINARY.slice(1))!.data.length).toBe(readFileSync(dist).length);
    rmSync(img.path);
  }, 60_000);
  if (!existsSync(dist)) console.warn("install-image.test.ts: dist/thinsnap missing, the real image is not built (npm run build)");
});
