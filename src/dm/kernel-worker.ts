/**
 * The code of a kernel worker thread (see kernel-workers.ts): loads its own
 * instance of libdevmapper from the file it is given, then runs ThinPool
 * calls one at a time and posts each outcome back.
 *
 * Started as a worker's entry module: this file itself from the source tree,
 * or the executable's main module (src/cli/main.ts imports this file) in the
 * compiled binary. It does nothing on the main thread.
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
