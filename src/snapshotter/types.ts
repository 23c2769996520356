/**
 * The snapshotter contract, shaped after containerd's snapshots.Snapshotter
 * (snapshots/snapshotter.go). The RPC layer depends only on this file.
 */
export type Kind = "view" | "active" | "committed";

export type Labels = Record<string, string>;

export interface Info {
  kind: Kind;
  name: string;
  /** Name of the committed parent, "" when parentless. */
  parent: string;
  labels: Labels;
  created: Date;
  updated: Date;
}

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
