/**
 * Serialises async sections per key. run() queues behind every earlier
 * holder of any of its keys; all keys are taken at once, in call order, so
 * two sections can never wait for each other in a cycle.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const unique = [...new Set(keys)];
    const before = unique.map((k) => this.tails.get(k)).filter((p) => p !== undefined);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    for (const k of unique) this.tails.set(k, mine);
    try {
      if (before.length > 0) await Promise.all(before);
      return await fn();
    } finally {
      release();
      for (const k of unique) if (this.tails.get(k) === mine) this.tails.delete(k);
    }
  }

  /**
   * Runs a synchronous `fn` once every section already holding or waiting
   * for `key` is done, without taking the key itself: a read that must not
   * see a write half done. Uncontended, it costs a map lookup.
   */
  async after<T>(key: string, fn: () => T): Promise<T> {
    const tail = this.tails.get(key);
    if (tail !== undefined) await tail;
    // Synchronous: no later section on the key can start before it returns.
    return fn();
  }

  /** Resolves once nothing holds or waits for any key. */
  async drained(): Promise<void> {
    while (this.tails.size > 0) await Promise.all(this.tails.values());
  }

  /** Keys currently held or waited for (for tests and leak checks). */
  get size(): number {
    return this.tails.size;
  }
}
