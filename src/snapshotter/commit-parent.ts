/**
 * Which parent a Commit may name (containerd 2.2+, CommitSnapshotRequest.parent).
 */
import { failedPrecondition, invalidArgument } from "../errors.ts";

/**
 * containerd 2.2+ may name a parent on Commit (CommitSnapshotRequest.parent):
 * its metadata layer forwards a client's WithParent whenever the active
 * snapshot had none, for any snapshotter. The built-in snapshotters accept
 * the same parent, refuse a different one, and adopt one when they had none.
 * A thin device cannot adopt a parent: its blocks are a snapshot of the
 * device it was created from, so that case is refused (thinsnap never
 * declares the "rebase" capability).
 */
export function checkCommitParent(key: string, current: string, requested: string): void {
  if (requested === "" || requested === current) return;
  if (current === "") {
    throw failedPrecondition(
      `cannot commit "${key}" onto parent "${requested}": it was prepared without a parent, and a thin device ` +
        `cannot adopt one (no rebase support); prepare it from "${requested}" instead`,
    );
  }
  throw invalidArgument(`cannot commit "${key}" onto parent "${requested}": its parent is "${current}"`);
}

