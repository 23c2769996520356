/**
 * thinsnap under a REAL containerd (Debian's 1.6, as a proxy snapshotter):
 * a file-backed pool made by `thinsnap pool create`, `thinsnap serve`, and a
 * private containerd with [proxy_plugins.thinsnap]. Then `ctr snapshots`
 * (prepare/commit/view/mounts/usage/ls/info/label/tree/rm, with containerd's
 * error messages), `ctr images import` of a locally built OCI image, `ctr run`
 * with runc, a thinsnap restart under a running containerd, and containerd's
 * GC removing every snapshot again -- checked in thinsnap's own view (its
 * gRPC List), `thinsnap pool status --json` and `thinsnap check`.
 *
 * Runs in the qemu guest: tests/vm/vmrun -- node_modules/.bin/bun test ./tests/dm/containerd.test.ts
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ctrRunMissing, startContainerd, type Containerd } from "../kit/containerd.ts";
import { buildImage, type BuiltImage } from "../kit/oci-image.ts";
import { checkStore, freshFilePool, poolStatus, removeFreshFilePool, type PoolStatusReport } from "../kit/cli.ts";
import { Daemon, inDir } from "../kit/daemon.ts";
import { backendSnapshots, type BackendSnapshot } from "../kit/client.ts";
import { sh, waitFor } from "../kit/process.ts";
import { dm } from "./env.ts";
import { FailureFlag } from "../kit/steps.ts";

const POOL = "thinsnap-ctrd-test";
const DIR = "/tmp/thinsnap-containerd-test";
const MNT = join(DIR, "mnt");
const IMAGE = "docker.io/library/thinsnap-e2e:latest";

const SKIP = dm.available ? ctrRunMissing() : dm.reason;
if (SKIP !== null) console.warn(`tests/dm/containerd.test.ts SKIPPED: ${SKIP}`);

/** Sizes as ctr prints them (progress.Bytes): "8.7 MiB", "0.0 B". */
function parseCtrSize(s: string): number {
  const m = /^([\d.]+) (B|KiB|MiB|GiB|TiB)$/.exec(s.trim());
  if (!m) throw new Error(`not a ctr size: ${JSON.stringify(s)}`);
  const mult: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
  return Number(m[1]) * mult[m[2]!]!;
}

/** Rows of a ctr table (header dropped), split on runs of 2+ blanks or single blanks between tokens. */
function rows(table: string): string[][] {
  return table
    .split("\n")
    .slice(1)
    .filter((l) => l.trim() !== "")
    .map((l) => l.trim().split(/\s+/));
}

/** thinsnap serve in DIR/thinsnap (the same directory again after a restart). */
const startThinsnap = (): Promise<Daemon> =>
  Daemon.serving({ ...inDir(join(DIR, "thinsnap"), { poolName: POOL, baseImageSize: "64MB", logLevel: "debug" }), readyTimeoutMs: 120_000 });

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe.skipIf(SKIP !== null)("containerd 1.6 with thinsnap as its proxy snapshotter", () => {
  let d: Daemon;
  let c: Containerd;
  let img: BuiltImage;
  let start: PoolStatusReport;
  const flag = new FailureFlag();
  const t0 = performance.now();
  const mounted: string[] = [];

  /** Test bodies: a failure is remembered so afterAll prints the daemons' logs. */
  const { step } = flag;

  const S = ["snapshots", "--snapshotter", "thinsnap"];
  const snap = (...args: string[]) => c.ctr(...S, ...args);
  const snapOk = (...args: string[]) => c.ctrOk(...S, ...args);

  async function expectFail(args: string[], message: RegExp): Promise<void> {
    const r = await snap(...args);
    expect({ args, code: r.code }).toEqual({ args, code: 1 });
    expect(r.stderr).toMatch(message);
  }

  /**
   * thinsnap's own list, waiting until `ok` holds: containerd's GC runs
   * asynchronously after deletions. containerd 1.6's scheduler can drop a
   * deletion that commits just as a collection ends (see Containerd.gc), so
   * after a grace period a full collection is forced -- still containerd's
   * GC deciding what to remove -- and that is reported.
   */
  async function backendUntil(what: string, ok: (s: BackendSnapshot[]) => boolean): Promise<BackendSnapshot[]> {
    let last: BackendSnapshot[] = [];
    const poll = async (): Promise<boolean> => ok((last = await backendSnapshots(d.address)));
    try {
      await waitFor(what, poll, { timeoutMs: 10_000, intervalMs: 250 });
      return last;
    } catch {
      console.warn(`[containerd.test] ${what}: not done 10 s after the deletion (containerd 1.6 GC scheduler race); forcing a GC`);
    }
    await c.gc();
    try {
      await waitFor(what, poll, { timeoutMs: 30_000, intervalMs: 250 });
    } catch (e) {
      throw new Error(`${(e as Error).message}; thinsnap has: ${JSON.stringify(last.map((s) => `${s.name} (${s.kind})`))}`);
    }
    return last;
  }

  function mount(dev: string, dir: string, ro = false): void {
    mkdirSync(dir, { recursive: true });
    sh("mount", ["-t", "ext4", ...(ro ? ["-o", "ro"] : []), dev, dir]);
    mounted.push(dir);
  }
  function umount(dir: string): void {
    sh("umount", [dir]);
    mounted.splice(mounted.indexOf(dir), 1);
  }

  /** `ctr snapshots mounts` of an active/view snapshot: the thin device (and checks the whole line). */
  async function deviceOf(key: string, ro: boolean): Promise<string> {
    const out = await snapOk("mounts", MNT, key);
    const m = new RegExp(`^mount -t ext4 (/dev/mapper/${POOL}-snap-\\d+) ${MNT} -o ${ro ? "ro" : ""}\\n$`).exec(out);
    expect({ key, out, matches: m !== null }).toEqual({ key, out, matches: true });
    return m![1]!;
  }

  beforeAll(async () => {
    await freshFilePool(POOL, DIR);
    d = await startThinsnap();
    start = await poolStatus(POOL, d.rootPath);
    c = await startContainerd({ dir: join(DIR, "containerd"), proxySnapshotters: { thinsnap: d.address } });
    img = buildImage({ out: join(DIR, "image.tar"), name: IMAGE, layers: 3 });
    console.log(`[containerd.test] setup ${Math.round(performance.now() - t0)} ms`);
  }, 300_000);

  afterAll(async () => {
    for (const m of [...mounted].reverse()) spawnSync("umount", ["-l", m]);
    if (c && (await c.shutdown()) !== 0) flag.failed = true;
    if (d) {
      const code = await d.stop();
      if (code !== 0) {
        flag.failed = true;
        console.error(`thinsnap serve exited with ${code}`);
      }
    }
    flag.printLogTails(80, { thinsnap: d, containerd: c });
    await removeFreshFilePool(POOL, DIR);
    console.log(`[containerd.test] total ${Math.round(performance.now() - t0)} ms`);
  }, 120_000);

  test("containerd loads thinsnap as a proxy snapshotter; the pool starts with only the base device", step(async () => {
    const plugins = await c.ctrOk("plugins", "ls");
    expect(plugins).toMatch(/^io\.containerd\.snapshotter\.v1\s+thinsnap\s+-\s+ok\s*$/m);
    expect(start.activeDevices).toEqual([]);
    expect(start.snapshots).toEqual({});
    expect(start.devicesByState).toEqual({ ready: 1 });
    expect(await backendSnapshots(d.address)).toEqual([]);
    expect(await snapOk("ls")).toBe("KEY PARENT KIND \n");
  }), 60_000);

  test("ctr snapshots prepare/mounts/usage/commit/view/label/info/tree/rm, with containerd's errors", step(async () => {
    // prepare, and again
    expect(await snapOk("prepare", "k1")).toBe("");
    await expectFail(["prepare", "k1"], /^ctr: snapshot "k1": already exists\n$/);
    await expectFail(["prepare", "k9", "nope"], /parent snapshot nope does not exist: not found/);

    // an active snapshot is a writable ext4 thin device
    const dev1 = await deviceOf("k1", false);
    const data = randomBytes(4 << 20);
    mount(dev1, MNT);
    writeFileSync(join(MNT, "data.bin"), data);
    writeFileSync(join(MNT, "hello.txt"), "hello from k1\n");
    umount(MNT); // flushes
    const usage1 = rows(await snapOk("usage", "k1"));
    expect(usage1.length).toBe(1);
    expect(usage1[0]![0]).toBe("k1");
    expect(parseCtrSize(`${usage1[0]![1]} ${usage1[0]![2]}`)).toBeGreaterThanOrEqual(4 << 20);

    // thinsnap sees containerd's namespaced key
    const b1 = await backendSnapshots(d.address);
    expect(b1.map((s) => [s.name.replace(/^default\/\d+\//, ""), s.kind])).toEqual([["k1", "active"]]);
    expect(b1[0]!.name).toMatch(/^default\/\d+\/k1$/);

    // commit
    expect(await snapOk("commit", "c1", "k1")).toBe("");
    await expectFail(["commit", "c1", "k1"], /^ctr: snapshot "c1": already exists\n$/);
    await expectFail(["mounts", MNT, "c1"], /committed.*failed precondition/);
    expect(rows(await snapOk("ls"))).toEqual([["c1", "Committed"]]);

    // a view is read-only and holds the committed data
    expect(await snapOk("view", "v1", "c1")).toBe("");
    const devV = await deviceOf("v1", true);
    expect(devV).not.toBe(dev1);
    mount(devV, MNT, true);
    expect(sha(readFileSync(join(MNT, "data.bin")))).toBe(sha(data));
    expect(() => writeFileSync(join(MNT, "x"), "x")).toThrow(/EROFS|read-only/);
    umount(MNT);

    // an active child sees its parent's files and writes only its own blocks
    expect(await snapOk("prepare", "k2", "c1")).toBe("");
    const dev2 = await deviceOf("k2", false);
    mount(dev2, MNT);
    expect(readFileSync(join(MNT, "hello.txt"), "utf8")).toBe("hello from k1\n");
    writeFileSync(join(MNT, "k2.txt"), "k2\n");
    umount(MNT);
    const usage = new Map(rows(await snapOk("usage")).map((r) => [r[0]!, parseCtrSize(`${r[1]} ${r[2]}`)]));
    expect([...usage.keys()].sort()).toEqual(["c1", "k2", "v1"]);
    expect(usage.get("c1")!).toBeGreaterThanOrEqual(4 << 20);
    expect(usage.get("k2")!).toBeGreaterThan(0);
    expect(usage.get("k2")!).toBeLessThan(4 << 20);

    // labels: containerd keeps them; containerd.io/snapshot/ ones reach thinsnap too
    const labelOut = await snapOk("label", "c1", "foo=bar", "containerd.io/snapshot/thinsnap-test=yes");
    expect(labelOut.trim().split(",").sort()).toContain("foo=bar");
    const info = JSON.parse(await snapOk("info", "c1")) as { Kind: string; Name: string; Parent?: string; Labels: Record<string, string> };
    expect(info.Kind).toBe("Committed");
    expect(info.Name).toBe("c1");
    expect(info.Labels.foo).toBe("bar");
    expect(info.Labels["containerd.io/snapshot/thinsnap-test"]).toBe("yes");
    expect(info.Labels["containerd.io/snapshot/devmapper/fstype"]).toBe("ext4");
    const infoK2 = JSON.parse(await snapOk("info", "k2")) as { Kind: string; Parent?: string };
    expect(infoK2).toMatchObject({ Kind: "Active", Parent: "c1" });
    const backendC1 = (await backendSnapshots(d.address)).find((s) => s.name.endsWith("/c1"));
    expect(backendC1?.kind).toBe("committed");
    expect(backendC1?.labels["containerd.io/snapshot/thinsnap-test"]).toBe("yes");

    expect(rows(await snapOk("ls")).sort()).toEqual([["c1", "Committed"], ["k2", "c1", "Active"], ["v1", "c1", "View"]]);
    const tree = await snapOk("tree");
    expect(tree).toMatch(/^ c1\n/);
    expect(tree).toMatch(/\\_ k2\n/);
    expect(tree).toMatch(/\\_ v1\n/);

    // rm: a parent with children is refused; unknown keys are not found
    await expectFail(["rm", "c1"], /^ctr: failed to remove "c1": cannot remove snapshot with child: failed precondition\n$/);
    await expectFail(["rm", "nope"], /snapshot nope does not exist: not found/);
    // One deletion per GC: with `ctr snapshots rm v1 k2`, k2's deletion usually
    // commits while the GC of v1 runs, and containerd 1.6 then drops its event.
    expect(await snapOk("rm", "v1")).toBe("");
    await backendUntil("GC of v1", (s) => s.length === 2 && !s.some((x) => x.name.endsWith("/v1")));
    expect(await snapOk("rm", "k2")).toBe("");
    // GC removed the children from thinsnap; now the parent can go
    await backendUntil("GC of k2", (s) => s.length === 1 && s[0]!.name.endsWith("/c1"));
    expect(await snapOk("rm", "c1")).toBe("");
    expect(await snapOk("ls")).toBe("KEY PARENT KIND \n");
    // containerd removed them from its metadata; its GC removes them from thinsnap
    await backendUntil("GC of c1", (s) => s.length === 0);
  }), 180_000);

  test("ctr images import unpacks each layer into a committed thinsnap snapshot named by chain ID", step(async () => {
    const r = await c.ctr("images", "import", "--snapshotter", "thinsnap", img.path);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`unpacking ${IMAGE} (${img.manifest.digest})...done\n`);
    expect(r.code).toBe(0);
    expect((await c.ctrOk("images", "ls", "-q")).split("\n")).toContain(IMAGE);
    const want = img.chainIds.map((id, i) => (i === 0 ? [id, "Committed"] : [id, img.chainIds[i - 1]!, "Committed"]));
    expect(rows(await snapOk("ls")).sort()).toEqual(want.sort());
    const b = await backendSnapshots(d.address);
    expect(b.map((s) => s.kind)).toEqual(["committed", "committed", "committed"]);
    expect(b.map((s) => s.name.replace(/^default\/\d+\//, "")).sort()).toEqual([...img.chainIds].sort());
  }), 120_000);

  test("thinsnap restarts under a running containerd; the snapshots survive", step(async () => {
    const before = await backendSnapshots(d.address);
    expect(await d.stop()).toBe(0);
    d = await startThinsnap();
    expect(await backendSnapshots(d.address)).toEqual(before);
    // containerd's proxy client reconnects by itself
    await waitFor("containerd reaching thinsnap again", async () => (await snap("ls")).code === 0, { timeoutMs: 30_000, intervalMs: 500 });
    expect(rows(await snapOk("ls")).length).toBe(3);
  }), 180_000);

  test("ctr run --rm echo hello", step(async () => {
    const r = await c.ctr("run", "--rm", "--snapshotter", "thinsnap", IMAGE, "hello", "echo", "hello");
    expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 0, stdout: "hello\n", stderr: "" });
    // --rm removed the container and its active snapshot
    await backendUntil("removal of the container's snapshot", (s) => s.length === 3 && s.every((x) => x.kind === "committed"));
  }), 120_000);

  test("a container sees all layers (with the whiteout) and its writes land on its thin device", step(async () => {
    const script = "echo data > /f && cat /f && cat /layers/top.txt && ls /layers && mount | grep ' / '";
    const r = await c.ctr("run", "--snapshotter", "thinsnap", IMAGE, "w1", "sh", "-c", script);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines.slice(0, 6)).toEqual(["data", "3", "1.txt", "2.txt", "3.txt", "top.txt"]); // no gone.txt
    expect(lines[6]).toMatch(new RegExp(`^/dev/mapper/${POOL}-snap-\\d+ on / type ext4 \\(rw`));
    // the stopped container keeps its snapshot (key = container id); read /f from the device
    expect((await c.ctrOk("containers", "ls", "-q")).trim()).toBe("w1");
    const dev = await deviceOf("w1", false);
    expect(lines[6]!.startsWith(`${dev} on /`)).toBe(true);
    mount(dev, MNT);
    expect(readFileSync(join(MNT, "f"), "utf8")).toBe("data\n");
    umount(MNT);
    expect(await c.ctrOk("containers", "rm", "w1")).toBe("");
    await backendUntil("removal of w1's snapshot", (s) => s.length === 3 && s.every((x) => x.kind === "committed"));
  }), 120_000);

  test("after ctr images rm, containerd's GC removes every snapshot: the pool is back where it started", step(async () => {
    expect(await c.ctrOk("images", "rm", "--sync", IMAGE)).toBe(`${IMAGE}\n`);
    await backendUntil("GC of the image's snapshots", (s) => s.length === 0);
    expect(await snapOk("ls")).toBe("KEY PARENT KIND \n");
    const end = await poolStatus(POOL, d.rootPath);
    expect(end.activeDevices).toEqual(start.activeDevices);
    expect(end.snapshots).toEqual({});
    expect(end.devicesByState).toEqual({ ready: 1 }); // the base device only
    expect(end.data.used).toBe(start.data.used);
    expect(end.mode).toBe("rw");
    const check = await checkStore(d.configPath);
    expect({ code: check.code, out: check.stdout.trim(), err: check.stderr }).toEqual({
      code: 0,
      out: `ok: store and pool "${POOL}" agree (1 devices, 0 snapshots)`,
      err: "",
    });
    const errors = d.logs().split("\n").filter((l) => / level=error /.test(l));
    expect(errors).toEqual([]);
  }), 180_000);
});
