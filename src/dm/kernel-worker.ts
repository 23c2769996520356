/**
 * The code of a kernel worker thread (see kernel-workers.ts): loads its own
 * instance of libdevmapper from the file it is given, then runs ThinPool
 * calls one at a time and posts each outcome back.
 *
 * A worker's entry module: this file from the source tree; dm/kernel-worker.js
 * beside the main module in the compiled binary (build.ts makes it a second
 * entry point) -- it loads only src/dm, not the whole program.
 */
import { isMainThread } from "node:worker_threads";
import { DeviceMapper } from "./device-mapper.ts";
import { DmError, dmErrorFields } from "./errors.ts";
import { useLibdmFile } from "./libdm.ts";
import { ThinPool } from "./thin-pool.ts";
import type { WorkerReply, WorkerRequest } from "./kernel-protocol.ts";

declare const self: Worker;

let pool: ThinPool | null = null;
let initError: string | null = null;

function reply(r: WorkerReply): void {
  self.postMessage(r);
}

function onRequest(event: MessageEvent<WorkerRequest>): void {
  const req = event.data;
  if (req.type === "init") {
    try {
      useLibdmFile(req.libFile);
      pool = new ThinPool(new DeviceMapper(), req.poolName);
    } catch (e) {
      initError = e instanceof Error ? e.message : String(e);
    }
    return;
  }
  try {
    if (!pool) throw new Error(`kernel worker could not load libdevmapper: ${initError ?? "not initialised"}`);
    if (req.type === "ping") {
      reply({ type: "done", id: req.id });
      return;
    }
    // Only KernelCallName methods are ever sent (kernel-workers.ts).
    const fn = pool[req.call] as (...args: unknown[]) => void;
    fn.apply(pool, req.args);
    reply({ type: "done", id: req.id });
  } catch (e) {
    if (e instanceof DmError) reply({ type: "failed", id: req.id, dm: dmErrorFields(e) });
    else {
      const err = e instanceof Error ? e : new Error(String(e));
      const code = "code" in err && typeof err.code === "string" ? err.code : undefined;
      reply({ type: "failed", id: req.id, error: { name: err.name, message: err.message, code } });
    }
  }
}

if (!isMainThread) self.onmessage = onRequest;
