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
}
