/**
 * Builds a small multi-layer OCI image as an OCI-layout tarball, locally (no
 * registry), for `ctr images import`:
 *
 *   layer 1: /bin/busybox (the host's static busybox) + applet symlinks
 *            (sh, echo, cat, ls, ...), and the usual empty directories
 *   layer i (2..N): /layers/<i>.txt ("layer i"), and each layer overwrites
 *            /layers/top.txt with its number; layer 3 deletes layer 2's
 *            /layers/gone.txt with a whiteout
 *
 * The tarball holds oci-layout, index.json and blobs/sha256/*; the index's
 * manifest descriptor carries io.containerd.image.name (containerd's importer
 * names the image after it) and org.opencontainers.image.ref.name.
 *
 *   const img = buildImage({ out: "/tmp/x/image.tar", name: "docker.io/library/thinsnap-demo:latest" });
 *   await c.ctrOk("images", "import", "--snapshotter", "thinsnap", img.path);
 *
 * Everything is deterministic (fixed mtimes, owners, order): the same inputs
 * give the same digests. Tars are written here (ustar), no tar binary needed.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export const BUSYBOX = "/bin/busybox";

/** Applets linked in layer 1. */
export const APPLETS: readonly string[] = [
  "sh", "echo", "cat", "ls", "mkdir", "rm", "mv", "cp", "ln", "touch", "sleep", "true", "false", "test", "[",
  "id", "uname", "env", "wc", "head", "tail", "grep", "sed", "stat", "sync", "df", "du", "mount", "find", "md5sum",
  "sha256sum", "dd", "hostname", "date",
];

// -------------------------------------------------------------------- tar

/** Extended attributes (PAX SCHILY.xattr.NAME records, as docker and containerd write and read them). */
export type Xattrs = Record<string, string>;

export type TarEntry =
  | { type: "dir"; path: string; mode?: number; xattrs?: Xattrs }
  | { type: "file"; path: string; data: Uint8Array | string; mode?: number; xattrs?: Xattrs }
  | { type: "symlink"; path: string; target: string }
  /** A hard link to `target`, an earlier file of the same archive (a path, like `path`). */
  | { type: "hardlink"; path: string; target: string };

function octal(n: number, width: number): string {
  // width-1 octal digits and a NUL
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

function putString(buf: Buffer, off: number, len: number, s: string): void {
  const b = Buffer.from(s, "utf8");
  if (b.length > len) throw new Error(`tar: field too long (${len}): ${s}`);
  b.copy(buf, off);
}

/** ustar's split of a path into prefix (≤155) and name (≤100) bytes; null if it does not fit (a PAX path record is needed). */
function ustarSplit(name: string): { prefix: string; base: string } | null {
  if (Buffer.byteLength(name) <= 100) return { prefix: "", base: name };
  const cut = name.lastIndexOf("/", 155);
  if (cut <= 0 || Buffer.byteLength(name.slice(0, cut)) > 155 || Buffer.byteLength(name.slice(cut + 1)) > 100) return null;
  return { prefix: name.slice(0, cut), base: name.slice(cut + 1) };
}

/** One PAX record: "LEN key=value\n", LEN counting itself. */
function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return Buffer.from(`${len}${body}`, "utf8");
}

/** A PAX extended header (type x) for the next entry, or nothing if it needs none. */
function paxHeader(path: string, linkname: string, xattrs: Xattrs | undefined): Buffer[] {
  const recs: Buffer[] = [];
  if (ustarSplit(path) === null) recs.push(paxRecord("path", path));
  if (Buffer.byteLength(linkname) > 100) recs.push(paxRecord("linkpath", linkname));
  for (const [k, v] of Object.entries(xattrs ?? {})) recs.push(paxRecord(`SCHILY.xattr.${k}`, v));
  if (recs.length === 0) return [];
  const data = Buffer.concat(recs);
  const pad = (512 - (data.length % 512)) % 512;
  return [header("PaxHeaders/entry", 0o644, data.length, "x"), data, Buffer.alloc(pad)];
}

function header(name: string, mode: number, size: number, type: string, linkname = ""): Buffer {
  const h = Buffer.alloc(512);
  // A path or link target too long for ustar is carried by the PAX header before this one; here it is cut.
  const split = ustarSplit(name) ?? { prefix: "", base: Buffer.from(name).subarray(0, 100).toString("latin1") };
  const { prefix, base } = split;
  if (Buffer.byteLength(linkname) > 100) linkname = Buffer.from(linkname).subarray(0, 100).toString("latin1");
  putString(h, 0, 100, base);
  putString(h, 100, 8, octal(mode & 0o7777, 8));
  putString(h, 108, 8, octal(0, 8)); // uid
  putString(h, 116, 8, octal(0, 8)); // gid
  putString(h, 124, 12, octal(size, 12));
  putString(h, 136, 12, octal(0, 12)); // mtime: the epoch
  h.fill(0x20, 148, 156); // checksum computed with blanks
  putString(h, 156, 1, type);
  putString(h, 157, 100, linkname);
  putString(h, 257, 6, "ustar\0");
  putString(h, 263, 2, "00");
  putString(h, 265, 32, "root");
  putString(h, 297, 32, "root");
  putString(h, 345, 155, prefix);
  let sum = 0;
  for (const b of h) sum += b;
  putString(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** A ustar archive of the entries, in the given order, owned by root, mtime 0. */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  // A hard link's header carries its target's mode, as tar writes it: unpackers chmod the link (the shared inode) to it.
  const fileModes = new Map<string, number>();
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, "");
    if (e.type === "dir") {
      const p = path.endsWith("/") ? path : `${path}/`;
      parts.push(...paxHeader(p, "", e.xattrs), header(p, e.mode ?? 0o755, 0, "5"));
    } else if (e.type === "symlink") {
      parts.push(...paxHeader(path, e.target, undefined), header(path, 0o777, 0, "2", e.target));
    } else if (e.type === "hardlink") {
      const target = e.target.replace(/^\/+/, "");
      parts.push(...paxHeader(path, target, undefined), header(path, fileModes.get(target) ?? 0o644, 0, "1", target));
    } else {
      const data = typeof e.data === "string" ? Buffer.from(e.data, "utf8") : Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength);
      fileModes.set(path, e.mode ?? 0o644);
      parts.push(...paxHeader(path, "", e.xattrs), header(path, e.mode ?? 0o644, data.length, "0"), data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ------------------------------------------------------------------ image

export const MEDIA = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageOptions {
  /** Output tarball path (its directory is created). */
  out: string;
  /** Full image name, e.g. "docker.io/library/thinsnap-demo:latest". */
  name: string;
  /** Total number of layers, >= 1 (default 3). */
  layers?: number;
  /** gzip the layers (default true). */
  gzip?: boolean;
  /** Image default command (default ["/bin/sh"]). */
  cmd?: string[];
  /** busybox binary to put in layer 1 (default /bin/busybox, must be static). */
  busybox?: string;
}

export interface BuiltImage {
  path: string;
  name: string;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  /** sha256 of each uncompressed layer tar (the config's rootfs.diff_ids). */
  diffIds: string[];
  /**
   * The chain IDs: containerd names each unpacked layer's committed snapshot
   * after its chain ID (identity.ChainIDs).
   */
  chainIds: string[];
  /** Bytes of the tarball. */
  size: number;
  /** What the container sees at /layers/top.txt: the last layer's number. */
  topText: string;
}

const sha256 = (b: Uint8Array | string): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

export function goArch(): string {
  const map: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x" };
  return map[process.arch] ?? process.arch;
}

/** identity.ChainIDs: chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]). */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : sha256(`${prev} ${d}`));
  }
  return out;
}

/** A minimal root filesystem: busybox and its applets, /etc/passwd and group, the usual empty directories. */
export function baseRootfs(busybox = BUSYBOX): TarEntry[] {
  return [
    { type: "dir", path: "bin" },
    { type: "file", path: "bin/busybox", data: readFileSync(busybox), mode: 0o755 },
    ...APPLETS.map((a): TarEntry => ({ type: "symlink", path: `bin/${a}`, target: "busybox" })),
    { type: "dir", path: "dev" },
    { type: "dir", path: "etc" },
    { type: "file", path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/sh\n" },
    { type: "file", path: "etc/group", data: "root:x:0:\n" },
    { type: "dir", path: "proc", mode: 0o555 },
    { type: "dir", path: "root", mode: 0o700 },
    { type: "dir", path: "sys", mode: 0o555 },
    { type: "dir", path: "tmp", mode: 0o1777 },
  ];
}

/** The uncompressed tar of layer `i` (1-based) of an image with `n` layers. */
export function layerTar(i: number, busybox = BUSYBOX): Buffer {
  if (i === 1) {
    const entries: TarEntry[] = [
      ...baseRootfs(busybox),
      { type: "dir", path: "layers" },
      { type: "file", path: "layers/1.txt", data: "layer 1\n" },
      { type: "file", path: "layers/top.txt", data: "1\n" },
    ];
    return tar(entries);
  }
  const entries: TarEntry[] = [
    { type: "dir", path: "layers" },
    { type: "file", path: `layers/${i}.txt`, data: `layer ${i}\n` },
    { type: "file", path: "layers/top.txt", data: `${i}\n` },
  ];
  if (i === 2) entries.push({ type: "file", path: "layers/gone.txt", data: "deleted by layer 3\n" });
  if (i === 3) entries.push({ type: "file", path: "layers/.wh.gone.txt", data: "" });
  return tar(entries);
}

/** Builds the image tarball; see the file comment for its contents. */
export function buildImage(o: ImageOptions): BuiltImage {
  const n = o.layers ?? 3;
  if (!Number.isInteger(n) || n < 1) throw new Error(`layers must be >= 1, got ${n}`);
  const tars = Array.from({ length: n }, (_, i) => layerTar(i + 1, o.busybox));
  return { ...writeOciImage({ out: o.out, name: o.name, gzip: o.gzip, cmd: o.cmd }, tars), topText: `${n}\n` };
}

export interface LayoutOptions {
  out: string;
  name: string;
  /** gzip the layers (default true). */
  gzip?: boolean;
  /** Image default command (default ["/bin/sh"]). */
  cmd?: string[];
  /** gzip level (default 6). */
  level?: number;
}

/** Writes an OCI-layout tarball of an image made of these uncompressed layer tars (bottom first). */
export function writeOciImage(o: LayoutOptions, tars: Uint8Array[]): Omit<BuiltImage, "topText"> {
  const gzip = o.gzip !== false;
  const blobs = new Map<string, Uint8Array>();
  const put = (data: Uint8Array, mediaType: string): Descriptor => {
    const digest = sha256(data);
    blobs.set(digest, data);
    return { mediaType, digest, size: data.length };
  };

  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const t of tars) {
    diffIds.push(sha256(t));
    layers.push(gzip ? put(Bun.gzipSync(new Uint8Array(t), { level: (o.level ?? 6) as 6 }), MEDIA.layerGzip) : put(t, MEDIA.layer));
  }
  const created = "1970-01-01T00:00:00Z";
  const configJson = {
    created,
    architecture: goArch(),
    os: "linux",
    config: {
      Env: ["PATH=/bin"],
      Cmd: o.cmd ?? ["/bin/sh"],
      WorkingDir: "/",
    },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created, created_by: `thinsnap tests/kit: layer ${i + 1}` })),
  };
  const config = put(Buffer.from(JSON.stringify(configJson)), MEDIA.config);
  const manifestJson = { schemaVersion: 2, mediaType: MEDIA.manifest, config, layers };
  const manifest = put(Buffer.from(JSON.stringify(manifestJson)), MEDIA.manifest);
  const tag = /:([\w][\w.-]{0,127})$/.exec(o.name.slice(o.name.lastIndexOf("/") + 1))?.[1] ?? "latest";
  const indexEntry: Descriptor & { platform: { architecture: string; os: string } } = {
    ...manifest,
    annotations: { "io.containerd.image.name": o.name, "org.opencontainers.image.ref.name": tag },
    platform: { architecture: goArch(), os: "linux" },
  };
  const index = { schemaVersion: 2, mediaType: MEDIA.index, manifests: [indexEntry] };

  const entries: TarEntry[] = [
    { type: "file", path: "oci-layout", data: JSON.stringify({ imageLayoutVersion: "1.0.0" }) },
    { type: "file", path: "index.json", data: JSON.stringify(index) },
    { type: "dir", path: "blobs" },
    { type: "dir", path: "blobs/sha256" },
    ...[...blobs].map(([d, data]): TarEntry => ({ type: "file", path: `blobs/sha256/${d.slice("sha256:".length)}`, data })),
  ];
  const archive = tar(entries);
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, archive);
  return { path: o.out, name: o.name, manifest, config, layers, diffIds, chainIds: chainIds(diffIds), size: archive.length };
}

if (import.meta.main) {
  const [out, name, layers] = process.argv.slice(2);
  if (!out || !name) {
    process.stderr.write("usage: bun tests/kit/oci-image.ts OUT.tar NAME [LAYERS]\n");
    process.exit(2);
  }
  const img = buildImage({ out, name, layers: layers ? Number(layers) : undefined });
  process.stdout.write(`${JSON.stringify(img, null, 2)}\n`);
}
