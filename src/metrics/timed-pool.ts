/**
 * Times device-mapper calls for thinsnap_kernel_call_duration_seconds by
 * wrapping the snapshotter's ports (PoolApi, KernelCalls) without changing
 * them. Failed calls are timed too: a suspend that timed out took its time.
 *
 * Wire one of each: the pool the snapshotter gets, and the KernelCalls when
 * they run on worker threads (inline KernelCalls go through the pool, so
 * wrapping both would count them twice).
 */
import type { KernelCalls, PoolApi } from "../snapshotter/pool-api.ts";
import type { KernelCallName } from "./registry.ts";

export type RecordKernelCall = (call: KernelCallName, seconds: number) => void;

function timer(record: RecordKernelCall) {
  return {
    sync<T>(call: KernelCallName, fn: () => T): T {
      const t0 = performance.now();
      try {
        return fn();
      } finally {
        record(call, (performance.now() - t0) / 1000);
      }
    },
    async async<T>(call: KernelCallName, fn: () => Promise<T>): Promise<T> {
      const t0 = performance.now();
      try {
        return await fn();
      } finally {
        record(call, (performance.now() - t0) / 1000);
      }
    },
  };
}

/**
 * `pool` with its kernel calls timed. flush (a suspend that freezes and
 * flushes, then a resume) is timed as "suspend"; create_snap includes the
 * suspend/resume of an active origin around it. Reads that are not in the
 * metric's call list (info, thin status, block size) pass through.
 */
export function timedPool(pool: PoolApi, record: RecordKernelCall): PoolApi {
  const t = timer(record);
  return {
    get name() {
      return pool.name;
    },
    status: () => t.sync("status", () => pool.status()),
    blockSize: () => pool.blockSize(),
    setTransactionId: (current, next) => pool.setTransactionId(current, next),
    createThin: (id) => t.sync("create_thin", () => pool.createThin(id)),
    createSnap: (id, originId, activeOrigin) => t.sync("create_snap", () => pool.createSnap(id, originId, activeOrigin)),
    deleteThin: (id) => t.sync("delete", () => pool.deleteThin(id)),
    activate: (dmName, id, sizeBytes) => t.sync("activate", () => pool.activate(dmName, id, sizeBytes)),
    deactivate: (dmName, opts) => t.sync("deactivate", () => pool.deactivate(dmName, opts)),
    isActive: (dmName) => pool.isActive(dmName),
    info: (dmName) => pool.info(dmName),
    resume: (dmName) => t.sync("resume", () => pool.resume(dmName)),
    mappedBytes: (dmName) => pool.mappedBytes(dmName),
    fsyncDevice: (dmName) => t.sync("fsync", () => pool.fsyncDevice(dmName)),
    flush: (dmName) => t.sync("suspend", () => pool.flush(dmName)),
    discardDevice: (dmName) => t.sync("discard", () => pool.discardDevice(dmName)),
  };
}

/** `calls` (e.g. src/dm/kernel-workers.ts) timed from the request's side: thread hop included. */
export function timedKernelCalls(calls: KernelCalls, record: RecordKernelCall): KernelCalls {
  const t = timer(record);
  return {
    createSnap: (id, originId, activeOrigin) => t.async("create_snap", () => calls.createSnap(id, originId, activeOrigin)),
    deleteThin: (id) => t.async("delete", () => calls.deleteThin(id)),
    activate: (dmName, id, sizeBytes) => t.async("activate", () => calls.activate(dmName, id, sizeBytes)),
    deactivate: (dmName, opts) => t.async("deactivate", () => calls.deactivate(dmName, opts)),
    fsyncDevice: (dmName) => t.async("fsync", () => calls.fsyncDevice(dmName)),
    flush: (dmName) => t.async("suspend", () => calls.flush(dmName)),
    discardDevice: (dmName) => t.async("discard", () => calls.discardDevice(dmName)),
  };
}
