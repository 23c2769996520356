/**
 * containerd.io/snapshot/max-size on a real thin-pool, ext4 and xfs: a
 * container snapshot grown from a small base to 1 GiB in place, its data,
 * its committed child, refusals, a kill inside the grow, and what the grow
 * costs next to a plain child Prepare (printed).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { dm as env } from "./env.ts";
import { realBackend, writeBytes, type RealBackend } from "./backend.ts";
import { expectCode } from "../shared/semantics.ts";
import { sh, withMount } from "../kit/process.ts";
import { FS_SIZE_LABEL, MAX_SIZE_LABEL, SIZE_LABEL } from "../../src/snapshotter/max-size.ts";
import { GROW_MOUNT_DIR } from "../../src/snapshotter/grow.ts";
import { ctrRunMissing, startContainerd, type Containerd } from "../kit/containerd.ts";
import { buildImage } from "../kit/oci-image.ts";
import { freshFilePool, removeFreshFilePool } from "../kit/cli.ts";
import { Daemon, inDir } from "../kit/daemon.ts";

const MiB = 1n << 20n;
const GiB = 1n << 30n;
const maxSize = (n: bigint) => ({ labels: { [MAX_SIZE_LABEL]: String(n) } });

/** The mounted filesystem's size as df reports it (bytes). */
function dfSize(dir: string): bigint {
  const out = sh("df", ["-B1", "--output=size", dir]).trim().split("\n");
  return BigInt(out[out.length - 1]!.trim());
}

const growMounts = (): string[] =>
  readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m.includes(`/${GROW_MOUNT_DIR}/`));

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const fsType of ["ext4", "xfs"] as const) {
  // mkfs.xfs refuses filesystems below 300 MB
  const base = fsType === "xfs" ? 320n * MiB : 64n * MiB;

  describe.skipIf(!env.available)(`max-size on ${fsType} (base ${base / MiB} MiB)`, () => {
    let b: RealBackend;
    beforeAll(async () => {
      b = await realBackend(`tsmax${fsType}`, { fsType, baseImageSize: base }, { dataSize: 3 * 2 ** 30 });
      await writeBytes(await b.sn.prepare("l1", ""), 64 << 10, "from-layer");
      await b.sn.commit("layer", "l1");
    });
    afterAll(async () => {
      await b?.destroy();
    });

    test("a grown Prepare next to a plain child Prepare, interleaved (timings printed, not asserted)", async () => {
      const plain: number[] = [];
      const grown: number[] = [];
      for (let i = 0; i < 3; i++) {
        let t = performance.now();
        await b.sn.prepare(`plain${i}`, "layer");
        plain.push(performance.now() - t);
        t = performance.now();
        await b.sn.prepare(`grown${i}`, "layer", maxSize(GiB));
        grown.push(performance.now() - t);
      }
      const p = median(plain);
      const g = median(grown);
      console.log(
        `max-size ${fsType}: plain child Prepare ${p.toFixed(1)} ms, grown Prepare (${base / MiB} MiB -> 1 GiB) ` +
          `${g.toFixed(1)} ms, the grow ${(g - p).toFixed(1)} ms (medians of 3; plain ${plain.map((x) => x.toFixed(0))}, grown ${grown.map((x) => x.toFixed(0))})`,
      );
      for (let i = 0; i < 3; i++) {
        await b.sn.remove(`plain${i}`);
        await b.sn.remove(`grown${i}`);
      }
    });

    test("a container snapshot with max-size 1 GiB mounts ~1 GiB, holds 800 MiB, its committed child keeps 1 GiB", async () => {
      const m = await b.sn.prepare("ctr", "layer", maxSize(GiB));
      const st = await b.sn.stat("ctr");
      expect(st.labels[MAX_SIZE_LABEL]).toBe(String(GiB));
      expect(st.labels[SIZE_LABEL]).toBe(String(GiB));
      const fsBytes = BigInt(st.labels[FS_SIZE_LABEL]!);
      expect(fsBytes).toBeLessThanOrEqual(GiB);
      expect(fsBytes).toBeGreaterThan(GiB - 16n * MiB);
      expect(sh("blockdev", ["--getsize64", m[0]!.source]).trim()).toBe(String(GiB));
      await withMount(m, (dir) => {
        const df = dfSize(dir);
        console.log(`max-size ${fsType}: df size ${df} bytes, filesystem ${fsBytes} bytes, device ${GiB} bytes`);
        expect(df).toBeGreaterThan((GiB * 9n) / 10n);
        expect(df).toBeLessThanOrEqual(GiB);
        expect(statSync(`${dir}/from-layer`).size).toBe(64 << 10); // the parent's data is there
        sh("dd", ["if=/dev/zero", `of=${dir}/big`, "bs=4M", "count=200", "conv=fsync", "status=none"]);
        expect(statSync(`${dir}/big`).size).toBe(800 * 2 ** 20);
      });
      const u = await b.sn.usage("ctr");
      expect(u.size).toBeGreaterThanOrEqual(800n * MiB);

      await b.sn.commit("ctr-c", "ctr");
      const c = await b.sn.stat("ctr-c");
      expect([c.labels[SIZE_LABEL], c.labels[FS_SIZE_LABEL]]).toEqual([String(GiB), String(fsBytes)]);
      const cm = await b.sn.prepare("ctr-child", "ctr-c"); // no label: inherits 1 GiB
      expect((await b.sn.stat("ctr-child")).labels[SIZE_LABEL]).toBe(String(GiB));
      await withMount(cm, (dir) => {
        expect(dfSize(dir)).toBeGreaterThan((GiB * 9n) / 10n);
        expect(statSync(`${dir}/big`).size).toBe(800 * 2 ** 20);
      });
      // the 800 MiB and the grow's metadata belong to ctr-c, not to its child
      expect((await b.sn.usage("ctr-child")).size).toBeLessThan(8n * MiB);
      // a plain layer child keeps the base size and gets no size labels
      await b.sn.prepare("plain", "layer");
      expect((await b.sn.stat("plain")).labels[SIZE_LABEL]).toBeUndefined();
    });

    test("a smaller max-size is refused; a malformed one too", async () => {
      await expectCode(b.sn.prepare("small", "ctr-c", maxSize(512n * MiB)), "invalid_argument", String(GiB));
      await expectCode(b.sn.prepare("small", "layer", maxSize(base / 2n)), "invalid_argument", String(base));
      await expectCode(b.sn.prepare("bad", "layer", { labels: { [MAX_SIZE_LABEL]: "1G" } }), "invalid_argument", "decimal");
      await expectCode(b.sn.prepare("huge", "layer", maxSize(1n << 50n)), "invalid_argument", "max_size_limit");
      await expectCode(b.sn.stat("small"), "not_found");
    });

    test("a parent committed while still mounted (frozen by the Commit) grows with its data intact", async () => {
      const m = await b.sn.prepare("frozen0", "layer");
      await withMount(m, async (dir) => {
        writeFileSync(`${dir}/frozen`, "kept");
        await b.sn.commit("frozen", "frozen0");
      });
      await withMount(await b.sn.prepare("thawed", "frozen", maxSize(GiB)), (dir) => {
        expect(readFileSync(`${dir}/frozen`, "utf8")).toBe("kept");
        expect(dfSize(dir)).toBeGreaterThan((GiB * 9n) / 10n);
      });
      if (fsType === "ext4") sh("e2fsck", ["-fn", (await b.sn.mounts("thawed"))[0]!.source]);
      else sh("xfs_repair", ["-n", (await b.sn.mounts("thawed"))[0]!.source]);
    });

    // ext4 unmounted cleanly is resized offline; committed while mounted (a frozen journal) and xfs online.
    const kills: [parent: string, point: string][] =
      fsType === "ext4"
        ? [["layer", "grow.after-resize"], ["hot", "grow.while-mounted"], ["hot", "grow.after-umount"]]
        : [["layer", "grow.while-mounted"], ["layer", "grow.after-resize"]];
    test(`a kill inside the grow (${kills.map((k) => k.join(": ")).join(", ")}) is rolled back at start-up`, async () => {
      if (fsType === "ext4") {
        // a parent whose filesystem is not marked clean (as after a crash): grown online, after the mount's checks
        const hm = await b.sn.prepare("hot0", "layer");
        await withMount(hm, (dir) => writeFileSync(`${dir}/hot`, "x"));
        sh("debugfs", ["-w", "-R", "ssv state 0", hm[0]!.source]);
        await b.sn.commit("hot", "hot0");
      }
      for (const [parent, point] of kills) {
        await b.sn.close();
        const r = spawnSync(
          process.execPath,
          [`${import.meta.dir}/max-size-child.ts`, b.tp.name, b.root, fsType, String(base), "killed", parent, String(GiB)],
          { env: { ...process.env, THINSNAP_TEST_KILL_AT: point }, encoding: "utf8" },
        );
        expect(r.stderr).toContain(`SIGKILL at ${point}`);
        expect(r.signal).toBe("SIGKILL");
        expect(growMounts().length).toBe(point === "grow.after-umount" || parent === "layer" && fsType === "ext4" ? 0 : 1);
        const sn = await b.reopen();
        expect(growMounts()).toEqual([]);
        expect(sn.lastReconcile?.rolledBack).toBe(1);
        await expectCode(sn.stat("killed"), "not_found");
        // and a grown Prepare works again
        const t = performance.now();
        await withMount(await sn.prepare("again", parent, maxSize(GiB)), (dir) => {
          console.log(`max-size ${fsType}: grown Prepare of "${parent}" ${(performance.now() - t).toFixed(0)} ms`);
          expect(dfSize(dir)).toBeGreaterThan((GiB * 9n) / 10n);
          if (parent === "hot") expect(readFileSync(`${dir}/hot`, "utf8")).toBe("x");
        });
        await sn.remove("again");
      }
    });
  });
}

// ------------------------------------------------- through containerd and ctr

const CTRD_POOL = "thinsnap-maxsize-ctrd";
const CTRD_DIR = "/tmp/thinsnap-maxsize-ctrd";
const IMAGE = "docker.io/library/thinsnap-maxsize:latest";
const ctrdSkip = !env.available || ctrRunMissing() !== null;

describe.skipIf(ctrdSkip)("max-size through containerd 1.6: ctr run --snapshotter-label", () => {
  let d: Daemon;
  let c: Containerd;
  beforeAll(async () => {
    await freshFilePool(CTRD_POOL, CTRD_DIR, "2G");
    d = await Daemon.serving({ ...inDir(join(CTRD_DIR, "thinsnap"), { poolName: CTRD_POOL, baseImageSize: "64MB" }), readyTimeoutMs: 120_000 });
    c = await startContainerd({ dir: join(CTRD_DIR, "containerd"), proxySnapshotters: { thinsnap: d.config.address } });
    const img = buildImage({ out: join(CTRD_DIR, "image.tar"), name: IMAGE, layers: 1 });
    await c.ctrOk("images", "import", "--snapshotter", "thinsnap", img.path);
  }, 300_000);
  afterAll(async () => {
    await c?.shutdown();
    if (d) {
      await d.stop();
      console.log(`---- thinsnap log (grow lines) ----\n${d.logs().split("\n").filter((l) => /max-size|grow|error/.test(l)).slice(-20).join("\n")}`);
    }
    await removeFreshFilePool(CTRD_POOL, CTRD_DIR);
  }, 120_000);

  /** The root filesystem's size inside a container, from busybox df (1 KiB blocks). */
  const rootSize = (out: string): bigint => {
    // busybox puts a long device name on a line of its own: take the first number after the header
    const tokens = out.trim().split("\n").slice(1).join(" ").trim().split(/\s+/);
    return BigInt(tokens.find((t) => /^\d+$/.test(t))!) * 1024n;
  };

  test("the label reaches thinsnap, the container's / is ~1 GiB; without it 64 MiB; a smaller one is refused", async () => {
    const label = `${MAX_SIZE_LABEL}=${GiB}`;
    const r = await c.ctr("run", "--snapshotter", "thinsnap", "--snapshotter-label", label, IMAGE, "big", "df", "-k", "/");
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    const big = rootSize(r.stdout);
    console.log(`max-size via ctr run: / is ${big} bytes (df)`);
    expect(big).toBeGreaterThan((GiB * 9n) / 10n);
    expect(big).toBeLessThanOrEqual(GiB);
    const info = JSON.parse(await c.ctrOk("snapshots", "--snapshotter", "thinsnap", "info", "big")) as { Labels: Record<string, string> };
    expect(info.Labels[MAX_SIZE_LABEL]).toBe(String(GiB));
    expect(info.Labels[SIZE_LABEL]).toBe(String(GiB));
    await c.ctrOk("containers", "rm", "big");

    const small = await c.ctr("run", "--rm", "--snapshotter", "thinsnap", IMAGE, "small", "df", "-k", "/");
    expect(small.code).toBe(0);
    expect(rootSize(small.stdout)).toBeLessThanOrEqual(64n * MiB);

    const bad = await c.ctr("run", "--rm", "--snapshotter", "thinsnap", "--snapshotter-label", `${MAX_SIZE_LABEL}=1000`, IMAGE, "bad", "true");
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("does not shrink");
  }, 300_000);
});
