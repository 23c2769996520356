/** Messages between KernelWorkers (kernel-workers.ts) and its threads (kernel-worker.ts). */
import type { DmErrorFields } from "./errors.ts";
import type { ThinPool } from "./thin-pool.ts";

/** The ThinPool methods a worker runs: the ones that sleep in the kernel. */
export type KernelCallName =
  | "createSnap"
  | "deleteThin"
  | "activate"
  | "deactivate"
  | "fsyncDevice"
  | "flush"
  | "discardDevice";

export type KernelCallArgs<C extends KernelCallName> = Parameters<ThinPool[C]>;

export type WorkerRequest =
  | { type: "init"; libFile: string; poolName: string }
  | { type: "call"; id: number; call: KernelCallName; args: unknown[] }
  /** Answers once the thread has its libdevmapper (or why it has none). */
  | { type: "ping"; id: number };

export type WorkerReply =
  | { type: "done"; id: number }
  | { type: "failed"; id: number; dm: DmErrorFields }
  | { type: "failed"; id: number; error: { name: string; message: string; code: string | undefined } };
