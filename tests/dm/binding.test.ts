/** The libdevmapper binding against a real thin-pool (runs in the guest). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { sh } from "../kit/process.ts";
import { blockDeviceSize, DmError, Errno, discardBlocks, isErrno } from "../../src/dm/index.ts";

const MiB = 1n << 20n;

describe.skipIf(!env.available)("libdevmapper binding on a real thin-pool", () => {
  let tp: TestPool;
  let mnt: string;

  beforeAll(() => {
    tp = createTestPool("tsbind", { dataSize: 512 << 20 });
    mnt = mkdtempSync("/tmp/tsbind-mnt-");
  });
  afterAll(() => {
    tp?.destroy();
    rmSync(mnt, { recursive: true, force: true });
  });

  test("versions and udev mode", () => {
    expect(tp.dm.libraryVersion()).toMatch(/^1\.02\.\d+/);
    expect(tp.dm.driverVersion()).toMatch(/^4\.\d+\.\d+$/);
    expect(tp.dm.udev).toBe("library"); // DM_DISABLE_UDEV=1 in the guest
  });

  test("the pool reports status and its table", () => {
    const st = tp.pool.status();
    expect(st.transactionId).toBe(0n);
    expect(st.mode).toBe("rw");
    expect(st.usedDataBlocks).toBe(0n);
    expect(st.totalDataBlocks).toBe(BigInt(512 << 20) / (64n * 1024n));
    expect(tp.pool.table().features).toEqual(["skip_block_zeroing", "error_if_no_space"]);
    expect(st.errorIfNoSpace).toBe(true);
    expect(tp.pool.blockSize()).toBe(65536n);
    expect(tp.dm.list()).toContain("tsbind");
  });

  test("create_thin, activate, mkfs, mount, write, snapshot active and inactive origins", () => {
    const { pool, dm } = tp;
    pool.createThin(1);
    pool.activate("tsbind-1", 1, 64n * MiB);
    expect(blockDeviceSize("/dev/mapper/tsbind-1")).toBe(64n * MiB);
    const info = dm.info("tsbind-1");
    expect(info?.liveTable).toBe(true);
    expect(info?.suspended).toBe(false);
    sh("mkfs.ext4", ["-q", "-E", "nodiscard,lazy_itable_init=0", "/dev/mapper/tsbind-1"]);
    sh("mount", ["/dev/mapper/tsbind-1", mnt]);
    writeFileSync(`${mnt}/hello`, "from origin");
    expect(dm.info("tsbind-1")?.openCount).toBeGreaterThan(0);

    // Snapshot an ACTIVE, mounted origin: the pool suspends it around create_snap.
    pool.createSnap(2, 1, "tsbind-1");
    expect(dm.info("tsbind-1")?.suspended).toBe(false);
    writeFileSync(`${mnt}/hello`, "changed after snapshot");
    sh("umount", [mnt]);

    pool.activate("tsbind-2", 2, 64n * MiB);
    sh("mount", ["-o", "ro", "/dev/mapper/tsbind-2", mnt]);
    // The snapshot was taken while the file was dirty in the page cache: the
    // suspend flushed it, so the snapshot holds the file.
    expect(readFileSync(`${mnt}/hello`, "utf8")).toBe("from origin");
    sh("umount", [mnt]);

    // Snapshot an INACTIVE origin.
    pool.deactivate("tsbind-1");
    expect(dm.info("tsbind-1")).toBeNull();
    pool.createSnap(3, 1, null);
    pool.activate("tsbind-3", 3, 64n * MiB);
    sh("mount", ["-o", "ro", "/dev/mapper/tsbind-3", mnt]);
    expect(readFileSync(`${mnt}/hello`, "utf8")).toBe("changed after snapshot");
    sh("umount", [mnt]);

    const ts = pool.thinStatus("tsbind-3");
    expect(ts.mappedSectors).toBeGreaterThan(0n);
    expect(pool.status().usedDataBlocks).toBeGreaterThan(0n);
  });

  test("suspend/resume/reload and info flags", () => {
    const { dm, pool } = tp;
    dm.suspend("tsbind-3");
    expect(dm.info("tsbind-3")?.suspended).toBe(true);
    dm.resume("tsbind-3");
    expect(dm.info("tsbind-3")?.suspended).toBe(false);
    const table = dm.table("tsbind-3");
    dm.reload("tsbind-3", table);
    expect(dm.info("tsbind-3")?.inactiveTable).toBe(true);
    dm.resume("tsbind-3");
    expect(dm.info("tsbind-3")?.inactiveTable).toBe(false);
    pool.flush("tsbind-3");
  });

  test("rename", () => {
    tp.dm.rename("tsbind-3", "tsbind-3r");
    expect(tp.dm.info("tsbind-3")).toBeNull();
    expect(tp.dm.info("tsbind-3r")?.liveTable).toBe(true);
    tp.dm.rename("tsbind-3r", "tsbind-3");
  });

  test("discard unmaps the thin device's blocks", () => {
    const { pool } = tp;
    const before = pool.thinStatus("tsbind-3").mappedSectors;
    expect(before).toBeGreaterThan(0n);
    discardBlocks("/dev/mapper/tsbind-3");
    expect(pool.thinStatus("tsbind-3").mappedSectors).toBe(0n);
  });

  test("transaction id and metadata snapshots", () => {
    const { pool } = tp;
    pool.setTransactionId(0n, 7n);
    expect(pool.status().transactionId).toBe(7n);
    expect(() => pool.setTransactionId(0n, 8n)).toThrow(DmError); // wrong current id
    pool.reserveMetadataSnap();
    expect(pool.status().heldMetadataRoot).not.toBe("-");
    pool.releaseMetadataSnap();
    expect(pool.status().heldMetadataRoot).toBe("-");
  });

  test("error paths carry errno and what the kernel said", () => {
    const { pool, dm } = tp;
    try {
      pool.deleteThin(4242);
      throw new Error("expected failure");
    } catch (e) {
      expect(isErrno(e, Errno.ENODATA)).toBe(true);
      expect((e as Error).message).toContain("delete 4242");
      expect((e as Error).message).toContain("No data available");
    }
    try {
      pool.createThin(1);
      throw new Error("expected failure");
    } catch (e) {
      expect(isErrno(e, Errno.EEXIST)).toBe(true);
    }
    // an existing device name
    try {
      pool.activate("tsbind-2", 2, 64n * MiB);
      throw new Error("expected failure");
    } catch (e) {
      expect(e).toBeInstanceOf(DmError);
      expect([Errno.EBUSY, Errno.EEXIST] as number[]).toContain((e as DmError).errno);
    }
    expect(dm.info("tsbind-2")?.liveTable).toBe(true); // the existing one is untouched
    // a pool that does not exist
    try {
      dm.message("no-such-pool", "create_thin 1");
      throw new Error("expected failure");
    } catch (e) {
      expect(isErrno(e, Errno.ENXIO)).toBe(true);
      expect((e as Error).message).toContain("no-such-pool");
    }
    expect(dm.info("no-such-pool")).toBeNull();
    expect(() => tp.dm.remove("no-such-dev")).toThrow(DmError);
  });

  test("a busy device refuses remove; deferred remove happens on last close", () => {
    const { dm, pool } = tp;
    sh("mount", ["-o", "ro", "/dev/mapper/tsbind-2", mnt]);
    try {
      dm.remove("tsbind-2");
      throw new Error("expected EBUSY");
    } catch (e) {
      expect(isErrno(e, Errno.EBUSY)).toBe(true);
    }
    dm.remove("tsbind-2", { deferred: true });
    expect(dm.info("tsbind-2")?.deferredRemove).toBe(true);
    sh("umount", [mnt]);
    expect(dm.info("tsbind-2")).toBeNull();
    pool.deactivate("tsbind-2"); // already gone: fine
  });

  test("delete frees the pool's blocks", () => {
    const { pool } = tp;
    pool.deactivate("tsbind-3");
    for (const id of [1, 2, 3]) pool.deleteThin(id);
    expect(pool.status().usedDataBlocks).toBe(0n);
  });
});
