/** Test bodies that remember a failure, so that an afterAll prints the daemons' logs only when something failed. */
export class FailureFlag {
  failed = false;
  /** Wraps a test body: a throw sets the flag and fails the test as before. */
  readonly step =
    (fn: () => Promise<void>) =>
    async (): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        this.failed = true;
        throw e;
      }
    };

  /** After a failure: the last `lines` lines of each daemon's log (those not started are skipped). */
  printLogTails(lines: number, daemons: Record<string, { logs(): string } | null | undefined>): void {
    if (!this.failed) return;
    for (const [name, d] of Object.entries(daemons)) {
      if (d) console.error(`---- ${name} log (tail) ----\n${d.logs().split("\n").slice(-lines).join("\n")}`);
    }
  }
}
