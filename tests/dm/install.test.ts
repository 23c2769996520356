/**
 * `thinsnap install --host-root` / `uninstall` with the built executable,
 * against scratch host roots (systemctl stubbed in one, absent in the other):
 *
 * - containerd 1.6's config (version 2): the edited file starts a real
 *   containerd 1.6, which reaches thinsnap through it (plugins, snapshots,
 *   `ctr images import` of the node installer's OCI image from
 *   packaging/image.ts, and `ctr run` inside it); unrelated lines
 *   byte for byte; a second run changes nothing; uninstall restores the file.
 * - a version 3 file (containerd 2.x, given with --containerd-version): it
 *   parses and holds the proxy plugin with exports.root, the transfer
 *   service's unpack_config, CRI's images snapshotter and a runtime handler's
 *   two lines; idempotent; uninstall restores it.
 *
 * Runs in the qemu guest: tests/vm/vmrun -- node_modules/.bin/bun test ./tests/dm/install.test.ts
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "smol-toml";
import { buildInstallerImage, IMAGE_BINARY, sharedLibraries } from "../../packaging/image.ts";
import { revertEdit } from "../../src/install/containerd-config.ts";
import { BACKUP_SUFFIX } from "../../src/install/installer.ts";
import { BINARY_PATH, hostPlatform, systemdUnit, UNIT_PATH } from "../../src/install/snippets.ts";
import { containerdConfig, containerdInstalled, CONTAINERD_BIN, CTR_BIN } from "../kit/containerd.ts";
import { createFilePool, destroyFilePool } from "../kit/cli.ts";
import { Daemon, inDir } from "../kit/daemon.ts";
import { exitOf, REPO, run, socketAccepts, waitFor, type RunResult } from "../kit/process.ts";
import { dm } from "./env.ts";
import { FailureFlag } from "../kit/steps.ts";

const DIST = join(REPO, "dist/thinsnap");
const POOL = "thinsnap-install-test";
const DIR = "/tmp/thinsnap-install-test";
const HOST16 = join(DIR, "host16");
const HOST3 = join(DIR, "host3");
const SOCK = join(DIR, "thinsnap/thinsnap.sock");
const CD = join(DIR, "containerd");
const CONFIG = "/etc/containerd/config.toml";

function skipReason(): string | null {
  if (!dm.available) return dm.reason;
  if (!existsSync(DIST)) return "dist/thinsnap is missing: npm run build";
  if (!containerdInstalled()) return "containerd or ctr is not installed (apt-get install containerd)";
  if (!existsSync("/usr/sbin/runc") && !existsSync("/usr/bin/runc")) return "runc is not installed (apt-get install runc)";
  if (!existsSync("/bin/busybox")) return "/bin/busybox is missing (apt-get install busybox-static)";
  return null;
}
const SKIP = skipReason();
if (SKIP !== null) console.warn(`tests/dm/install.test.ts SKIPPED: ${SKIP}`);

/** containerd 1.6's config as an operator has it: the test's settings plus CRI lines, comments and a CRLF-free mix of styles. */
function v2Config(): string {
  const base = containerdConfig({ dir: CD }, { root: join(CD, "root"), state: join(CD, "state"), address: join(CD, "containerd.sock") });
  return `# operator's containerd config
${base}
# CRI is disabled in the guest; its lines must survive as they are.
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"   # pinned

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`;
}

const V3 = `version = 3
root = '/var/lib/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'   # the default
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
    runtime_type = 'io.containerd.kata.v2'
    privileged_without_host_devices = true

  [plugins.'io.containerd.transfer.v1.local']
    max_concurrent_downloads = 3
`;

const thinsnap = (args: string[]): Promise<RunResult> => run([DIST, ...args], { timeoutMs: 120_000 });
async function ok(args: string[]): Promise<string> {
  const r = await thinsnap(args);
  if (r.code !== 0) throw new Error(`thinsnap ${args.join(" ")}: exit ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** A scratch root with busybox's sh and, when `stub`, a systemctl that logs its arguments to /systemctl.log. */
function scratchRoot(root: string, config: string, stub: boolean): void {
  mkdirSync(join(root, "etc/containerd"), { recursive: true });
  writeFileSync(join(root, CONFIG), config);
  if (!stub) return;
  mkdirSync(join(root, "bin"), { recursive: true });
  mkdirSync(join(root, "usr/bin"), { recursive: true });
  copyFileSync("/bin/busybox", join(root, "bin/busybox"));
  symlinkSync("busybox", join(root, "bin/sh"));
  writeFileSync(join(root, "usr/bin/systemctl"), '#!/bin/sh\necho "$*" >> /systemctl.log\n', { mode: 0o755 });
}

const systemctlLog = (root: string): string[] =>
  existsSync(join(root, "systemctl.log")) ? readFileSync(join(root, "systemctl.log"), "utf8").trim().split("\n") : [];

/** Every line of `original` is in `edited`, in order, unchanged (the replaced one kept after its marker). */
function expectLinesKept(original: string, edited: string): void {
  const res = edited.split("\n");
  let j = 0;
  for (const line of original.split("\n")) {
    while (j < res.length && res[j] !== line && res[j] !== `# thinsnap-install: was: ${line}`) j++;
    expect({ line, found: j < res.length }).toEqual({ line, found: true });
    j++;
  }
}

describe.skipIf(SKIP !== null)("thinsnap install --host-root", () => {
  let d: Daemon | undefined;
  let containerd: ChildProcess | undefined;
  let containerdExit: Promise<number> | undefined;
  const flag = new FailureFlag();
  const original16 = v2Config();

  /** Test bodies: a failure is remembered so afterAll prints the daemons' logs. */
  const { step } = flag;

  const ctr = (...args: string[]): Promise<RunResult> =>
    run([CTR_BIN, "--address", join(CD, "containerd.sock"), "--namespace", "default", ...args], { timeoutMs: 300_000 });
  async function ctrOk(...args: string[]): Promise<string> {
    const r = await ctr(...args);
    if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: exit ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  beforeAll(async () => {
    await destroyFilePool(POOL, { deleteFiles: true }).catch(() => undefined);
    rmSync(DIR, { recursive: true, force: true });
    mkdirSync(DIR, { recursive: true });
    scratchRoot(HOST16, original16, true);
    scratchRoot(HOST3, V3, false);
  }, 60_000);

  afterAll(async () => {
    if (containerd && containerdExit) {
      containerd.kill("SIGTERM");
      await containerdExit;
    }
    if (d) await d.stop();
    if (flag.failed) {
      if (d) console.error(`---- thinsnap log (tail) ----\n${d.logs().split("\n").slice(-60).join("\n")}`);
      try {
        console.error(`---- containerd log (tail) ----\n${readFileSync(join(CD, "containerd.log"), "utf8").split("\n").slice(-60).join("\n")}`);
      } catch {
        // containerd never started
      }
    }
    await destroyFilePool(POOL, { deleteFiles: true }).catch(() => undefined);
    rmSync(DIR, { recursive: true, force: true });
  }, 120_000);

  test("containerd 1.6 (version 2): install edits the config, installs the binary, unit and config, runs systemctl", step(async () => {
    const out = await ok(["install", "--host-root", HOST16, "--address", SOCK]);
    expect(out).toContain("containerd: not found on the host (the config file's version decides)");
    expect(out).toMatch(/containerd config \/etc\/containerd\/config\.toml \(version 2\): edited/);
    expect(readFileSync(join(HOST16, BINARY_PATH)).equals(readFileSync(DIST))).toBe(true);
    expect(statSync(join(HOST16, BINARY_PATH)).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(HOST16, UNIT_PATH), "utf8")).toBe(systemdUnit());
    expect(readFileSync(join(HOST16, UNIT_PATH), "utf8")).toBe(readFileSync(join(REPO, "packaging/thinsnap.service"), "utf8"));
    expect(readFileSync(join(HOST16, "/etc/thinsnap/config.toml"), "utf8")).toContain(`address = "${SOCK}"`);
    expect(systemctlLog(HOST16)).toEqual(["daemon-reload", "enable thinsnap.service", "restart thinsnap.service", "restart containerd.service"]);

    const edited = readFileSync(join(HOST16, CONFIG), "utf8");
    expect(readFileSync(join(HOST16, CONFIG + BACKUP_SUFFIX), "utf8")).toBe(original16);
    expect(revertEdit(edited).text).toBe(original16);
    expectLinesKept(original16, edited);
    const doc = parse(edited) as { proxy_plugins: Record<string, unknown>; plugins: Record<string, { containerd?: { snapshotter?: string } }> };
    expect(doc.proxy_plugins.thinsnap).toEqual({ type: "snapshot", address: SOCK, exports: { root: "/var/lib/thinsnap" } });
    expect(doc.plugins["io.containerd.grpc.v1.cri"]!.containerd!.snapshotter).toBe("thinsnap");
    // kubelet's image filesystem under containerd 1.6: <containerd root>/io.containerd.snapshotter.v1.thinsnap
    expect(existsSync(join(HOST16, CD, "root/io.containerd.snapshotter.v1.thinsnap"))).toBe(true);
  }), 120_000);

  test("a second run changes nothing", step(async () => {
    const before = readFileSync(join(HOST16, CONFIG), "utf8");
    const mtime = statSync(join(HOST16, CONFIG)).mtimeMs;
    const out = await ok(["install", "--host-root", HOST16, "--address", SOCK]);
    expect(out).toContain("already has every thinsnap setting");
    expect(out).toContain("up to date");
    expect(readFileSync(join(HOST16, CONFIG), "utf8")).toBe(before);
    expect(statSync(join(HOST16, CONFIG)).mtimeMs).toBe(mtime);
    expect(systemctlLog(HOST16).slice(4)).toEqual(["enable thinsnap.service", "start thinsnap.service"]);
  }), 120_000);

  test("containerd 1.6 starts with the edited config and reaches thinsnap; the installer image imports and runs", step(async () => {
    await createFilePool({ name: POOL, dataFile: join(DIR, "pool.data"), dataSize: "1G", binary: DIST });
    const o = inDir(join(DIR, "thinsnap"), { poolName: POOL, baseImageSize: "64MB", logLevel: "info" });
    d = await Daemon.serving({ ...o, config: { ...o.config, address: SOCK }, binary: DIST, readyTimeoutMs: 120_000 });
    mkdirSync(join(CD, "root"), { recursive: true });
    mkdirSync(join(CD, "state"), { recursive: true });
    const log = openSync(join(CD, "containerd.log"), "a");
    try {
      containerd = spawn(CONTAINERD_BIN, ["--config", join(HOST16, CONFIG)], { stdio: ["ignore", log, log], detached: true });
    } finally {
      closeSync(log);
    }
    containerdExit = exitOf(containerd);
    let status: number | null = null;
    void containerdExit.then((c) => (status = c));
    await waitFor("containerd", async () => (await socketAccepts(join(CD, "containerd.sock"))) && (await ctr("version")).code === 0, {
      timeoutMs: 60_000,
      intervalMs: 200,
      died: () => (status === null ? null : `containerd exited with ${status}`),
    });
    expect(await ctrOk("plugins", "ls")).toMatch(/^io\.containerd\.snapshotter\.v1\s+thinsnap\s+-\s+ok\s*$/m);
    await ctrOk("snapshots", "--snapshotter", "thinsnap", "prepare", "install-k1");
    expect(await ctrOk("snapshots", "--snapshotter", "thinsnap", "ls")).toContain("install-k1");
    await ctrOk("snapshots", "--snapshotter", "thinsnap", "rm", "install-k1");

    // The node installer's image as packaging/image.ts builds it (busybox, dist/thinsnap's C libraries), with a
    // small dynamically linked stand-in for the 105 MiB binary (its layer under TCG would take minutes; the host's
    // unit test builds and checks the real image): containerd imports it into thinsnap, and in a container the
    // stand-in runs on the image's loader and libc, and busybox's chroot (the installer's way to the host) works.
    const libs = sharedLibraries(DIST);
    const standIn = "/bin/echo";
    for (const l of sharedLibraries(standIn)) expect(libs).toContain(l);
    const t1 = performance.now();
    const img = buildInstallerImage({ binary: standIn, libs, out: join(DIR, "image.tar"), name: "docker.io/thinsnap/installer-test:1" });
    expect(await ctrOk("images", "import", "--snapshotter", "thinsnap", img.path)).toContain("docker.io/thinsnap/installer-test:1");
    const outp = await ctrOk("run", "--rm", "--snapshotter", "thinsnap", img.name, "installer-run", "/bin/sh", "-c", `${IMAGE_BINARY} linked-ok && chroot / /bin/echo chroot-ok`);
    expect(outp).toBe("linked-ok\nchroot-ok\n");
    console.log(`[install.test] image import and run: ${Math.round(performance.now() - t1)} ms`);
    await ctrOk("images", "rm", "--sync", img.name);
  }), 600_000);

  test("uninstall restores containerd's config byte for byte and removes what install added", step(async () => {
    const out = await ok(["uninstall", "--host-root", HOST16]);
    expect(out).toContain("restored");
    expect(readFileSync(join(HOST16, CONFIG), "utf8")).toBe(original16);
    expect(existsSync(join(HOST16, BINARY_PATH))).toBe(false);
    expect(existsSync(join(HOST16, UNIT_PATH))).toBe(false);
    expect(existsSync(join(HOST16, "/etc/thinsnap/config.toml"))).toBe(true);
    expect(systemctlLog(HOST16).slice(6)).toEqual(["disable --now thinsnap.service", "daemon-reload", "restart containerd.service"]);
    const again = await ok(["uninstall", "--host-root", HOST16]);
    expect(again).toContain("has no lines of thinsnap install");
    expect(readFileSync(join(HOST16, CONFIG), "utf8")).toBe(original16);
  }), 120_000);

  test("version 3 (containerd 2.x, no systemctl): the result parses and holds every line; idempotent; uninstall restores", step(async () => {
    const args = ["--host-root", HOST3, "--containerd-version", "2.1", "--runtime-handler", "kata", "--cri-default", "--binary", "/bin/busybox"];
    const out = await ok(["install", ...args]);
    expect(out).toContain("containerd: 2.1.0");
    expect(out).toContain("the host has no systemctl");
    const edited = readFileSync(join(HOST3, CONFIG), "utf8");
    expectLinesKept(V3, edited);
    const doc = parse(edited) as {
      version: number;
      proxy_plugins: Record<string, unknown>;
      plugins: Record<string, Record<string, unknown>>;
    };
    expect(doc.version).toBe(3);
    expect(doc.proxy_plugins.thinsnap).toEqual({ type: "snapshot", address: "/run/thinsnap/thinsnap.sock", exports: { root: "/var/lib/thinsnap" } });
    const images = doc.plugins["io.containerd.cri.v1.images"] as { snapshotter: string; runtime_platforms: Record<string, { snapshotter: string }> };
    expect(images.snapshotter).toBe("thinsnap");
    expect(images.runtime_platforms.kata!.snapshotter).toBe("thinsnap");
    const runtime = doc.plugins["io.containerd.cri.v1.runtime"] as { containerd: { runtimes: Record<string, Record<string, unknown>> } };
    expect(runtime.containerd.runtimes.kata).toEqual({ runtime_type: "io.containerd.kata.v2", privileged_without_host_devices: true, snapshotter: "thinsnap" });
    const transfer = doc.plugins["io.containerd.transfer.v1.local"] as { max_concurrent_downloads: number; unpack_config: unknown[] };
    expect(transfer.max_concurrent_downloads).toBe(3);
    expect(transfer.unpack_config).toContainEqual({ platform: hostPlatform(), snapshotter: "thinsnap" });
    expect(transfer.unpack_config).toContainEqual(expect.objectContaining({ snapshotter: "overlayfs" }));

    expect(await ok(["install", ...args])).toContain("already has every thinsnap setting");
    expect(readFileSync(join(HOST3, CONFIG), "utf8")).toBe(edited);
    await ok(["uninstall", "--host-root", HOST3]);
    expect(readFileSync(join(HOST3, CONFIG), "utf8")).toBe(V3);
  }), 120_000);

  test("--dry-run as a non-root user changes nothing", step(async () => {
    const r = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", DIST, "install", "--dry-run", "--host-root", HOST3, "--containerd-version", "2.1"], { encoding: "utf8" });
    if (r.error) {
      console.warn(`dry-run as nobody skipped: ${r.error.message}`);
      return;
    }
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('+    snapshotter = "thinsnap"  # thinsnap-install: added');
    expect(readFileSync(join(HOST3, CONFIG), "utf8")).toBe(V3);
  }), 60_000);
});
