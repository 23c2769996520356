/**
 * `npm run image`: the OCI image of the node installer (packaging/kubernetes/),
 * built from dist/thinsnap without a container engine, as an OCI-layout tarball
 * (`ctr images import`, `skopeo copy oci-archive:…`, `crane push`):
 *
 *   layer 1: busybox (static) with sh, chroot, sleep, …: the DaemonSet's shell,
 *            and chroot, through which `thinsnap install --host-root` runs the
 *            host's containerd and systemctl
 *   layer 2: the C libraries dist/thinsnap links (ldd), at their paths
 *   layer 3: /usr/bin/thinsnap
 *
 *   bun packaging/image.ts [--binary dist/thinsnap] [--out dist/thinsnap-image.tar] [--name NAME] [--gzip]
 *
 * Deterministic (tests/kit/oci-image.ts's tar writer: fixed owners and mtimes).
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { goArch, MEDIA, tar, type Descriptor, type TarEntry } from "../tests/kit/oci-image.ts";

export const IMAGE_NAME = `ghcr.io/thinsnap/thinsnap:${pkg.version}`;
export const IMAGE_BINARY = "/usr/bin/thinsnap";
const BUSYBOX = "/bin/busybox";
/** Applets the DaemonSet's script and the installer use. */
const APPLETS = ["sh", "chroot", "sleep", "cat", "echo", "ls", "test", "true", "mkdir", "rm", "kill"] as const;

export interface InstallerImageOptions {
  binary: string;
  out: string;
  name?: string;
  gzip?: boolean;
  /** Shared libraries to put in the image (default: what `ldd binary` lists). */
  libs?: string[];
  busybox?: string;
}

export interface InstallerImage {
  path: string;
  name: string;
  manifest: Descriptor;
  layers: Descriptor[];
  diffIds: string[];
  size: number;
}

const sha256 = (b: Uint8Array): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** The absolute paths `ldd` resolves for an ELF executable (the loader included). */
export function sharedLibraries(binary: string): string[] {
  const r = spawnSync("ldd", [binary], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ldd ${binary} failed: ${r.stderr || r.stdout}`);
  const libs: string[] = [];
  for (const line of r.stdout.split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

function dirsOf(paths: string[]): TarEntry[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    for (let d = dirname(p); d !== "/" && d !== "."; d = dirname(d)) dirs.add(d);
  }
  return [...dirs].sort().map((d): TarEntry => ({ type: "dir", path: d }));
}

export function buildInstallerImage(o: InstallerImageOptions): InstallerImage {
  const name = o.name ?? IMAGE_NAME;
  const libs = o.libs ?? sharedLibraries(o.binary);
  const layerTars: Buffer[] = [
    tar([
      { type: "dir", path: "bin" },
      { type: "file", path: "bin/busybox", data: readFileSync(o.busybox ?? BUSYBOX), mode: 0o755 },
      ...APPLETS.map((a): TarEntry => ({ type: "symlink", path: `bin/${a}`, target: "busybox" })),
      { type: "dir", path: "host" },
      { type: "dir", path: "tmp", mode: 0o1777 },
    ]),
    // The real file under the path ldd printed (libc.so.6 is often a symlink).
    tar([...dirsOf(libs), ...libs.map((l): TarEntry => ({ type: "file", path: l, data: readFileSync(realpathSync(l)), mode: 0o755 }))]),
    tar([...dirsOf([IMAGE_BINARY]), { type: "file", path: IMAGE_BINARY, data: readFileSync(o.binary), mode: 0o755 }]),
  ];
  const blobs = new Map<string, Uint8Array>();
  const put = (data: Uint8Array, mediaType: string): Descriptor => {
    const digest = sha256(data);
    blobs.set(digest, data);
    return { mediaType, digest, size: data.length };
  };
  const diffIds = layerTars.map(sha256);
  const layers = layerTars.map((t) => (o.gzip ? put(Bun.gzipSync(new Uint8Array(t), { level: 6 }), MEDIA.layerGzip) : put(t, MEDIA.layer)));
  const created = "1970-01-01T00:00:00Z";
  const config = put(
    Buffer.from(
      JSON.stringify({
        created,
        architecture: goArch(),
        os: "linux",
        config: { Env: ["PATH=/usr/bin:/bin"], Cmd: [IMAGE_BINARY, "--help"], WorkingDir: "/" },
        rootfs: { type: "layers", diff_ids: diffIds },
        history: ["busybox", "C libraries of thinsnap", "thinsnap"].map((w) => ({ created, created_by: `packaging/image.ts: ${w}` })),
      }),
    ),
    MEDIA.config,
  );
  const manifest = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA.manifest, config, layers })), MEDIA.manifest);
  const tag = /:([\w][\w.-]{0,127})$/.exec(name.slice(name.lastIndexOf("/") + 1))?.[1] ?? "latest";
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA.index,
    manifests: [
      {
        ...manifest,
        annotations: { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag },
        platform: { architecture: goArch(), os: "linux" },
      },
    ],
  };
  const archive = tar([
    { type: "file", path: "oci-layout", data: JSON.stringify({ imageLayoutVersion: "1.0.0" }) },
    { type: "file", path: "index.json", data: JSON.stringify(index) },
    { type: "dir", path: "blobs" },
    { type: "dir", path: "blobs/sha256" },
    ...[...blobs].map(([d, data]): TarEntry => ({ type: "file", path: `blobs/sha256/${d.slice("sha256:".length)}`, data })),
  ]);
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, archive);
  return { path: o.out, name, manifest, layers, diffIds, size: archive.length };
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const opt = (flag: string, dflt: string): string => {
    const i = args.indexOf(flag);
    return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
  };
  const t0 = performance.now();
  const img = buildInstallerImage({
    binary: opt("--binary", "dist/thinsnap"),
    out: opt("--out", "dist/thinsnap-image.tar"),
    name: opt("--name", IMAGE_NAME),
    gzip: args.includes("--gzip"),
  });
  console.log(`built ${img.path} (${(img.size / 2 ** 20).toFixed(1)} MiB, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  console.log(`  image     ${img.name}`);
  console.log(`  manifest  ${img.manifest.digest}`);
  console.log(`  load it:  ctr -n k8s.io images import ${img.path}   (or: skopeo copy oci-archive:${img.path} docker://REGISTRY/thinsnap:TAG)`);
}
