/**
 * Drivers for work written as generators that `yield` where the event loop
 * may run: the same code serves a synchronous caller (tests, tools) and the
 * daemon, which must keep answering other requests while a List works.
 */

/** Runs to the end without yielding. */
export function runSync<T>(steps: Generator<void, T, void>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * Runs to the end, letting the event loop (I/O, timers, other requests) run
 * at each yield. A timer, not setImmediate: under Bun a chain of immediates
 * starves socket I/O (a concurrent Stat waited 40-70 ms instead of 3-25).
 */
export async function runYielding<T>(steps: Generator<void, T, void>): Promise<T> {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setTimeout(resolve, 0));
  }
}
