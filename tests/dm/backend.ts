/** A ThinSnapshotter on a real thin-pool in the guest, and writing into a snapshot. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Store } from "../../src/store/store.ts";
import { ThinSnapshotter, type SnapshotterOptions } from "../../src/snapshotter/snapshotter.ts";
import { formatDevice } from "../../src/snapshotter/mkfs.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";
import type { Mount } from "../../src/snapshotter/types.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { withMount } from "../kit/process.ts";
import { KernelWorkers } from "../../src/dm/kernel-workers.ts";

export interface RealBackend {
  tp: TestPool;
  sn: ThinSnapshotter;
  store: Store;
  root: string;
  opts: SnapshotterOptions;
  reopen(over?: Partial<SnapshotterOptions>): Promise<ThinSnapshotter>;
  destroy(): Promise<void>;
}

export async function realBackend(
  name: string,
  over: Partial<SnapshotterOptions> = {},
  poolOpts: { dataSize?: number; metaSize?: number } = {},
  kernelThreads = 0,
): Promise<RealBackend> {
  const tp = createTestPool(name, { dataSize: poolOpts.dataSize ?? 2 * 2 ** 30, metaSize: poolOpts.metaSize });
  const root = mkdtempSync(`/tmp/${name}-root-`);
  const opts: SnapshotterOptions = {
    ...TEST_OPTIONS,
    poolName: name,
    ...over,
  };
  // As the daemon with kernel_threads = N: the sleeping kernel calls on worker threads.
  const kernel = kernelThreads > 0 ? new KernelWorkers({ poolName: name, max: kernelThreads }) : undefined;
  const openSn = async (o: SnapshotterOptions): Promise<{ sn: ThinSnapshotter; store: Store }> => {
    const store = Store.open(`${root}/metadata.db`);
    const sn = await ThinSnapshotter.open(o, {
      store,
      pool: tp.pool,
      format: (dev, fs, o) => formatDevice(dev, fs, o, root),
      rootPath: root, // as serve: private mounts under root_path, found there again at start-up
      listDevices: () => tp.dm.list(),
      kernel,
    });
    return { sn, store };
  };
  let cur = await openSn(opts);
  const b: RealBackend = {
    tp,
    sn: cur.sn,
    store: cur.store,
    root,
    opts,
    async reopen(o2 = {}) {
      await b.sn.close();
      cur = await openSn({ ...opts, ...o2 });
      b.sn = cur.sn;
      b.store = cur.store;
      return cur.sn;
    },
    async destroy() {
      await b.sn.close();
      kernel?.close();
      tp.destroy();
      rmSync(root, { recursive: true, force: true });
    },
  };
  return b;
}

/** Writes `bytes` of incompressible data into a file of the snapshot and syncs it. */
export async function writeBytes(mounts: Mount[], bytes: number, file = "blob"): Promise<void> {
  await withMount(mounts, (dir) => {
    const buf = Buffer.alloc(bytes);
    for (let i = 0; i < bytes; i += 4096) buf.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
    writeFileSync(`${dir}/${file}`, buf);
  });
}
