/** containerd.io/snapshot/max-size: label parsing and rounding, superblocks, and the semantics on a fake pool. */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Store } from "../../src/store/store.ts";
import {
  FS_SIZE_LABEL,
  MAX_SIZE_LABEL,
  MAX_THIN_DEVICE_BYTES,
  requestedSize,
  roundDeviceSize,
  SIZE_LABEL,
  targetSize,
  type SizeLimits,
} from "../../src/snapshotter/max-size.ts";
import { fsGeometry, SUPERBLOCK_SPAN } from "../../src/snapshotter/fs-geometry.ts";
import { Errno } from "../../src/dm/errors.ts";
import { SnapshotterError } from "../../src/errors.ts";
import { FAKE_GROW_SLACK, FAKE_GROW_WRITES, FakePool } from "../kit/fakes/fake-pool.ts";
import { expectCode } from "../shared/semantics.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import { deviceOf as devOf, openOnFakePool as open } from "../kit/fakes/open.ts";
import { armCrashAtStep, rethrowUnlessCrash, storeOf } from "../kit/fakes/crash.ts";

const MiB = 1n << 20n;
const GiB = 1n << 30n;
const BS = 65536n;
const limits = (limit = 1n << 40n): (() => SizeLimits) => () => ({ blockSize: BS, limit, limitSource: "max_size_limit" });
const ask = (v: string) => ({ [MAX_SIZE_LABEL]: v });

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof SnapshotterError ? `${e.code}: ${e.message}` : `other: ${String(e)}`;
  }
  return "no error";
}

describe("the max-size label (pure)", () => {
  test("sizes round up to the pool block and the filesystem block, never down", () => {
    expect(roundDeviceSize(1n, BS)).toBe(BS);
    expect(roundDeviceSize(BS, BS)).toBe(BS);
    expect(roundDeviceSize(BS + 1n, BS)).toBe(2n * BS);
    expect(roundDeviceSize(GiB, BS)).toBe(GiB);
    // a 192 KiB pool block (3 × 64 KiB) is already a multiple of 4 KiB
    expect(roundDeviceSize(1n, 3n * BS)).toBe(3n * BS);
    expect(roundDeviceSize(1000000000n, BS) % BS).toBe(0n);
    expect(roundDeviceSize(1000000000n, BS)).toBeGreaterThanOrEqual(1000000000n);
  });

  test("no label (or an empty one) asks nothing and reads no pool numbers", () => {
    const never = (): SizeLimits => {
      throw new Error("limits read");
    };
    expect(requestedSize({}, never)).toBeNull();
    expect(requestedSize(ask(""), never)).toBeNull();
    expect(requestedSize(ask("1073741824"), limits())).toBe(GiB);
    expect(requestedSize(ask("1000000001"), limits())).toBe(roundDeviceSize(1000000001n, BS));
  });

  test("malformed values are InvalidArgument", () => {
    for (const v of ["1G", "-1", "1e9", " 5", "5 ", "0x10", "1.5", "+5", "١٢", "123456789012345678901"]) {
      expect(codeOf(() => requestedSize(ask(v), limits()))).toStartWith("invalid_argument: label containerd.io/snapshot/max-size");
    }
    expect(codeOf(() => requestedSize(ask("0"), limits()))).toContain("greater than zero");
    expect(codeOf(() => requestedSize(ask(String(MAX_THIN_DEVICE_BYTES)), limits(MAX_THIN_DEVICE_BYTES)))).toContain(
      "larger than a thin device can be",
    );
    expect(codeOf(() => requestedSize(ask("18446744073709551615"), limits()))).toContain("larger than a thin device can be");
    const above = codeOf(() => requestedSize(ask(String(GiB + 1n)), limits(GiB)));
    expect(above).toContain(`above the limit of ${GiB} bytes (max_size_limit)`);
  });

  test("a size below the origin's is refused naming both; equal is no grow; ext2 cannot grow", () => {
    const origin = { sizeBytes: GiB, fsBytes: GiB - 4096n, fsType: "ext4" };
    const e = codeOf(() => targetSize(512n * MiB, origin, 'parent "p"'));
    expect(e).toStartWith("invalid_argument");
    expect(e).toContain(String(512n * MiB));
    expect(e).toContain(String(GiB - 4096n));
    expect(e).toContain(`at least ${GiB}`);
    expect(targetSize(GiB, origin, "p")).toBe(GiB);
    expect(targetSize(null, origin, "p")).toBe(GiB);
    expect(targetSize(2n * GiB, origin, "p")).toBe(2n * GiB);
    expect(codeOf(() => targetSize(2n * GiB, { ...origin, fsType: "ext2" }, "the base device"))).toContain("cannot grow");
    expect(targetSize(GiB, { ...origin, fsType: "ext2" }, "p")).toBe(GiB); // nothing to grow
  });
});

describe("superblocks", () => {
  const mkfs = (cmd: string[], size: number): Uint8Array | null => {
    const dir = mkdtempSync(join(tmpdir(), "ts-sb-"));
    const img = join(dir, "img");
    writeFileSync(img, "");
    truncateSync(img, size);
    const r = spawnSync(cmd[0]!, [...cmd.slice(1), img], { encoding: "utf8" });
    const out = r.status === 0 ? readFileSync(img).subarray(0, SUPERBLOCK_SPAN) : null;
    rmSync(dir, { recursive: true, force: true });
    return out;
  };

  test.skipIf(spawnSync("mkfs.ext4", ["-V"]).status !== 0)("ext4 (1 KiB and 4 KiB blocks)", () => {
    const small = mkfs(["mkfs.ext4", "-q", "-F"], 64 << 20)!;
    expect(fsGeometry(small, "ext4")).toMatchObject({ blocks: 65536n, bytes: 64n * MiB });
    const big = mkfs(["mkfs.ext4", "-q", "-F", "-b", "4096"], 96 << 20)!;
    expect(fsGeometry(big, "ext4")).toEqual({ blockSize: 4096n, blocks: 24576n, bytes: 96n * MiB, imaxPct: 0, clean: true });
    // not clean, so never resized offline: a journal to replay, mounted (not VALID), errors, orphans
    const dirty = (off: number, bytes: number[]): boolean => {
      const b2 = Uint8Array.from(small);
      b2.set(bytes, 1024 + off);
      return fsGeometry(b2, "ext4").clean;
    };
    expect(dirty(96, [small[1024 + 96]! | 0x4])).toBe(false);
    expect(dirty(58, [0, 0])).toBe(false);
    expect(dirty(58, [3, 0])).toBe(false);
    expect(dirty(232, [12, 0, 0, 0])).toBe(false);
    expect(dirty(100, [small[1024 + 100]!, small[1024 + 101]!, small[1024 + 102]! | 0x1, small[1024 + 103]!])).toBe(false);
    expect(dirty(58, [1, 0])).toBe(true);
  });

  test.skipIf(spawnSync("mkfs.xfs", ["-V"]).status !== 0)("xfs", () => {
    const sb = mkfs(["mkfs.xfs", "-q", "-f"], 320 << 20)!;
    const g = fsGeometry(sb, "xfs");
    expect(g.bytes).toBe(320n * MiB);
    expect(g.blockSize).toBe(4096n);
    expect(g.imaxPct).toBeGreaterThan(0);
    expect(g.clean).toBe(false); // xfs grows online only
  });

  test("not a superblock / too short / unknown type", () => {
    const zero = new Uint8Array(SUPERBLOCK_SPAN);
    expect(() => fsGeometry(zero, "ext4")).toThrow("no ext4 superblock: magic 0x0");
    expect(() => fsGeometry(zero, "xfs")).toThrow("no xfs superblock");
    expect(() => fsGeometry(zero.subarray(0, 100), "ext4")).toThrow("only 100 bytes");
    expect(() => fsGeometry(zero, "btrfs")).toThrow("unsupported");
  });
});

const BASE = TEST_OPTIONS.baseImageSize;
const grows = (pool: FakePool) => pool.calls.filter((c) => c === "grow").length;

describe("max-size on a fake pool", () => {
  test("a grown Prepare: device and filesystem at the size, labels, children inherit, commit keeps it", async () => {
    const { sn, pool, store } = await open();
    await sn.prepare("l", "");
    await sn.commit("layer", "l");
    expect((await sn.stat("layer")).labels[SIZE_LABEL]).toBeUndefined(); // image layers keep the base size
    pool.calls = [];
    const m = await sn.prepare("ctr", "layer", { labels: ask(String(GiB - 1000n)) });
    expect(grows(pool)).toBe(1);
    const dev = devOf(store, "ctr");
    expect(dev.sizeBytes).toBe(GiB); // rounded up
    expect(dev.fsBytes).toBe(GiB - FAKE_GROW_SLACK);
    expect(pool.mapped.get(dev.dmName)!.size).toBe(GiB);
    expect(m[0]!.source).toBe(`/dev/mapper/${dev.dmName}`);
    const st = await sn.stat("ctr");
    expect(st.labels).toMatchObject({
      [MAX_SIZE_LABEL]: String(GiB - 1000n),
      [SIZE_LABEL]: String(GiB),
      [FS_SIZE_LABEL]: String(GiB - FAKE_GROW_SLACK),
    });
    await sn.commit("ctr-c", "ctr", { labels: { x: "y" } });
    expect((await sn.stat("ctr-c")).labels).toMatchObject({ x: "y", [SIZE_LABEL]: String(GiB) });
    pool.calls = [];
    await sn.prepare("child", "ctr-c");
    await sn.view("v", "ctr-c", { labels: ask(String(GiB)) }); // the same size: nothing to grow
    expect(grows(pool)).toBe(0);
    for (const k of ["child", "v"]) {
      expect(devOf(store, k).sizeBytes).toBe(GiB);
      expect((await sn.stat(k)).labels[FS_SIZE_LABEL]).toBe(String(GiB - FAKE_GROW_SLACK));
    }
    // the default limit is the pool's data size (the fake's: 1 GiB)
    await expectCode(sn.view("v2", "ctr-c", { labels: ask(String(2n * GiB)) }), "invalid_argument", "the pool's data size");
    const { sn: sn2, store: store2 } = await open(new FakePool(), Store.open(":memory:"), { maxSizeLimit: 4n * GiB });
    await sn2.view("v3", "", { labels: ask(String(3n * GiB)) }); // more than the pool: thin provisioning
    expect(devOf(store2, "v3").sizeBytes).toBe(3n * GiB);
  });

  test("refusals: smaller than the parent, malformed, above the limit; nothing made", async () => {
    const { sn, pool, store } = await open(new FakePool(), Store.open(":memory:"), { maxSizeLimit: 2n * GiB });
    await sn.prepare("big", "", { labels: ask(String(GiB)) });
    await sn.commit("big-c", "big");
    const thins = pool.thins.size;
    await expectCode(sn.prepare("s", "big-c", { labels: ask(String(512n * MiB)) }), "invalid_argument", `${GiB}-byte device`);
    await expectCode(sn.prepare("s", "", { labels: ask(String(BASE / 2n)) }), "invalid_argument", "the base device");
    await expectCode(sn.view("s", "big-c", { labels: ask("lots") }), "invalid_argument", "decimal bytes");
    await expectCode(sn.prepare("s", "big-c", { labels: ask("0") }), "invalid_argument", "greater than zero");
    await expectCode(sn.prepare("s", "big-c", { labels: ask(String(2n * GiB + 1n)) }), "invalid_argument", "max_size_limit");
    expect(pool.thins.size).toBe(thins);
    expect(store.getSnapshot("s")).toBeNull();
    // and the size check comes before the space check: a full pool still says InvalidArgument for a bad label
    pool.mode = "ro";
    await expectCode(sn.prepare("s", "big-c", { labels: ask("x") }), "invalid_argument");
    await expectCode(sn.prepare("s", "big-c", { labels: ask(String(2n * GiB)) }), "resource_exhausted");
  });

  test("min_free_space still applies to a grown Prepare", async () => {
    const { sn, pool } = await open(new FakePool(), Store.open(":memory:"), { minFreeSpacePercent: 10 });
    await sn.prepare("a", "");
    pool.write([...pool.mapped.keys()].find((n) => n.includes("snap"))!, 950n * MiB);
    await expectCode(sn.prepare("b", "", { labels: ask(String(GiB)) }), "resource_exhausted", "reserve");
  });

  test("usage: the grow's writes belong to the grown snapshot, not to its children", async () => {
    const { sn, pool, store } = await open();
    await sn.prepare("g", "", { labels: ask(String(GiB)) });
    expect((await sn.usage("g")).size).toBe(FAKE_GROW_WRITES);
    pool.write(devOf(store, "g").dmName, 5n * MiB);
    expect((await sn.usage("g")).size).toBe(FAKE_GROW_WRITES + 5n * MiB);
    await sn.commit("g-c", "g");
    await sn.prepare("k", "g-c");
    expect((await sn.usage("k")).size).toBe(0n);
    expect((await sn.usage("g-c")).size).toBe(FAKE_GROW_WRITES + 5n * MiB);
  });

  test("a failed grow rolls the Prepare back", async () => {
    const { sn, pool, store } = await open();
    const thins = pool.thins.size;
    pool.failNext("grow", Errno.EIO);
    await expect(sn.prepare("g", "", { labels: ask(String(GiB)) })).rejects.toThrow();
    expect(pool.thins.size).toBe(thins);
    expect(pool.mapped.size).toBe(0);
    expect(store.getSnapshot("g")).toBeNull();
    await sn.prepare("g", "", { labels: ask(String(GiB)) });
  });

  test("the fake pool refuses a shrinking table (the rule the snapshotter must keep)", () => {
    const pool = new FakePool();
    pool.createThin(1);
    pool.activate("a", 1, GiB);
    pool.deactivate("a");
    pool.createSnap(2, 1, null);
    expect(() => pool.activate("b", 2, GiB - BS)).toThrow("shrunk");
    pool.activate("b", 2, 2n * GiB);
  });

  test("a crash before/after each step of a grown Prepare (the grow included) rolls it back", async () => {
    let images = 0;
    for (let crashAt = 0; crashAt < 20; crashAt++) {
      for (const when of ["before", "after"] as const) {
        const pool = new FakePool();
        const store = Store.open(":memory:");
        const { sn } = await open(pool, store);
        await sn.prepare("p", "");
        await sn.commit("parent", "p");
        const crash = armCrashAtStep(pool, store, when, crashAt);
        try {
          await sn.prepare("new", "parent", { labels: ask(String(GiB)) });
        } catch (e) {
          rethrowUnlessCrash(e);
        }
        const img = crash.disarm();
        sn.remover.stop();
        if (!img) continue;
        images++;
        const store2 = storeOf(img);
        const re = await open(img.pool, store2);
        await re.sn.cleanup();
        expect(new Set(img.pool.thins.keys())).toEqual(new Set(store2.allDevices().map((d) => d.thinId)));
        for (const d of store2.allDevices()) expect(d.state).toBe("ready");
        await expectCode(re.sn.stat("new"), "not_found");
        await re.sn.prepare("new", "parent", { labels: ask(String(GiB)) });
        expect(devOf(store2, "new").fsBytes).toBe(GiB - FAKE_GROW_SLACK);
        re.sn.remover.stop();
      }
    }
    // create_snap, activate, grow: each before and after
    expect(images).toBe(6);
  });

  test("a grown snapshot is reactivated at its size after a restart", async () => {
    const pool = new FakePool();
    const store = Store.open(":memory:");
    const { sn } = await open(pool, store);
    await sn.prepare("g", "", { labels: ask(String(GiB)) });
    sn.remover.stop();
    const dm = devOf(store, "g").dmName;
    pool.mapped.clear(); // a reboot
    const { Database: D } = await import("bun:sqlite");
    const re = await open(pool, Store.wrap(D.deserialize(store.serialize())));
    expect(pool.mapped.get(dm)?.size).toBe(GiB);
    re.sn.remover.stop();
  });
});

describe("schema v2", () => {
  test("a version 1 database gains fs_bytes; a newer one is refused", () => {
    const db = new Database(":memory:");
    const s = Store.wrap(db);
    s.insertDevice({ thinId: 7, dmName: "x-snap-7", role: "snapshot", state: "ready", originId: null, sizeBytes: BASE, fsType: "ext4", active: false, discard: false, fsBytes: null });
    db.exec("ALTER TABLE devices DROP COLUMN fs_bytes");
    s.setMeta("schema_version", "1");
    const s2 = Store.wrap(db);
    expect(s2.getMeta("schema_version")).toBe("2");
    expect(s2.getDevice(7)).toMatchObject({ sizeBytes: BASE, fsBytes: null });
    s2.setDeviceReady(7, 123n);
    expect(s2.getDevice(7)!.fsBytes).toBe(123n);
    s2.setMeta("schema_version", "3");
    expect(() => Store.wrap(db)).toThrow("schema version 3");
  });
});
