/**
 * A realistic image for the benchmark (no network): 5 gzip layers, ~120 MiB of
 * content, thousands of files of mixed sizes taken from the host's own /usr
 * tree, symlinks, hardlinks, user.* xattrs, whiteouts (files and a directory),
 * an opaque directory and two big incompressible files:
 *
 *   1  busybox + applets, /etc, the usual empty dirs; host files (chunk A)
 *   2  host files (B); /opt/data/blob-a.bin (28 MiB); /app/cache/* (to be made opaque)
 *   3  host files (C), every 53rd with an xattr, every 41st with a symlink beside it
 *   4  host files (D); whiteouts of every 40th file of B and of one directory of A;
 *      /app/cache made opaque with new files; /etc/passwd rewritten
 *   5  /opt/data/blob-b.bin (20 MiB), /app config with an xattr on /app; host files (E)
 *
 * Every layer also hard-links every 97th of its host files (`NAME.hl`).
 * `expectedTree` is what a correct unpack shows at the top layer (pure: the
 * OCI rules for whiteouts, opaque directories and hard links), and
 * `verifyTree` compares a mounted tree with it (types, modes, sizes, content
 * hashes, link targets, xattrs, shared inodes).
 *
 *   bun tests/kit/realistic-image.ts OUT.tar NAME   (writes OUT.tar and OUT.tar.json)
 */
import { createCipheriv, createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync, writeFileSync, type Stats } from "node:fs";
import { dlopen, FFIType } from "bun:ffi";
import { dirname, join } from "node:path";
import { baseRootfs, tar, writeOciImage, type BuiltImage, type TarEntry, type Xattrs } from "./oci-image.ts";

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";

/** What one path of the unpacked tree is. `link`: files with the same link id are one inode (hard links). */
export type Node =
  | { type: "dir"; mode: number; xattrs?: Xattrs }
  | { type: "file"; mode: number; size: number; hash: string; xattrs?: Xattrs; link?: string }
  | { type: "symlink"; target: string };

/** Path (no leading slash) -> node. */
export type Tree = Map<string, Node>;

const clean = (p: string): string => p.replace(/^\/+/, "").replace(/\/+$/, "");
const contentHash = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex").slice(0, 32);
const isUnder = (p: string, dir: string): boolean => p.startsWith(`${dir}/`);

function removeSubtree(tree: Tree, p: string): void {
  tree.delete(p);
  for (const k of [...tree.keys()]) if (isUnder(k, p)) tree.delete(k);
}

function ensureParents(tree: Tree, p: string): void {
  for (let d = dirname(p); d !== "." && d !== "/" && d !== ""; d = dirname(d)) {
    const n = tree.get(d);
    if (n?.type === "dir") return;
    if (n) removeSubtree(tree, d);
    // containerd (archive.Apply) makes missing parents 0755.
    tree.set(d, { type: "dir", mode: 0o755 });
  }
}

/**
 * Applies one layer to the tree below it, as containerd's archive.Apply does:
 * whiteouts and opaque markers hide what the lower layers have (never what
 * this layer adds), a directory over a directory keeps its children, anything
 * else replaces what was there (a directory with its subtree).
 */
export function applyLayer(tree: Tree, entries: readonly TarEntry[]): void {
  const lower = new Set(tree.keys());
  for (const e of entries) {
    const p = clean(e.path);
    const base = p.slice(p.lastIndexOf("/") + 1);
    const dir = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
    if (base === OPAQUE_MARKER) {
      for (const k of [...tree.keys()]) if (lower.has(k) && (dir === "" || isUnder(k, dir))) tree.delete(k);
    } else if (base.startsWith(WHITEOUT_PREFIX)) {
      const victim = (dir ? `${dir}/` : "") + base.slice(WHITEOUT_PREFIX.length);
      if (lower.has(victim)) removeSubtree(tree, victim);
    }
  }
  for (const e of entries) {
    const p = clean(e.path);
    const base = p.slice(p.lastIndexOf("/") + 1);
    if (base.startsWith(WHITEOUT_PREFIX)) continue;
    ensureParents(tree, p);
    const old = tree.get(p);
    if (e.type === "dir") {
      if (old && old.type !== "dir") removeSubtree(tree, p);
      tree.set(p, e.xattrs ? { type: "dir", mode: e.mode ?? 0o755, xattrs: e.xattrs } : { type: "dir", mode: e.mode ?? 0o755 });
      continue;
    }
    if (old) removeSubtree(tree, p);
    if (e.type === "symlink") tree.set(p, { type: "symlink", target: e.target });
    else if (e.type === "hardlink") {
      const t = clean(e.target);
      const target = tree.get(t);
      if (target?.type !== "file") throw new Error(`hard link ${p} -> ${t}: not a file of the tree`);
      const link = target.link ?? t;
      tree.set(t, { ...target, link });
      tree.set(p, { ...target, link });
    } else {
      const data = typeof e.data === "string" ? Buffer.from(e.data, "utf8") : e.data;
      const n: Node = { type: "file", mode: e.mode ?? 0o644, size: data.length, hash: contentHash(data) };
      if (e.xattrs) n.xattrs = e.xattrs;
      tree.set(p, n);
    }
  }
}

export function expectedTree(layers: readonly (readonly TarEntry[])[]): Tree {
  const tree: Tree = new Map();
  for (const l of layers) applyLayer(tree, l);
  return tree;
}

// ------------------------------------------------------------------ host files

interface HostFile {
  path: string;
  kind: "file" | "symlink";
  mode: number;
  size: number;
}

/** Regular files (≤ maxBytes, readable) and symlinks under the roots, depth-first in sorted order. */
function* hostFiles(roots: readonly string[], maxBytes: number): Generator<HostFile> {
  const walk = function* (dir: string): Generator<HostFile> {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(dir, name);
      let st: Stats;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      if (st.isDirectory()) yield* walk(p);
      else if (st.isSymbolicLink()) yield { path: p, kind: "symlink", mode: 0o777, size: 0 };
      else if (st.isFile() && st.size <= maxBytes && (st.mode & 0o444) === 0o444) yield { path: p, kind: "file", mode: st.mode & 0o7777, size: st.size };
    }
  };
  for (const r of roots) yield* walk(r);
}

/** Takes host files from the stream until `bytes` are taken; emits their dirs (host modes) once per layer. */
function chunk(stream: Generator<HostFile>, bytes: number): { entries: TarEntry[]; files: string[] } {
  const entries: TarEntry[] = [];
  const files: string[] = [];
  const dirs = new Set<string>();
  let taken = 0;
  while (taken < bytes) {
    const r = stream.next();
    if (r.done) break;
    const f = r.value;
    const parts = clean(f.path).split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (dirs.has(d)) continue;
      dirs.add(d);
      entries.push({ type: "dir", path: d, mode: lstatSync(`/${d}`).mode & 0o7777 });
    }
    try {
      if (f.kind === "symlink") entries.push({ type: "symlink", path: clean(f.path), target: readlinkSync(f.path) });
      else {
        const data = readFileSync(f.path);
        entries.push({ type: "file", path: clean(f.path), data, mode: f.mode });
        files.push(clean(f.path));
        taken += data.length;
      }
    } catch {
      // unreadable after all: skip
    }
  }
  return { entries, files };
}

/** Deterministic incompressible bytes (AES-128-CTR of zeros under a key derived from the name). */
export function noise(name: string, bytes: number): Buffer {
  const key = createHash("sha256").update(name).digest().subarray(0, 16);
  const c = createCipheriv("aes-128-ctr", key, Buffer.alloc(16));
  return Buffer.concat([c.update(Buffer.alloc(bytes)), c.final()]);
}

const hardlinks = (files: string[]): TarEntry[] =>
  files.filter((_, i) => i % 97 === 96).map((f): TarEntry => ({ type: "hardlink", path: `${f}.hl`, target: f }));

const MiB = 1 << 20;

export interface RealisticOptions {
  /** Scales every byte budget (default 1: ~120 MiB). */
  scale?: number;
  /** Host trees to take files from (default /usr/share, /usr/lib, /usr/include). */
  roots?: string[];
  busybox?: string;
}

/** The five layers' entries (see the file comment). */
export function realisticLayers(o: RealisticOptions = {}): TarEntry[][] {
  const s = o.scale ?? 1;
  const stream = hostFiles(o.roots ?? ["/usr/share", "/usr/lib", "/usr/include"], 1 * MiB);
  const mb = (x: number): number => Math.round(x * s * MiB);

  const a = chunk(stream, mb(14));
  const l1: TarEntry[] = [
    ...baseRootfs(o.busybox),
    { type: "dir", path: "app" },
    ...a.entries,
    ...hardlinks(a.files),
  ];

  const b = chunk(stream, mb(20));
  const l2: TarEntry[] = [
    ...b.entries,
    ...hardlinks(b.files),
    { type: "dir", path: "opt" },
    { type: "dir", path: "opt/data" },
    { type: "file", path: "opt/data/blob-a.bin", data: noise("blob-a", mb(28)) },
    { type: "dir", path: "app" },
    { type: "dir", path: "app/cache", mode: 0o750 },
    ...Array.from({ length: 40 }, (_, i): TarEntry => ({ type: "file", path: `app/cache/old-${i}`, data: `cached ${i}\n`.repeat(i + 1) })),
  ];

  const c = chunk(stream, mb(16));
  const l3: TarEntry[] = [
    ...c.entries.map((e, i): TarEntry => (e.type === "file" && i % 53 === 0 ? { ...e, xattrs: { "user.thinsnap.layer": `3-${i}` } } : e)),
    ...hardlinks(c.files),
    ...c.files.filter((_, i) => i % 41 === 0).map((f): TarEntry => ({ type: "symlink", path: `${f}.link`, target: f.slice(f.lastIndexOf("/") + 1) })),
  ];

  const d = chunk(stream, mb(12));
  // A directory of A at depth >= 4, from the middle of the chunk: whited out whole.
  const deep = a.files.slice(Math.floor(a.files.length / 2)).find((f) => f.split("/").length >= 5);
  const goneDir = deep ? dirname(deep) : null;
  const wh = (p: string): TarEntry => ({ type: "file", path: `${dirname(p)}/${WHITEOUT_PREFIX}${p.slice(p.lastIndexOf("/") + 1)}`, data: "" });
  // Whiteouts first: containerd removes a whited-out path when it meets the entry, this layer's own files too.
  const l4: TarEntry[] = [
    ...b.files.filter((_, i) => i % 40 === 20).map(wh),
    ...(goneDir ? [wh(goneDir)] : []),
    ...d.entries,
    ...hardlinks(d.files),
    { type: "dir", path: "app" },
    { type: "dir", path: "app/cache", mode: 0o750 },
    { type: "file", path: `app/cache/${OPAQUE_MARKER}`, data: "" },
    ...Array.from({ length: 6 }, (_, i): TarEntry => ({ type: "file", path: `app/cache/new-${i}`, data: `fresh ${i}\n` })),
    { type: "dir", path: "etc" },
    { type: "file", path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n" },
  ];

  const e = chunk(stream, mb(6));
  const l5: TarEntry[] = [
    { type: "dir", path: "opt" },
    { type: "dir", path: "opt/data" },
    { type: "file", path: "opt/data/blob-b.bin", data: noise("blob-b", mb(20)) },
    { type: "dir", path: "app", xattrs: { "user.thinsnap.app": "top" } },
    { type: "file", path: "app/config.json", data: JSON.stringify({ name: "bench", layers: 5 }) },
    { type: "file", path: "app/run.sh", data: "#!/bin/sh\necho ready\n", mode: 0o755 },
    ...e.entries,
    ...hardlinks(e.files),
  ];
  return [l1, l2, l3, l4, l5];
}

export interface RealisticImage extends Omit<BuiltImage, "topText"> {
  /** Per layer: entries, regular files, uncompressed bytes, compressed bytes. */
  layerStats: { entries: number; files: number; hardlinks: number; symlinks: number; whiteouts: number; bytes: number; gzBytes: number }[];
  /** Regular files (hard links counted once) and bytes of the unpacked top layer. */
  files: number;
  bytes: number;
  tree: Tree;
}

export function buildRealisticImage(o: RealisticOptions & { out: string; name: string }): RealisticImage {
  const layers = realisticLayers(o);
  const tars = layers.map((l) => tar(l));
  const img = writeOciImage({ out: o.out, name: o.name, cmd: ["/bin/echo", "ready"] }, tars);
  const tree = expectedTree(layers);
  let files = 0;
  let bytes = 0;
  const links = new Set<string>();
  for (const n of tree.values()) {
    if (n.type !== "file" || (n.link !== undefined && links.has(n.link))) continue;
    if (n.link !== undefined) links.add(n.link);
    files++;
    bytes += n.size;
  }
  const layerStats = layers.map((l, i) => ({
    entries: l.length,
    files: l.filter((e) => e.type === "file" && !e.path.includes(WHITEOUT_PREFIX)).length,
    hardlinks: l.filter((e) => e.type === "hardlink").length,
    symlinks: l.filter((e) => e.type === "symlink").length,
    whiteouts: l.filter((e) => e.path.includes(WHITEOUT_PREFIX)).length,
    bytes: tars[i]!.length,
    gzBytes: img.layers[i]!.size,
  }));
  return { ...img, layerStats, files, bytes, tree };
}

/** JSON form of a built image (the tree as entries), for a guest that did not build it. */
export function saveImageInfo(img: RealisticImage, path: string): void {
  writeFileSync(path, JSON.stringify({ ...img, tree: [...img.tree] }));
}

export function loadImageInfo(path: string): RealisticImage {
  const j = JSON.parse(readFileSync(path, "utf8")) as Omit<RealisticImage, "tree"> & { tree: [string, Node][] };
  return { ...j, tree: new Map(j.tree) };
}

// ------------------------------------------------------------------ verification

let xattrLib: { lgetxattr: (path: Buffer, name: Buffer, value: Buffer, size: bigint) => number | bigint } | null = null;

/** lgetxattr(2) through libc; null if the attribute is absent. */
export function getXattr(path: string, name: string): string | null {
  xattrLib ??= dlopen("libc.so.6", {
    lgetxattr: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
  }).symbols as unknown as typeof xattrLib;
  const buf = Buffer.alloc(4096);
  const n = Number(xattrLib!.lgetxattr(Buffer.from(`${path}\0`), Buffer.from(`${name}\0`), buf, BigInt(buf.length)));
  return n < 0 ? null : buf.subarray(0, n).toString("utf8");
}

/**
 * Compares the tree mounted at root with the expected one; returns the
 * differences (empty = identical). `ignore`: top-level names a filesystem
 * brings along (ext4's lost+found).
 */
export function verifyTree(root: string, expected: Tree, ignore: readonly string[] = ["lost+found"]): string[] {
  const out: string[] = [];
  const seen = new Set<string>();
  const linkIno = new Map<string, number>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(rel ? join(root, rel) : root).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      if (!rel && ignore.includes(name)) continue;
      const full = join(root, p);
      const st = lstatSync(full);
      seen.add(p);
      const want = expected.get(p);
      if (!want) {
        if (out.length < 50) out.push(`unexpected ${p}`);
        if (st.isDirectory()) walk(p);
        continue;
      }
      if (want.type === "dir") {
        if (!st.isDirectory()) out.push(`${p}: not a directory`);
        else {
          if ((st.mode & 0o7777) !== want.mode) out.push(`${p}: mode ${(st.mode & 0o7777).toString(8)}, want ${want.mode.toString(8)}`);
          walk(p);
        }
      } else if (want.type === "symlink") {
        if (!st.isSymbolicLink()) out.push(`${p}: not a symlink`);
        else if (readlinkSync(full) !== want.target) out.push(`${p}: -> ${readlinkSync(full)}, want ${want.target}`);
      } else if (!st.isFile()) out.push(`${p}: not a regular file`);
      else {
        if ((st.mode & 0o7777) !== want.mode) out.push(`${p}: mode ${(st.mode & 0o7777).toString(8)}, want ${want.mode.toString(8)}`);
        if (st.size !== want.size) out.push(`${p}: ${st.size} bytes, want ${want.size}`);
        else if (contentHash(readFileSync(full)) !== want.hash) out.push(`${p}: content differs`);
        if (want.link !== undefined) {
          const ino = linkIno.get(want.link);
          if (ino === undefined) linkIno.set(want.link, st.ino);
          else if (ino !== st.ino) out.push(`${p}: not a hard link of the other ${want.link} links`);
        }
      }
      if (want.type !== "symlink") {
        for (const [k, v] of Object.entries(want.xattrs ?? {})) {
          const got = getXattr(full, k);
          if (got !== v) out.push(`${p}: xattr ${k} = ${JSON.stringify(got)}, want ${JSON.stringify(v)}`);
        }
      }
    }
  };
  walk("");
  for (const p of expected.keys()) if (!seen.has(p) && out.length < 100) out.push(`missing ${p}`);
  return out;
}

if (import.meta.main) {
  const [out, name, scale] = process.argv.slice(2);
  if (!out || !name) {
    process.stderr.write("usage: bun tests/kit/realistic-image.ts OUT.tar NAME [SCALE]\n");
    process.exit(2);
  }
  const t0 = performance.now();
  const img = buildRealisticImage({ out, name, scale: scale ? Number(scale) : 1 });
  saveImageInfo(img, `${out}.json`);
  process.stdout.write(
    `${out}: ${(img.size / MiB).toFixed(1)} MiB tarball, ${img.files} files, ${(img.bytes / MiB).toFixed(1)} MiB unpacked, ` +
      `${img.tree.size} paths; layers ${JSON.stringify(img.layerStats)} (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`,
  );
}
