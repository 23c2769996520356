/**
 * The snapshotter contract, shaped after containerd's snapshots.Snapshotter
 * (snapshots/snapshotter.go). The RPC layer depends only on this file.
 */
import type { Info, Labels } from "../model.ts";

// The model types live below the store and the filters; re-exported here so
// the RPC layer keeps depending on this one file.
export type { Info, Kind, Labels } from "../model.ts";

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface Usage {
  /** Bytes exclusively owned by this snapshot. */
  size: bigint;
  inodes: bigint;
}

export interface SnapshotOpts {
  labels?: Labels;
}

export interface CommitOpts extends SnapshotOpts {
  /**
   * containerd 2.2+ (CommitSnapshotRequest.parent): the parent the committed
   * snapshot must have. "" = keep the current one; the same = accepted; a
   * different one = InvalidArgument; one for a parentless snapshot =
   * FailedPrecondition (a thin device cannot adopt a parent).
   */
  parent?: string;
}

export interface Snapshotter {
  stat(key: string): Promise<Info>;
  /** fieldpaths: [] = replace all labels; "labels" or "labels.<k>". */
  update(info: Pick<Info, "name" | "labels">, fieldpaths: string[]): Promise<Info>;
  usage(key: string): Promise<Usage>;
  mounts(key: string): Promise<Mount[]>;
  prepare(key: string, parent: string, opts?: SnapshotOpts): Promise<Mount[]>;
  view(key: string, parent: string, opts?: SnapshotOpts): Promise<Mount[]>;
  commit(name: string, key: string, opts?: CommitOpts): Promise<void>;
  remove(key: string): Promise<void>;
  /** Calls fn for every snapshot matching any of the filters (OR); [] = all. */
  walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void>;
  cleanup(): Promise<void>;
  close(): Promise<void>;
}
