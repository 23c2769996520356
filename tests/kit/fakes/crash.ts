/**
 * Crash images on the fake pool: the database bytes and the pool's state at
 * the instant just before or just after one kernel call. Nothing the dying
 * process would do afterwards (roll-backs, later writes) gets in.
 */
import { Database } from "bun:sqlite";
import { Store } from "../../../src/store/store.ts";
import type { FakePool } from "./fake-pool.ts";

/** The error a crash hook throws to stop the operation where it stands. */
export class Crash extends Error {}

export interface CrashImage {
  db: Uint8Array;
  pool: FakePool;
}

/** Calls that only read the pool's state: not counted as kernel steps. */
const READS = new Set(["status", "info", "thin_status"]);

export interface ArmedCrash {
  /** The image, once the crash happened (null while the operation has not reached it). */
  readonly image: CrashImage | null;
  /** Unhooks the pool; returns the image, if the crash happened. */
  disarm(): CrashImage | null;
}

/**
 * Hooks `pool` so that the first call `hit` accepts takes an image and
 * throws a Crash, `when` "before" the call runs or "after" it returned.
 */
export function armCrash(pool: FakePool, store: Store, when: "before" | "after", hit: (call: string) => boolean): ArmedCrash {
  let image: CrashImage | null = null;
  const hook = (call: string): void => {
    if (image || !hit(call)) return;
    image = { db: store.serialize(), pool: pool.clone() };
    throw new Crash(call);
  };
  if (when === "before") pool.onCall = hook;
  else pool.afterCall = hook;
  return {
    get image() {
      return image;
    },
    disarm() {
      pool.onCall = pool.afterCall = null;
      return image;
    },
  };
}

/** armCrash at the `step`-th kernel call (from 0; state reads not counted). */
export function armCrashAtStep(pool: FakePool, store: Store, when: "before" | "after", step: number): ArmedCrash {
  let n = 0;
  return armCrash(pool, store, when, (call) => !READS.has(call) && n++ === step);
}

/** Rethrows `e` unless it is the crash (or an error caused by it). */
export function rethrowUnlessCrash(e: unknown): void {
  if (!(e instanceof Crash) && !(e instanceof Error && e.cause instanceof Crash)) throw e;
}

/** The store as it would be reopened from the crash image's database bytes. */
export function storeOf(image: CrashImage): Store {
  return Store.wrap(Database.deserialize(image.db));
}

/** Runs `op` with a crash just after the pool's first `call` returned; the image, or an error if `op` did not crash. */
export async function crashAfter(pool: FakePool, store: Store, call: string, op: () => Promise<unknown>): Promise<CrashImage> {
  const crash = armCrash(pool, store, "after", (c) => c === call);
  try {
    await op();
    throw new Error(`expected a crash after ${call}, the operation returned`);
  } catch (e) {
    rethrowUnlessCrash(e);
  } finally {
    crash.disarm();
  }
  return crash.image!;
}
