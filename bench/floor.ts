/**
 * The floor: the bare device-mapper calls each snapshot operation needs,
 * issued back to back through thinsnap's own binding (src/dm) on a thin-pool
 * of the same geometry, with no store, no gRPC, no checks:
 *
 *   Prepare / View (parentless or child): message "create_snap ID ORIGIN" + create (create, load, resume) of the thin device
 *   Commit:  fsync of the device + remove
 *   Remove:  remove + message "delete ID"
 *   Usage:   status of the thin device
 *   layer:   Prepare floor + mount, write, umount + Commit floor
 *
 * bench.ts interleaves these calls with the snapshotters' samples, so that
 * all of them see the same host load.
 */
import { DeviceMapper, ThinPool } from "../src/dm/index.ts";
import { formatDevice } from "../src/snapshotter/mkfs.ts";
import { mountWriteUmount } from "./workload.ts";

export class FloorPool {
  private readonly dm = new DeviceMapper();
  private readonly pool: ThinPool;
  private nextId = 1;
  /** A formatted base device (inactive), like thinsnap's. */
  base = 0;
  /** A committed (inactive) snapshot of the base. */
  parent = 0;

  constructor(
    readonly poolName: string,
    readonly sizeBytes: bigint,
  ) {
    this.pool = new ThinPool(this.dm, poolName);
  }

  name(id: number): string {
    return `${this.poolName}-f-${id}`;
  }

  async init(): Promise<void> {
    this.base = this.nextId++;
    this.pool.createThin(this.base);
    this.pool.activate(this.name(this.base), this.base, this.sizeBytes);
    await formatDevice(`/dev/mapper/${this.name(this.base)}`, "ext4", "", "/tmp/thinsnap-floor");
    this.pool.fsyncDevice(this.name(this.base));
    this.pool.deactivate(this.name(this.base));
    this.parent = this.nextId++;
    this.dm.message(this.poolName, `create_snap ${this.parent} ${this.base}`);
  }

  /** create_snap + create/load/resume (at `sizeBytes`, larger for a grown snapshot): returns the new (active) id. */
  prepare(origin: number, sizeBytes = this.sizeBytes): number {
    const id = this.nextId++;
    this.dm.message(this.poolName, `create_snap ${id} ${origin}`);
    this.pool.activate(this.name(id), id, sizeBytes);
    return id;
  }

  /**
   * A snapshot of an active (mounted) device, as a parent committed while
   * mounted is: origin suspended around create_snap; its ext4 then needs
   * journal recovery (not clean). Returns the new (active) id.
   */
  prepareFromActive(origin: number, sizeBytes: bigint): number {
    const id = this.nextId++;
    this.pool.createSnap(id, origin, this.name(origin));
    this.pool.activate(this.name(id), id, sizeBytes);
    return id;
  }

  /** fsync + remove: the device stays in the pool, inactive. */
  commit(id: number): void {
    this.pool.fsyncDevice(this.name(id));
    this.dm.remove(this.name(id));
  }

  /** (remove +) message delete. */
  remove(id: number, active: boolean): void {
    if (active) this.dm.remove(this.name(id));
    this.dm.message(this.poolName, `delete ${id}`);
  }

  usage(id: number): bigint {
    return this.dm.thinStatus(this.name(id)).mappedSectors;
  }

  /** A chain of `layers` layers from the base; returns the ids (committed, inactive). */
  async chain(layers: number): Promise<number[]> {
    const ids: number[] = [];
    let origin = this.base;
    for (let j = 0; j < layers; j++) {
      const id = this.prepare(origin);
      await mountWriteUmount([{ type: "ext4", source: `/dev/mapper/${this.name(id)}`, options: [] }], `layer${j}`);
      this.commit(id);
      ids.push(id);
      origin = id;
    }
    return ids;
  }
}
