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
    // Every metric lives in this registry only; every histogram has the same buckets.
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, ...labelNames: L[]): Counter<L> =>
      new Counter({ name, help, labelNames, registers });
    const gauge = <L extends string>(name: string, help: string, ...labelNames: L[]): Gauge<L> =>
      new Gauge({ name, help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, ...labelNames: L[]): Histogram<L> =>
      new Histogram({ name, help, labelNames, buckets: DURATION_BUCKETS, registers });
    this.rpcRequests = counter("thinsnap_rpc_requests_total", "Snapshots RPCs handled, by method and gRPC status code name", "method", "code");
    this.rpcDuration = histogram(
      "thinsnap_rpc_duration_seconds",
      "Time to answer a Snapshots RPC (a streaming List: until its last message)",
      "method",
    );
    this.kernelDuration = histogram(
      "thinsnap_kernel_call_duration_seconds",
      "Time of each device-mapper call (suspend: a flush's suspend and resume)",
      "call",
    );
    this.dataUsed = gauge("thinsnap_pool_data_used_bytes", "Data space used in the thin-pool");
    this.dataSize = gauge("thinsnap_pool_data_size_bytes", "Data space of the thin-pool");
    this.metadataUsed = gauge("thinsnap_pool_metadata_used_bytes", "Metadata space used in the thin-pool");
    this.metadataSize = gauge("thinsnap_pool_metadata_size_bytes", "Metadata space of the thin-pool");
    this.poolStatus = gauge("thinsnap_pool_status", "1 for the thin-pool's current status, 0 for the others", "status");
    this.snapshots = gauge("thinsnap_snapshots", "Snapshots in the store, by kind", "kind");
    this.thinDevices = gauge(
      "thinsnap_thin_devices",
      "Thin devices in the store, by state (creating and deleting: operations under way or interrupted)",
      "state",
    );
    this.removeQueue = gauge("thinsnap_remove_queue_length", "Thin devices waiting to be deleted from the pool");
    this.repairs = counter("thinsnap_reconcile_repairs_total", "Repairs made by start-up reconciliation, by kind", "kind");
    this.refusals = counter(
      "thinsnap_space_refusals_total",
      "New devices refused for lack of space (ResourceExhausted), by resource",
      "resource",
    );
    gauge("thinsnap_build_info", "Always 1; the labels say which thinsnap this is", "version", "revision").set(
      { version: opts.version, revision: opts.revision },
      1,
    );

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
