/**
 * Issue 14 put together for `thinsnap serve`: the metrics (when
 * metrics_address is set), the pool watcher and the space-refusal log (always:
 * they are log lines an operator acts on). serve calls, in order:
 *
 *   const obs = await Observability.create({ metricsAddress, log, limits });   (early: a bad address stops the start)
 *   deps: pool: obs.wrapPool(pool), kernel: obs.wrapKernel(kernel), onSpaceRefusal: obs.onSpaceRefusal
 *   rpc server:            startServer({ observe: obs.observer() })
 *   await obs.start({ pool, store, remover: sn.remover, reconcile: sn.lastReconcile, lowWaterMarkBlocks })
 *   on shutdown: await obs.close()
 *
 * With metrics off the request path is untouched: no wrapper, no interceptor;
 * and prom-client is not even loaded (it costs ~60 ms of start-up, which
 * every CLI command would pay).
 */
import type { CallObserver } from "../rpc/interceptors.ts";
import type { Logger } from "../log.ts";
import type { ReconcileReport } from "../snapshotter/reconcile.ts";
import type { KernelCalls, PoolApi } from "../snapshotter/pool-api.ts";
import type { SpaceLimits, SpaceResource } from "../snapshotter/space.ts";
import type { Store } from "../store/store.ts";
import { REVISION, VERSION } from "../version.ts";
import { PoolWatch, POOL_WATCH_INTERVAL_MS } from "./pool-watch.ts";
import type { Metrics } from "./registry.ts";
import { formatMetricsAddress, parseMetricsAddress, type MetricsAddress } from "./address.ts";
import { startMetricsServer, type RunningMetricsServer } from "./server.ts";
import { SpaceLog } from "./space-log.ts";
import { timedKernelCalls, timedPool } from "./timed-pool.ts";

export interface ObservabilityOptions {
  /** metrics_address: "" = no metrics. Parsed here, so a bad one stops the start with a clear error. */
  metricsAddress: string;
  log: Logger;
  limits: SpaceLimits;
  pollIntervalMs?: number;
}

/** Prometheus label values for ReconcileReport's repair counts (busy and failed are not repairs). */
const REPAIR_KINDS: Partial<Record<keyof ReconcileReport, string>> = {
  rolledBack: "rolled_back",
  orphansDeleted: "orphans_deleted",
  deleted: "deleted",
  reactivated: "reactivated",
  resumed: "resumed",
  deactivated: "deactivated",
  strayMappings: "stray_mappings",
};

export class Observability {
  readonly metrics: Metrics | null;
  readonly spaceLog: SpaceLog;
  private readonly address: MetricsAddress | null;
  private watch: PoolWatch | null = null;
  private server: RunningMetricsServer | null = null;

  /** Parses metrics_address (a bad one throws MetricsAddressError) and loads prom-client only when it is set. */
  static async create(opts: ObservabilityOptions): Promise<Observability> {
    const address = parseMetricsAddress(opts.metricsAddress);
    let metrics: Metrics | null = null;
    if (address !== null) {
      const { Metrics } = await import("./registry.ts");
      metrics = new Metrics({
        version: VERSION,
        revision: REVISION,
        onReaderError: (reader, e) => opts.log.debug("metrics reader failed", { reader, error: String(e) }),
      });
    }
    return new Observability(opts, address, metrics);
  }

  private constructor(
    private readonly opts: ObservabilityOptions,
    address: MetricsAddress | null,
    metrics: Metrics | null,
  ) {
    this.address = address;
    this.metrics = metrics;
    this.spaceLog = new SpaceLog(opts.log);
  }

  wrapPool(pool: PoolApi): PoolApi {
    const m = this.metrics;
    return m ? timedPool(pool, (c, s) => m.kernelCall(c, s)) : pool;
  }

  /** The worker-thread calls timed; undefined stays undefined (the inline calls go through the timed pool). */
  wrapKernel<K extends KernelCalls>(kernel: K | undefined): KernelCalls | undefined {
    const m = this.metrics;
    return m && kernel ? timedKernelCalls(kernel, (c, s) => m.kernelCall(c, s)) : kernel;
  }

  /** SnapshotterDeps.onSpaceRefusal. */
  readonly onSpaceRefusal = (resource: SpaceResource, message: string): void => {
    this.metrics?.spaceRefusal(resource);
    this.spaceLog.refused(resource, message);
  };

  /** The RPC server's call observer (thinsnap_rpc_*); none with metrics off. */
  observer(): CallObserver | undefined {
    const m = this.metrics;
    return m ? (method, code, seconds) => m.rpc(method, code, seconds) : undefined;
  }

  /** Starts the pool watcher and, with metrics on, the gauges' readers and the /metrics server. */
  async start(d: {
    pool: PoolApi;
    store: Store;
    remover: { pending(): number };
    reconcile: ReconcileReport | null;
    /** The pool table's low_water_mark (data blocks); null: none known. */
    lowWaterMarkBlocks: bigint | null;
  }): Promise<void> {
    this.watch = new PoolWatch(
      d.pool,
      { lowWaterMarkBlocks: d.lowWaterMarkBlocks, limits: this.opts.limits },
      this.opts.log,
      this.opts.pollIntervalMs ?? POOL_WATCH_INTERVAL_MS,
    );
    this.watch.start();
    const m = this.metrics;
    if (m === null || this.address === null) return;
    if (d.reconcile) for (const [k, label] of Object.entries(REPAIR_KINDS)) m.reconcileRepairs(label, d.reconcile[k as keyof ReconcileReport]);
    const watch = this.watch;
    m.setReaders({
      pool: () => watch.sample(),
      counts: () => d.store.counts(),
      removeQueueLength: () => d.remover.pending(),
    });
    this.server = await startMetricsServer({
      address: this.address,
      metrics: m,
      onError: (msg, e) => this.opts.log.error(msg, { error: String(e) }),
    });
    this.opts.log.info("serving metrics", { metrics_address: formatMetricsAddress(this.server.address), path: "/metrics" });
  }

  /** Where /metrics is served (a port 0 resolved); null when off or not started. */
  get boundAddress(): MetricsAddress | null {
    return this.server?.address ?? null;
  }

  async close(): Promise<void> {
    this.watch?.stop();
    this.spaceLog.stop();
    await this.server?.close();
  }
}
