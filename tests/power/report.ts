/** What one boot of the power-cut test found (written by guest.ts, read by power-cut.test.ts). */
export interface BootReport {
  boot: number;
  /** serve's "reconcile: done" counters of this start (null: nothing to repair). */
  reconcile: Record<string, number> | null;
  problems: string[];
  snapshots: { active: number; view: number; committed: number };
  ackedCommitsChecked: number;
  /** Committed snapshots whose chain's files were read back through a View. */
  filesChecked: number;
  ackedPreparesKept: number;
  ackedPreparesRolledBack: number;
  /** Calls the cut interrupted (started, never returned) that did / did not happen. */
  unackedLanded: number;
  unackedNotLanded: number;
  workload?: { calls: number; acked: number; cutAfterMs: number };
}
