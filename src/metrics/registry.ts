/**
 * thinsnap's Prometheus metrics (issue 14): one prom-client Registry holding
 * exactly the metrics below, small typed methods for the request path (a
 * counter increment and a histogram observation: no I/O, no allocation of
 * note), and gauges filled at scrape time from injected readers that answer
 * from memory (the pool watcher's last status, a store count, the remove
 * queue): a scrape never waits on a kernel call.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { SPACE_RESOURCES, type SpaceResource } from "../snapshotter/space.ts";

/** Kernel calls timed by src/metrics/timed-pool.ts (`call` label). */
export const KERNEL_CALLS = [
  "create_snap",
  "create_thin",
  "activate",
  "deactivate",
  "delete",
  "suspend",
  "resume",
  "fsync",
  "discard",
  "status",
] as const;
export type KernelCallName = (typeof KERNEL_CALLS)[number];

/** `thinsnap_pool_status{status}`: exactly one of these is 1. */
export const POOL_STATUSES = ["rw", "ro", "out_of_data_space", "needs_check", "fail"] as const;
export type PoolStatusName = (typeof POOL_STATUSES)[number];

export const SNAPSHOT_KINDS = ["active", "view", "committed"] as const;
export const DEVICE_STATES = ["creating", "ready", "deleting"] as const;


/**
 * Buckets from 100 µs to 30 s, about three per decade: a Stat answers in
 * ~100 µs, a create_snap in milliseconds, a deactivate waiting out a busy
 * device in seconds.
 */
export const DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** The pool figures behind the pool gauges (src/metrics/pool-watch.ts keeps the last one). */
export interface PoolSample {
  status: PoolStatusName;
  /** Absent when the pool failed (its status line has no numbers). */
  dataUsedBytes?: bigint;
  dataSizeBytes?: bigint;
  metadataUsedBytes?: bigint;
  metadataSizeBytes?: bigint;
}

/**
 * Where the gauges come from, read once per scrape. Each must answer from
 * memory or the store, never from the kernel. A reader that throws leaves
 * its gauges at their previous values (reported through onReaderError).
 */
export interface MetricsReaders {
  /** null: no status read yet. */
  pool?: () => PoolSample | null;
  /** Snapshots by kind and thin devices by state (Store.counts). */
  counts?: () => {
    snapshots: Partial<Record<(typeof SNAPSHOT_KINDS)[number], number>>;
    devices: Partial<Record<(typeof DEVICE_STATES)[number], number>>;
  };
  removeQueueLength?: () => number;
}

export interface MetricsOptions {
  version: string;
  revision: string;
  /** prom-client's process metrics (memory, CPU, fds, event-loop lag); default true. */
  processMetrics?: boolean;
  readers?: MetricsReaders;
  onReaderError?: (reader: string, error: unknown) => void;
}

export class Metrics {
  readonly registry = new Registry();
  private readers: MetricsReaders;
  private readonly onReaderError: (reader: string, error: unknown) => void;

  private readonly rpcRequests: Counter<"method" | "code">;
  private readonly rpcDuration: Histogram<"method">;
  private readonly kernelDuration: Histogram<"call">;
  private readonly dataUsed: Gauge;
  private readonly dataSize: Gauge;
  private readonly metadataUsed: Gauge;
  private readonly metadataSize: Gauge;
  private readonly poolStatus: Gauge<"status">;
  private readonly snapshots: Gauge<"kind">;
  private readonly thinDevices: Gauge<"state">;
  private readonly removeQueue: Gauge;
  private readonly repairs: Counter<"kind">;
  private readonly refusals: Counter<"resource">;

  constructor(opts: MetricsOptions) {
    this.readers = opts.readers ?? {};
    this.onReaderError = opts.onReaderError ?? (() => {});
    const registers = [this.registry];
    this.rpcRequests = new Counter({
      name: "thinsnap_rpc_requests_total",
      help: "Snapshots RPCs handled, by method and gRPC status code name",
      labelNames: ["method", "code"],
      registers,
    });
    this.rpcDuration = new Histogram({
      name: "thinsnap_rpc_duration_seconds",
      help: "Time to answer a Snapshots RPC (a streaming List: until its last message)",
      labelNames: ["method"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.kernelDuration = new Histogram({
      name: "thinsnap_kernel_call_duration_seconds",
      help: "Time of each device-mapper call (suspend: a flush's suspend and resume)",
      labelNames: ["call"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.dataUsed = new Gauge({ name: "thinsnap_pool_data_used_bytes", help: "Data space used in the thin-pool", registers });
    this.dataSize = new Gauge({ name: "thinsnap_pool_data_size_bytes", help: "Data space of the thin-pool", registers });
    this.metadataUsed = new Gauge({
      name: "thinsnap_pool_metadata_used_bytes",
      help: "Metadata space used in the thin-pool",
      registers,
    });
    this.metadataSize = new Gauge({
      name: "thinsnap_pool_metadata_size_bytes",
      help: "Metadata space of the thin-pool",
      registers,
    });
    this.poolStatus = new Gauge({
      name: "thinsnap_pool_status",
      help: "1 for the thin-pool's current status, 0 for the others",
      labelNames: ["status"],
      registers,
    });
    this.snapshots = new Gauge({
      name: "thinsnap_snapshots",
      help: "Snapshots in the store, by kind",
      labelNames: ["kind"],
      registers,
    });
    this.thinDevices = new Gauge({
      name: "thinsnap_thin_devices",
      help: "Thin devices in the store, by state (creating and deleting: operations under way or interrupted)",
      labelNames: ["state"],
      registers,
    });
    this.removeQueue = new Gauge({
      name: "thinsnap_remove_queue_length",
      help: "Thin devices waiting to be deleted from the pool",
      registers,
    });
    this.repairs = new Counter({
      name: "thinsnap_reconcile_repairs_total",
      help: "Repairs made by start-up reconciliation, by kind",
      labelNames: ["kind"],
      registers,
    });
    this.refusals = new Counter({
      name: "thinsnap_space_refusals_total",
      help: "New devices refused for lack of space (ResourceExhausted), by resource",
      labelNames: ["resource"],
      registers,
    });
    new Gauge({
      name: "thinsnap_build_info",
      help: "Always 1; the labels say which thinsnap this is",
      labelNames: ["version", "revision"],
      registers,
    }).set({ version: opts.version, revision: opts.revision }, 1);

    // Known label values start at 0, so a rate() or an alert sees the series
    // before the first event.
    for (const s of POOL_STATUSES) this.poolStatus.set({ status: s }, 0);
    for (const k of SNAPSHOT_KINDS) this.snapshots.set({ kind: k }, 0);
    for (const s of DEVICE_STATES) this.thinDevices.set({ state: s }, 0);
    for (const r of SPACE_RESOURCES) this.refusals.inc({ resource: r }, 0);
    this.removeQueue.set(0);

    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** One finished RPC: `code` is the gRPC code name ("OK", "NotFound", …). */
  rpc(method: string, code: string, seconds: number): void {
    this.rpcRequests.inc({ method, code });
    this.rpcDuration.observe({ method }, seconds);
  }

  kernelCall(call: KernelCallName, seconds: number): void {
    this.kernelDuration.observe({ call }, seconds);
  }

  spaceRefusal(resource: SpaceResource): void {
    this.refusals.inc({ resource });
  }

  /** n repairs of one kind (a ReconcileReport field, e.g. "rolledBack"); 0 is ignored. */
  reconcileRepairs(kind: string, n: number): void {
    if (n > 0) this.repairs.inc({ kind }, n);
  }

  /** Sets or replaces the gauge readers (the daemon has them only once the snapshotter is open). */
  setReaders(readers: MetricsReaders): void {
    this.readers = readers;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text: gauges refreshed from the readers first. */
  async scrape(): Promise<string> {
    this.collect();
    return this.registry.metrics();
  }

  /** Fills the gauges from the readers (memory and store only). */
  collect(): void {
    const r = this.readers;
    this.read("pool", r.pool, (p) => {
      if (p === null) return;
      for (const s of POOL_STATUSES) this.poolStatus.set({ status: s }, s === p.status ? 1 : 0);
      // A failed pool has no figures: keep the last ones rather than report 0.
      if (p.dataUsedBytes !== undefined) this.dataUsed.set(Number(p.dataUsedBytes));
      if (p.dataSizeBytes !== undefined) this.dataSize.set(Number(p.dataSizeBytes));
      if (p.metadataUsedBytes !== undefined) this.metadataUsed.set(Number(p.metadataUsedBytes));
      if (p.metadataSizeBytes !== undefined) this.metadataSize.set(Number(p.metadataSizeBytes));
    });
    this.read("counts", r.counts, (c) => {
      for (const k of SNAPSHOT_KINDS) this.snapshots.set({ kind: k }, c.snapshots[k] ?? 0);
      for (const s of DEVICE_STATES) this.thinDevices.set({ state: s }, c.devices[s] ?? 0);
    });
    this.read("removeQueueLength", r.removeQueueLength, (n) => this.removeQueue.set(n));
  }

  private read<T>(name: string, reader: (() => T) | undefined, apply: (v: T) => void): void {
    if (!reader) return;
    let v: T;
    try {
      v = reader();
    } catch (e) {
      this.onReaderError(name, e);
      return;
    }
    apply(v);
  }
}
