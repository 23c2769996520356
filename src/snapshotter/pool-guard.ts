/**
 * The snapshotter's view of the pool's health: a short-lived status cache for
 * the space checks, the refusals for space (ResourceExhausted, told to the
 * metrics and the rate-limited warning), and the mapping of kernel failures
 * to the codes containerd understands.
 */
import { Errno, isErrno } from "../dm/errors.ts";
import { resourceExhausted, SnapshotterError, unavailable } from "../errors.ts";
import type { PoolApi, PoolStatus } from "./pool-api.ts";
import { enospcResource, spaceNumbers, spaceRefusal, type SpaceLimits, type SpaceResource } from "./space.ts";

/** How long a pool status read serves the space check by default. */
export const STATUS_TTL_MS = 500;

export type SpaceRefusalListener = (resource: SpaceResource, message: string) => void;

export class PoolGuard {
  private cache: { at: number; st: PoolStatus } | null = null;

  constructor(
    private readonly pool: PoolApi,
    private readonly limits: SpaceLimits,
    private readonly ttlMs = STATUS_TTL_MS,
    private readonly onRefusal?: SpaceRefusalListener,
  ) {}

  /**
   * Pool status at most ttlMs old: the reserve is a soft limit, and a status
   * ioctl per Prepare would cost as much as the create_snap itself. The
   * kernel's own ENOSPC is always authoritative.
   */
  status(op: string): PoolStatus {
    const now = performance.now();
    if (this.cache && now - this.cache.at < this.ttlMs) return this.cache.st;
    const st = this.call(op, () => this.pool.status());
    this.cache = { at: now, st };
    return st;
  }

  /** The next status() reads the kernel again. */
  forget(): void {
    this.cache = null;
  }

  /** Refuses new devices on a pool that is full, read-only or below the configured reserve. */
  checkSpace(op: string): void {
    if (this.refusal(this.status(op)) === null) return;
    // Decide on fresh numbers: space may have been freed since the cached read.
    this.forget();
    const again = this.refusal(this.status(op));
    if (again !== null) {
      this.forget();
      throw this.refuse(again.resource, `${op}: ${again.message}`);
    }
  }

  /**
   * Refuses a step that writes to the pool while it is out of data space:
   * a pool made without error_if_no_space (not by thinsnap) queues such
   * writes for the module's no_space_timeout (60 s), and the thread making
   * the call would sleep that long; with it, they fail. Read fresh: the pool
   * may have filled since the last read.
   */
  refuseIfOutOfData(op: string): void {
    this.forget();
    const st = this.status(op);
    if (st.mode !== "out_of_data_space") return;
    this.forget();
    throw this.refuse(
      "data",
      `${op}: pool ${this.pool.name} is out of data space (${spaceNumbers(st, this.pool.blockSize())}): ` +
        `writes to it cannot complete; remove snapshots or grow the pool's data device`,
    );
  }

  /** Maps kernel failures to the codes containerd understands. */
  mapError(e: unknown, op: string): Error {
    this.forget();
    if (e instanceof SnapshotterError) return e;
    // A write to a full pool with error_if_no_space fails with EIO (an
    // fsync's is a plain Error with that code): out of space all the same.
    const io = isErrno(e, Errno.EIO) || errorCode(e) === "EIO";
    if (isErrno(e, Errno.ENOSPC) || errorCode(e) === "ENOSPC" || io) {
      let st: PoolStatus | null = null;
      try {
        st = this.pool.status();
      } catch {
        // the pool may be unreadable; the errno says enough
      }
      if (!io || st?.mode === "out_of_data_space") {
        const numbers = st ? `: ${spaceNumbers(st, this.pool.blockSize())}` : "";
        return this.refuse(enospcResource(st), `${op}: pool ${this.pool.name} is out of space${numbers}`);
      }
    }
    if (isErrno(e, Errno.EOPNOTSUPP) || isErrno(e, Errno.EIO)) {
      // a pool in read-only or failed mode refuses messages this way
      return unavailable(`${op}: pool ${this.pool.name} refuses changes (read-only or failed? see thinsnap pool status, thin_check): ${(e as Error).message}`);
    }
    if (isErrno(e, Errno.ENXIO) || isErrno(e, Errno.ENODEV)) {
      return unavailable(`${op}: pool ${this.pool.name} is not available: ${(e as Error).message}`);
    }
    return new SnapshotterError("internal", `${op}: ${(e as Error).message ?? String(e)}`, { cause: e });
  }

  /** Runs a synchronous kernel call, mapping its failure. */
  call<T>(op: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw this.mapError(e, op);
    }
  }

  /** Awaits a kernel call, mapping its failure. */
  async callAsync<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.mapError(e, op);
    }
  }

  private refusal(st: PoolStatus): ReturnType<typeof spaceRefusal> {
    return spaceRefusal(this.pool.name, st, this.pool.blockSize(), this.limits);
  }

  private refuse(resource: SpaceResource, message: string): SnapshotterError {
    this.onRefusal?.(resource, message);
    return resourceExhausted(message);
  }
}

/** The `code` of a Node-style system error (fs calls throw those), if any. */
function errorCode(e: unknown): string | undefined {
  return e instanceof Error && "code" in e && typeof e.code === "string" ? e.code : undefined;
}
