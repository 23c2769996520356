/**
 * In-memory Snapshotter with containerd's error semantics, for testing the
 * RPC layer (and anything else above the Snapshotter contract) without
 * device-mapper. Not a model of the thin-pool: mounts are made up.
 */
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
} from "../../../src/errors.ts";
import type { CommitOpts, Info, Kind, Labels, Mount, SnapshotOpts, Snapshotter, Usage } from "../../../src/snapshotter/types.ts";

export type Op = Exclude<keyof Snapshotter, "close">;

export class MemorySnapshotter implements Snapshotter {
  private readonly snapshots = new Map<string, Info>();
  /** Errors to throw from the next call of an operation (then cleared). */
  private readonly injected = new Map<Op, unknown>();
  /** Awaited at the start of every operation: lets tests hold calls in flight. */
  gate: Promise<void> | undefined;
  /** Usage reported per key; default is 4096 bytes, 1 inode. */
  readonly usages = new Map<string, Usage>();
  /** Number of operations that have started (including ones held by gate). */
  entered = 0;
  cleanups = 0;
  closed = false;

  /** Makes the next call of `op` throw `err`. */
  failNext(op: Op, err: unknown): void {
    this.injected.set(op, err);
  }

  private async enter(op: Op): Promise<void> {
    this.entered++;
    if (this.gate) await this.gate;
    if (this.injected.has(op)) {
      const err = this.injected.get(op);
      this.injected.delete(op);
      throw err;
    }
  }

  private get(key: string): Info {
    const info = this.snapshots.get(key);
    if (!info) throw notFound(`snapshot ${key} not found`);
    return info;
  }

  async stat(key: string): Promise<Info> {
    await this.enter("stat");
    return clone(this.get(key));
  }

  async update(info: Pick<Info, "name" | "labels">, fieldpaths: string[]): Promise<Info> {
    await this.enter("update");
    const cur = this.get(info.name);
    let labels: Labels = { ...cur.labels };
    if (fieldpaths.length === 0) labels = { ...info.labels };
    for (const p of fieldpaths) {
      if (p === "labels") {
        labels = { ...info.labels };
      } else if (p.startsWith("labels.")) {
        const k = p.slice("labels.".length);
        const v = info.labels[k];
        if (v === undefined) delete labels[k];
        else labels[k] = v;
      } else {
        throw invalidArgument(`cannot update ${p} field on snapshot ${info.name}`);
      }
    }
    cur.labels = labels;
    cur.updated = new Date();
    return clone(cur);
  }

  async usage(key: string): Promise<Usage> {
    await this.enter("usage");
    this.get(key);
    return this.usages.get(key) ?? { size: 4096n, inodes: 1n };
  }

  async mounts(key: string): Promise<Mount[]> {
    await this.enter("mounts");
    const info = this.get(key);
    if (info.kind === "committed") throw failedPrecondition(`snapshot ${key} is committed, it has no mounts`);
    return mountsFor(info);
  }

  async prepare(key: string, parent: string, opts?: SnapshotOpts): Promise<Mount[]> {
    await this.enter("prepare");
    return mountsFor(this.create("active", key, parent, opts));
  }

  async view(key: string, parent: string, opts?: SnapshotOpts): Promise<Mount[]> {
    await this.enter("view");
    return mountsFor(this.create("view", key, parent, opts));
  }

  private create(kind: Kind, key: string, parent: string, opts?: SnapshotOpts): Info {
    if (this.snapshots.has(key)) throw alreadyExists(`snapshot ${key} already exists`);
    if (parent !== "") {
      const p = this.snapshots.get(parent);
      if (!p) throw notFound(`parent snapshot ${parent} not found`);
      if (p.kind !== "committed") throw invalidArgument(`parent ${parent} is not committed`);
    }
    const now = new Date();
    const info: Info = { kind, name: key, parent, labels: { ...opts?.labels }, created: now, updated: now };
    this.snapshots.set(key, info);
    return info;
  }

  /** The options of the last Commit call, as the RPC layer passed them. */
  lastCommitOpts: CommitOpts | undefined;

  async commit(name: string, key: string, opts?: CommitOpts): Promise<void> {
    this.lastCommitOpts = opts;
    await this.enter("commit");
    const active = this.get(key);
    if (active.kind !== "active") throw failedPrecondition(`snapshot ${key} is not active`);
    if (this.snapshots.has(name)) throw alreadyExists(`snapshot ${name} already exists`);
    const now = new Date();
    this.snapshots.delete(key);
    this.snapshots.set(name, {
      kind: "committed",
      name,
      parent: active.parent,
      labels: { ...opts?.labels },
      created: now,
      updated: now,
    });
  }

  async remove(key: string): Promise<void> {
    await this.enter("remove");
    this.get(key);
    for (const s of this.snapshots.values()) {
      if (s.parent === key) throw failedPrecondition(`snapshot ${key} has children`);
    }
    this.snapshots.delete(key);
  }

  /** Supports only `name==x` filters (OR-ed); [] lists everything. */
  async walk(fn: (info: Info) => void | Promise<void>, filters: string[]): Promise<void> {
    await this.enter("walk");
    const names = filters.map((f) => {
      const m = /^name==(.+)$/.exec(f);
      if (!m?.[1]) throw invalidArgument(`unsupported filter ${JSON.stringify(f)}`);
      return m[1];
    });
    for (const info of [...this.snapshots.values()]) {
      if (names.length === 0 || names.includes(info.name)) await fn(clone(info));
    }
  }

  async cleanup(): Promise<void> {
    await this.enter("cleanup");
    this.cleanups++;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

function mountsFor(info: Info): Mount[] {
  return [
    {
      type: "ext4",
      source: `/dev/mapper/fake-${info.name}`,
      options: [info.kind === "view" ? "ro" : "rw"],
    },
  ];
}

function clone(info: Info): Info {
  return { ...info, labels: { ...info.labels } };
}
