/** KernelWorkers (src/dm/kernel-workers.ts): pool calls on worker threads, against a real thin-pool. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { DmError, Errno, isErrno } from "../../src/dm/index.ts";
import { KernelWorkers, MAX_RETIRED_COPIES } from "../../src/dm/kernel-workers.ts";
import { closeSync, constants, openSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { binaryMissing, withBinaryDaemon } from "../kit/binary.ts";
import { snapshotsClient } from "../kit/client.ts";

const SIZE = 64n << 20n;

/** Makes a KernelWorkers' first thread fail as a crashed one does: its error event. */
function failFirstThread(kw: KernelWorkers, message: string): void {
  const slots = (kw as unknown as { slots: { worker: Worker | null }[] }).slots;
  const w = slots[0]?.worker;
  if (!w?.onerror) throw new Error("no running thread to fail");
  w.onerror(new ErrorEvent("error", { message }));
}

describe.skipIf(!env.available)("kernel workers on a real thin-pool", () => {
  let tp: TestPool;
  let kw: KernelWorkers;
  const name = (id: number): string => `tskw-${id}`;

  beforeAll(() => {
    tp = createTestPool("tskw", { dataSize: 512 << 20 });
    tp.pool.createThin(1);
    kw = new KernelWorkers({ poolName: "tskw", max: 4, idleMs: 300 });
  });
  afterAll(() => {
    kw?.close();
    tp?.destroy();
  });

  test("concurrent snapshot + activate + deactivate + delete, spread over several threads", async () => {
    const umaskAtStart = process.umask();
    const ids = [10, 11, 12, 13, 14, 15, 16, 17];
    let maxThreads = 0;
    await Promise.all(
      ids.map(async (id) => {
        await kw.createSnap(id, 1, null);
        await kw.activate(name(id), id, SIZE);
        maxThreads = Math.max(maxThreads, kw.threads);
      }),
    );
    expect(maxThreads).toBeGreaterThan(1);
    expect(kw.threads).toBeLessThanOrEqual(4);
    // Made by the workers, seen by the main thread's own libdevmapper.
    for (const id of ids) expect(tp.dm.info(name(id))).not.toBeNull();
    await Promise.all(ids.map((id) => kw.fsyncDevice(name(id))));
    await Promise.all(ids.map(async (id) => {
      await kw.deactivate(name(id), { retry: true });
      await kw.deleteThin(id);
    }));
    for (const id of ids) expect(tp.dm.info(name(id))).toBeNull();
    // The pool no longer has them: a second delete is ENODATA.
    expect(() => tp.pool.deleteThin(10)).toThrow(DmError);
    // Threads' libdevmapper copies toggle the process umask around mknod; idle, it is the process's again.
    const now = process.umask();
    expect(now).toBe(umaskAtStart);
  });

  test("a failure comes back as a DmError with the kernel's errno", async () => {
    const err = await kw.deleteThin(4242).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DmError);
    expect(isErrno(err, Errno.ENODATA)).toBe(true);
    expect(String((err as Error).message)).toContain("delete 4242");
    // A create_snap of an id the pool has: EEXIST.
    await kw.createSnap(20, 1, null);
    const exists = await kw.createSnap(20, 1, null).then(() => null, (e: unknown) => e);
    expect(isErrno(exists, Errno.EEXIST)).toBe(true);
    await kw.deleteThin(20);
  });

  test("calls on one device run in the order they were made", async () => {
    await kw.createSnap(30, 1, null);
    // Not awaited one by one: without per-device ordering the deactivate
    // could reach the kernel before the activate.
    const steps = [
      kw.activate(name(30), 30, SIZE),
      kw.flush(name(30)),
      kw.fsyncDevice(name(30)),
      kw.deactivate(name(30)),
      kw.activate(name(30), 30, SIZE),
      kw.deactivate(name(30)),
    ];
    await Promise.all(steps);
    expect(tp.dm.info(name(30))).toBeNull();
    await kw.deleteThin(30);
  });

  test("idle threads exit, and a later call starts one again", async () => {
    await kw.createSnap(40, 1, null);
    await Bun.sleep(800);
    expect(kw.threads).toBe(0);
    await kw.activate(name(40), 40, SIZE);
    expect(kw.threads).toBe(1);
    expect(tp.dm.info(name(40))).not.toBeNull();
    await kw.deactivate(name(40));
    await kw.deleteThin(40);
  });

  test("probe: a thread loads its own libdevmapper, answers, and is let go", async () => {
    const other = new KernelWorkers({ poolName: "tskw", max: 2 });
    await other.probe();
    expect(other.threads).toBe(0);
    await other.createSnap(60, 1, null); // and calls work after it
    await other.deleteThin(60);
    other.close();
  });

  test("a thread that failed inside a call is replaced by one with a fresh libdevmapper", async () => {
    // A FIFO under /dev/mapper: the thread's fsync blocks in open(2) until a
    // writer comes, as a call stuck in the kernel would; terminate() cannot
    // interrupt it, so the thread stays inside its library for now.
    const fifo = "/dev/mapper/tskw-fifo";
    rmSync(fifo, { force: true });
    expect(spawnSync("mkfifo", [fifo]).status).toBe(0);
    const other = new KernelWorkers({ poolName: "tskw", max: 1 });
    try {
      const blocked = other.fsyncDevice("tskw-fifo").then(
        () => null,
        (e: unknown) => e,
      );
      await Bun.sleep(1500); // the thread starts and enters open(2)
      const before = other.libraryFiles();
      failFirstThread(other, "simulated crash");
      expect(String(await blocked)).toContain("simulated crash");
      const after = other.libraryFiles();
      expect(after.length).toBe(1);
      expect(after[0]).not.toBe(before[0]);
      // The replacement works while the old thread is still stuck.
      await other.createSnap(70, 1, null);
      await other.deleteThin(70);
    } finally {
      // Let the old thread out of open(2).
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // no reader left
      }
      other.close();
      rmSync(fifo, { force: true });
    }
  });

  test("after too many failed threads, calls are refused (no unbounded copies)", async () => {
    const other = new KernelWorkers({ poolName: "tskw", max: 1 });
    try {
      for (let i = 0; i <= MAX_RETIRED_COPIES; i++) {
        const call = other.deleteThin(900000 + i).then(
          () => null,
          (e: unknown) => e,
        );
        failFirstThread(other, `crash ${i}`);
        expect(String(await call)).toContain(`crash ${i}`);
      }
      await expect(other.deleteThin(1)).rejects.toThrow(`limit ${MAX_RETIRED_COPIES}`);
      expect(other.threads).toBe(0);
    } finally {
      other.close();
    }
  });

  test("after close, calls are refused and no thread is left", async () => {
    const other = new KernelWorkers({ poolName: "tskw", max: 2 });
    await other.createSnap(50, 1, null);
    other.close();
    expect(other.threads).toBe(0);
    await expect(other.deleteThin(50)).rejects.toThrow("closed");
    tp.pool.deleteThin(50);
  });
});

/**
 * The compiled executable ships the threads' code as its own entry point:
 * serve must find it, run its calls there, and not fall back to the main thread.
 */
const noBinary = binaryMissing("kernel threads in the compiled binary", env.available);

describe.skipIf(!env.available || noBinary)("kernel threads in the compiled binary", () => {
  test("serve starts its threads and makes a chain of layers on them", async () => {
    await withBinaryDaemon("tskwbin", "512M", { logLevel: "info", kernelThreads: 4 }, async (d) => {
      const c = snapshotsClient(d.address);
      // Two chains at once, so that more than one thread has work.
      await Promise.all(
        ["a", "b"].map(async (chain) => {
          let parent = "";
          for (let i = 0; i < 3; i++) {
            await c.prepare({ key: `${chain}${i}`, parent });
            await c.commit({ name: `${chain}c${i}`, key: `${chain}${i}` });
            parent = `${chain}c${i}`;
          }
        }),
      );
      await c.prepare({ key: "x", parent: "ac2" });
      await c.remove({ key: "x" });
      const log = d.logs();
      expect(log).not.toContain("kernel threads unavailable");
      expect(log).toMatch(/msg=serving .*kernel_threads=4/);
    });
  }, 300_000);
});
