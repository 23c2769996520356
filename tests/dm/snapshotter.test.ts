/** The snapshotter on a real thin-pool: semantics, real files across layers, concurrency. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { dm as env } from "./env.ts";
import { realBackend, writeBytes, type RealBackend } from "./backend.ts";
import { sh, withMount } from "../kit/process.ts";
import { describeSemantics, expectCode } from "../shared/semantics.ts";
import { thinDevicesOf } from "./pool-fixture.ts";

for (const [fsType, asyncRemove, kernelThreads] of [
  ["ext4", false, 0],
  ["xfs", true, 4],
] as const) {
  describeSemantics(
    `real thin-pool, ${fsType}, async_remove=${asyncRemove}, kernel_threads=${kernelThreads}`,
    async () => {
      const b = await realBackend(
        `tssem${fsType}`,
        { fsType, asyncRemove, baseImageSize: fsType === "xfs" ? 320n << 20n : 64n << 20n },
        {},
        kernelThreads,
      );
      return {
        sn: b.sn,
        fsType,
        write: async (key, bytes, file) => writeBytes(await b.sn.mounts(key), bytes, file),
        teardown: async () => {
          await b.sn.cleanup();
          // only the base is left: no mapping of ours, one thin device in use
          expect(thinDevicesOf(b.tp.dm, b.tp.name)).toEqual([]);
          await b.destroy();
        },
      };
    },
    env.available,
  );
}

describe.skipIf(!env.available)("files across layers (containerd's snapshotter suite cases)", () => {
  let b: RealBackend;
  beforeAll(async () => {
    b = await realBackend("tslayers");
  });
  afterAll(async () => {
    await b?.destroy();
  });

  test("a parentless snapshot is an empty filesystem (no lost+found)", async () => {
    const m = await b.sn.prepare("empty", "");
    await withMount(m, (dir) => expect(readdirSync(dir)).toEqual([]));
    await b.sn.remove("empty");
  });

  test("updates, deletes, renames, chown and modes carry through commits", async () => {
    const sn = b.sn;
    let m = await sn.prepare("l1", "");
    await withMount(m, (d) => {
      writeFileSync(`${d}/a`, "1");
      writeFileSync(`${d}/del`, "x");
      writeFileSync(`${d}/ren`, "r");
      mkdirSync(`${d}/dir`, { mode: 0o700 });
      chmodSync(`${d}/dir`, 0o1750);
      writeFileSync(`${d}/owned`, "o");
      chownSync(`${d}/owned`, 1000, 1001);
    });
    await sn.commit("c1", "l1");
    m = await sn.prepare("l2", "c1");
    await withMount(m, (d) => {
      expect(readFileSync(`${d}/a`, "utf8")).toBe("1");
      writeFileSync(`${d}/a`, "2");
      writeFileSync(`${d}/b`, "new");
      unlinkSync(`${d}/del`);
      renameSync(`${d}/ren`, `${d}/renamed`);
    });
    await sn.commit("c2", "l2");

    await withMount(await sn.view("v2", "c2"), (d) => {
      expect(readFileSync(`${d}/a`, "utf8")).toBe("2");
      expect(readFileSync(`${d}/b`, "utf8")).toBe("new");
      expect(existsSync(`${d}/del`)).toBe(false);
      expect(existsSync(`${d}/ren`)).toBe(false);
      expect(readFileSync(`${d}/renamed`, "utf8")).toBe("r");
      expect(statSync(`${d}/dir`).mode & 0o7777).toBe(0o1750);
      const o = statSync(`${d}/owned`);
      expect([o.uid, o.gid]).toEqual([1000, 1001]);
      expect(() => writeFileSync(`${d}/ro`, "x")).toThrow(); // views are read-only
    });
    await withMount(await sn.view("v1", "c1"), (d) => {
      expect(readFileSync(`${d}/a`, "utf8")).toBe("1");
      expect(existsSync(`${d}/b`)).toBe(false);
      expect(existsSync(`${d}/del`)).toBe(true);
    });
    // removing an intermediate snapshot: refused while it has children
    await expectCode(sn.remove("c1"), "failed_precondition");
    for (const k of ["v1", "v2", "c2", "c1"]) await sn.remove(k);
  });

  test("commit while still mounted keeps what was written (freeze + deferred remove)", async () => {
    const sn = b.sn;
    const m = await sn.prepare("mounted", "");
    const dir = mkdtempSync("/tmp/ts-mnt-");
    sh("mount", ["-t", m[0]!.type, m[0]!.source, dir]);
    writeFileSync(`${dir}/dirty`, "in the page cache only");
    await sn.commit("mounted-c", "mounted");
    expect(b.tp.dm.info(m[0]!.source.slice("/dev/mapper/".length))?.deferredRemove).toBe(true);
    sh("umount", [dir]);
    // the kernel runs a deferred remove from a work queue after the last close
    const name = m[0]!.source.slice("/dev/mapper/".length);
    for (let i = 0; i < 100 && b.tp.dm.info(name) !== null; i++) await Bun.sleep(50);
    expect(b.tp.dm.info(name)).toBeNull();
    await withMount(await sn.view("mounted-v", "mounted-c"), (d) =>
      expect(readFileSync(`${d}/dirty`, "utf8")).toBe("in the page cache only"),
    );
    await sn.remove("mounted-v");
    await sn.remove("mounted-c");
  });

  // Every layer gets a file in the soak run; by default every 16th (and the
  // last) does: a mount per layer costs ~2 s under emulation.
  const everyLayer = process.env.THINSNAP_SOAK === "1";
  test("a 128-layer chain mounts with its layers' files", async () => {
    const sn = b.sn;
    let parent = "";
    const files: string[] = [];
    for (let i = 0; i < 128; i++) {
      const m = await sn.prepare(`chain-${i}-active`, parent);
      if (everyLayer || i % 16 === 0 || i === 127) {
        await withMount(m, (d) => writeFileSync(`${d}/f${i}`, String(i)));
        files.push(`f${i}`);
      }
      await sn.commit(`chain-${i}`, `chain-${i}-active`);
      parent = `chain-${i}`;
    }
    expect((await sn.stat("chain-127")).parent).toBe("chain-126");
    await withMount(await sn.view("chain-view", parent), (d) => {
      expect(readdirSync(d).sort()).toEqual(files.sort());
      expect(readFileSync(`${d}/f0`, "utf8")).toBe("0");
      expect(readFileSync(`${d}/f127`, "utf8")).toBe("127");
    });
    await sn.remove("chain-view");
    for (let i = 127; i >= 0; i--) await sn.remove(`chain-${i}`);
    await sn.cleanup();
  }, 600_000);

  test("16 chains at once", async () => {
    const sn = b.sn;
    const chain = async (c: number): Promise<void> => {
      let parent = "";
      for (let i = 0; i < 3; i++) {
        const m = await sn.prepare(`cc${c}-${i}-a`, parent);
        await withMount(m, (d) => writeFileSync(`${d}/c${c}l${i}`, `${c}/${i}`));
        await sn.commit(`cc${c}-${i}`, `cc${c}-${i}-a`);
        parent = `cc${c}-${i}`;
      }
      await withMount(await sn.view(`cc${c}-v`, parent), (d) => {
        expect(readdirSync(d).sort()).toEqual([`c${c}l0`, `c${c}l1`, `c${c}l2`]);
      });
    };
    await Promise.all(Array.from({ length: 16 }, (_, c) => chain(c)));
    for (let c = 0; c < 16; c++) {
      await sn.remove(`cc${c}-v`);
      for (let i = 2; i >= 0; i--) await sn.remove(`cc${c}-${i}`);
    }
    await sn.cleanup();
    expect(thinDevicesOf(b.tp.dm, b.tp.name)).toEqual([]);
  }, 600_000);

  test("restart keeps everything and reactivates what must be active", async () => {
    const sn = b.sn;
    const m = await sn.prepare("keep-active", "");
    await withMount(m, (d) => writeFileSync(`${d}/x`, "kept"));
    await sn.commit("keep-c", "keep-active");
    await sn.prepare("keep-a2", "keep-c");
    // the device of an active snapshot vanishes (e.g. a host reboot of a loop pool)
    const dev = b.store.getDevice(b.store.getSnapshot("keep-a2")!.thinId)!;
    b.tp.dm.remove(dev.dmName);
    const sn2 = await b.reopen();
    expect(b.tp.dm.info(dev.dmName)).not.toBeNull();
    await withMount(await sn2.mounts("keep-a2"), (d) => expect(readFileSync(`${d}/x`, "utf8")).toBe("kept"));
    await sn2.remove("keep-a2");
    await sn2.remove("keep-c");
  });

  test("a pool whose data space is exhausted: ResourceExhausted, then recovery after removal", async () => {
    const small = await realBackend("tsfull", { minFreeSpace: 0n }, { dataSize: 160 << 20 });
    try {
      const sn = small.sn;
      const m = await sn.prepare("filler", "");
      // fill most of the pool's data space: the base already uses a bit
      await writeBytes(m, 100 << 20).catch(() => undefined);
      await sn.commit("filler-c", "filler");
      const st = small.tp.pool.status();
      expect(st.usedDataBlocks).toBeGreaterThan(0n);
      // with a reserve larger than what is left, new devices are refused
      const sn2 = await small.reopen({ minFreeSpace: 100n << 20n });
      await expectCode(sn2.prepare("more", ""), "resource_exhausted", "free data space");
      await expectCode(sn2.stat("more"), "not_found");
      await sn2.remove("filler-c");
      await sn2.cleanup();
      await sn2.prepare("more", "");
    } finally {
      await small.destroy();
    }
  });
});

describe.skipIf(!env.available)("discard_blocks", () => {
  test("removing a committed snapshot hands its blocks back to the data file", async () => {
    const b = await realBackend("tsdisc", { discardBlocks: true });
    try {
      const sn = b.sn;
      const used = (): number => statSync(b.tp.dataFile).blocks * 512;
      const before = used();
      const m = await sn.prepare("d1", "");
      await writeBytes(m, 16 << 20);
      await sn.commit("d1-c", "d1");
      const grown = used();
      expect(grown - before).toBeGreaterThanOrEqual(16 << 20);
      await sn.remove("d1-c");
      await sn.cleanup();
      // the pool freed the blocks and passed the discard down to the loop file
      expect(used() - before).toBeLessThan(4 << 20);
      expect(thinDevicesOf(b.tp.dm, b.tp.name)).toEqual([]);
    } finally {
      await b.destroy();
    }
  });
});

describe.skipIf(!env.available)("start-up repairs what a kill inside a kernel step leaves", () => {
  test("a device left suspended (kill between suspend and resume) is resumed", async () => {
    const b = await realBackend("tssusp");
    try {
      const m = await b.sn.prepare("a", "");
      const name = m[0]!.source.slice("/dev/mapper/".length);
      b.tp.dm.suspend(name);
      const sn2 = await b.reopen();
      const suspended = b.tp.dm.info(name)?.suspended;
      if (suspended) b.tp.dm.resume(name); // keep teardown from hanging if this fails
      expect(suspended).toBe(false);
      await sn2.commit("c", "a");
    } finally {
      await b.destroy();
    }
  });

  test("a device without a live table (kill inside libdm's create) is mapped again", async () => {
    const b = await realBackend("tsnotab");
    try {
      const m = await b.sn.prepare("a", "");
      const name = m[0]!.source.slice("/dev/mapper/".length);
      await withMount(m, (d) => writeFileSync(`${d}/x`, "kept"));
      b.tp.dm.remove(name);
      b.tp.dm.create(name, []); // the create ioctl alone, no table load
      const sn2 = await b.reopen();
      expect(b.tp.dm.info(name)?.liveTable).toBe(true);
      await withMount(await sn2.mounts("a"), (d) => expect(readFileSync(`${d}/x`, "utf8")).toBe("kept"));
      await sn2.commit("c", "a");
    } finally {
      await b.destroy();
    }
  });
});
