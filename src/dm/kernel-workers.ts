/**
 * Runs the pool calls that sleep in the kernel on worker threads.
 *
 * A device suspend, resume or remove waits for in-flight IO and RCU grace
 * periods, and a pool message commits metadata: most of such an ioctl's time
 * is spent asleep, not on a CPU. Made on the JS thread, each would stall
 * every other request; on workers, they overlap (measured in the guest: 1, 2,
 * 4 and 8 threads doing create_snap + activate + remove gave 12, 24, 50 and
 * 80 cycles/s). End to end, under emulation, the hop to a thread costs more
 * than that wins (bench: kernel_threads rows), hence off by default.
 *
 * libdevmapper keeps process-wide state (the pending /dev/mapper node
 * operations, the log hook) and is not thread-safe, so each worker loads a
 * private instance of it: a copy of the library in a memfd, which the
 * dynamic loader treats as a different object. Calls on the same device are
 * still made one at a time (a create_snap that suspends an active origin
 * must not race a remove of it).
 *
 * Workers start on demand, up to `max`, and exit after `idleMs` without work,
 * so an idle daemon holds none. A thread stopped because it failed (or with
 * calls in flight) may still be inside its libdevmapper -- terminate() cannot
 * interrupt an ioctl -- so its slot's next thread gets a fresh copy; the old
 * one stays loaded (and its descriptor open) for the process's life, and after
 * MAX_RETIRED_COPIES such failures the workers refuse calls instead of leaking more.
 */
import { closeSync, existsSync, readFileSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KeyedLock } from "../keyed-lock.ts";
import { memfdCreate } from "../sys/libc.ts";
import { reviveDmError } from "./errors.ts";
import type { KernelCallArgs, KernelCallName, WorkerReply, WorkerRequest } from "./kernel-protocol.ts";
import { loadedLibdmFile } from "./libdm.ts";

export interface KernelWorkersOptions {
  poolName: string;
  /** At most this many threads (and calls in the kernel at once). */
  max: number;
  /** A worker without work for this long exits (default 30 s). */
  idleMs?: number;
}

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

interface Slot {
  /** /proc/self/fd/N of this slot's copy of libdevmapper; kept for the process's life. */
  libFile: string;
  worker: Worker | null;
  inFlight: Map<number, Pending>;
  idle: ReturnType<typeof setTimeout> | null;
}

const DEFAULT_IDLE_MS = 30_000;

/** Copies of libdevmapper left to failed threads before calls are refused (each costs the library's size). */
export const MAX_RETIRED_COPIES = 16;

/**
 * The worker's entry file: kernel-worker.ts beside this file from the source
 * tree; in the compiled binary (build.ts) or a bundle, kernel-worker.js built
 * as its own entry point beside the main module. null: not shipped.
 */
function workerEntry(): string | null {
  const beside = fileURLToPath(new URL("./kernel-worker.ts", import.meta.url));
  if (existsSync(beside)) return beside;
  for (const rel of ["dm/kernel-worker.js", "kernel-worker.js"]) {
    const p = join(dirname(Bun.main), rel);
    if (existsSync(p)) return p;
  }
  return null;
}

/**
 * The process's umask, read before any thread exists. libdevmapper (each
 * thread's own copy, and the main thread's) makes /dev/mapper nodes between
 * umask(0) and umask(old) when udev does not; two threads interleaving that
 * pair can leave the process at umask 0, and every file made afterwards
 * world-writable. It is put back whenever no thread is inside a call.
 */
const PROCESS_UMASK = process.umask();

export class KernelWorkers {
  private readonly slots: Slot[] = [];
  private readonly devices = new KeyedLock();
  private readonly library: Buffer;
  private nextId = 1;
  private closed = false;
  private copies = 0;
  private retired = 0;

  constructor(private readonly opts: KernelWorkersOptions) {
    if (!(opts.max >= 1)) throw new RangeError(`kernel workers: max must be at least 1, got ${opts.max}`);
    // Read now: a library upgraded on disk later must not be mixed with the loaded one.
    this.library = readFileSync(loadedLibdmFile());
  }

  createSnap(...args: KernelCallArgs<"createSnap">): Promise<void> {
    const [, , activeOrigin] = args;
    return this.call("createSnap", args, activeOrigin ? [activeOrigin] : []);
  }

  deleteThin(...args: KernelCallArgs<"deleteThin">): Promise<void> {
    return this.call("deleteThin", args, []);
  }

  activate(...args: KernelCallArgs<"activate">): Promise<void> {
    return this.call("activate", args, [args[0]]);
  }

  deactivate(...args: KernelCallArgs<"deactivate">): Promise<void> {
    return this.call("deactivate", args, [args[0]]);
  }

  fsyncDevice(...args: KernelCallArgs<"fsyncDevice">): Promise<void> {
    return this.call("fsyncDevice", args, [args[0]]);
  }

  flush(...args: KernelCallArgs<"flush">): Promise<void> {
    return this.call("flush", args, [args[0]]);
  }

  discardDevice(...args: KernelCallArgs<"discardDevice">): Promise<void> {
    return this.call("discardDevice", args, [args[0]]);
  }

  /**
   * Starts a thread and checks that it can load its copy of libdevmapper
   * (a memfd may not be executable where vm.memfd_noexec forbids it), then
   * lets it go. Throws what went wrong.
   */
  async probe(): Promise<void> {
    const slot = this.pick();
    const worker = this.ensureWorker(slot);
    try {
      await this.send(slot, worker, { type: "ping", id: this.nextId++ });
    } finally {
      this.stop(slot, new Error("probe done"), false);
    }
  }

  /** The copy of libdevmapper each slot's next (or current) thread loads. */
  libraryFiles(): string[] {
    return this.slots.map((s) => s.libFile);
  }

  /** Threads running now. */
  get threads(): number {
    return this.slots.filter((s) => s.worker !== null).length;
  }

  /** Stops every thread; calls still in flight fail. */
  close(): void {
    this.closed = true;
    for (const slot of this.slots) this.stop(slot, new Error("kernel workers closed"), false);
  }

  private call(call: KernelCallName, args: unknown[], devices: string[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error("kernel workers closed"));
    if (this.retired > MAX_RETIRED_COPIES) {
      return Promise.reject(
        new Error(`kernel workers failed ${this.retired} times (limit ${MAX_RETIRED_COPIES}): restart thinsnap, or set kernel_threads = 0`),
      );
    }
    return this.devices.run(devices, () => {
      const slot = this.pick();
      const worker = this.ensureWorker(slot);
      return this.send(slot, worker, { type: "call", id: this.nextId++, call, args });
    });
  }

  private send(slot: Slot, worker: Worker, req: WorkerRequest & { id: number }): Promise<void> {
    if (slot.idle) clearTimeout(slot.idle);
    slot.idle = null;
    // A thread with work keeps the process alive (a call awaited before
    // anything else holds the event loop, e.g. at start-up); an idle one not.
    worker.ref();
    return new Promise<void>((resolve, reject) => {
      slot.inFlight.set(req.id, { resolve, reject });
      worker.postMessage(req);
    });
  }

  /** An idle running thread, else a new one, else the least busy. */
  private pick(): Slot {
    const running = this.slots.filter((s) => s.worker !== null);
    const free = running.find((s) => s.inFlight.size === 0);
    if (free) return free;
    const parked = this.slots.find((s) => s.worker === null);
    if (parked) return parked;
    if (this.slots.length < this.opts.max) return this.newSlot();
    return running.reduce((a, b) => (b.inFlight.size < a.inFlight.size ? b : a));
  }

  private newSlot(): Slot {
    const slot: Slot = { libFile: this.copyLibrary(), worker: null, inFlight: new Map(), idle: null };
    this.slots.push(slot);
    return slot;
  }

  /** A new private copy of libdevmapper; returns the path its thread loads it by. */
  private copyLibrary(): string {
    const fd = memfdCreate(`libdevmapper-${this.copies++}`);
    try {
      for (let off = 0; off < this.library.length; ) off += writeSync(fd, this.library, off);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    // The descriptor stays open: the loader knows the copy by this path, and
    // a reused number would make it hand back a stale instance.
    return `/proc/self/fd/${fd}`;
  }

  private ensureWorker(slot: Slot): Worker {
    if (slot.worker) return slot.worker;
    if (slot.libFile === "") slot.libFile = this.copyLibrary();
    const entry = workerEntry();
    if (entry === null) throw new Error(`kernel worker code not found beside ${Bun.main}`);
    const worker = new Worker(entry);
    worker.onmessage = (event: MessageEvent<WorkerReply>) => this.settle(slot, event.data);
    // Only while it is still the slot's thread: a stopped one's late events
    // must not stop its successor.
    worker.onerror = (event: ErrorEvent) => {
      if (slot.worker === worker) this.stop(slot, new Error(`kernel worker failed: ${event.message}`), true);
    };
    worker.addEventListener("close", () => {
      if (slot.worker === worker) this.stop(slot, new Error("kernel worker exited"), true);
    });
    const init: WorkerRequest = { type: "init", libFile: slot.libFile, poolName: this.opts.poolName };
    worker.postMessage(init);
    slot.worker = worker;
    return worker;
  }

  private settle(slot: Slot, r: WorkerReply): void {
    const p = slot.inFlight.get(r.id);
    if (!p) return;
    slot.inFlight.delete(r.id);
    if (r.type === "done") p.resolve();
    else if ("dm" in r) p.reject(reviveDmError(r.dm));
    else p.reject(Object.assign(new Error(r.error.message), { name: r.error.name, code: r.error.code }));
    if (this.slots.every((s) => s.inFlight.size === 0)) process.umask(PROCESS_UMASK);
    if (slot.inFlight.size === 0 && !this.closed) {
      slot.worker?.unref();
      slot.idle = setTimeout(() => this.stop(slot, new Error("kernel worker stopped"), false), this.opts.idleMs ?? DEFAULT_IDLE_MS);
      slot.idle.unref();
    }
  }

  /**
   * Stops the slot's thread. `failed`: it may still be inside its library
   * (as may any thread with calls in flight), so the slot's next thread
   * gets a fresh copy rather than sharing that instance with it.
   */
  private stop(slot: Slot, reason: Error, failed: boolean): void {
    if (slot.idle) clearTimeout(slot.idle);
    slot.idle = null;
    const w = slot.worker;
    slot.worker = null;
    if (w && (failed || slot.inFlight.size > 0) && !this.closed) {
      this.retired++;
      try {
        slot.libFile = this.copyLibrary();
      } catch {
        slot.libFile = ""; // copied when the slot is next used (which then reports the error)
      }
    }
    for (const p of slot.inFlight.values()) p.reject(reason);
    slot.inFlight.clear();
    w?.terminate();
  }
}
