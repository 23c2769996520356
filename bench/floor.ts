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
 */
import { DeviceMapper, ThinPool } from "../src/dm/index.ts";
import { formatDevice } from "../src/snapshotter/mkfs.ts";
import { now, stats, type Stats } from "./lib.ts";
import { mountWriteUmount } from "./workload.ts";

export interface FloorResults {
  parentlessPrepare: Stats;
  childPrepare: Stats;
  view: Stats;
  commit: Stats;
  remove: Stats;
  usage: Stats;
  chain: Stats;
}

export interface FloorCounts {
  prepare: number;
  commit: number;
  remove: number;
  usage: number;
  chains: number;
  layers: number;
}

export async function measureFloor(poolName: string, baseSize: bigint, n: FloorCounts, log: (s: string) => void): Promise<FloorResults> {
  const dm = new DeviceMapper();
  const pool = new ThinPool(dm, poolName);
  let nextId = 1;
  const name = (id: number): string => `${poolName}-f-${id}`;

  // A formatted base (as thinsnap's) and a committed (inactive) parent of it.
  const base = nextId++;
  pool.createThin(base);
  pool.activate(name(base), base, baseSize);
  await formatDevice(`/dev/mapper/${name(base)}`, "ext4", "");
  pool.fsyncDevice(name(base));
  pool.deactivate(name(base));
  const parent = nextId++;
  pool.createSnap(parent, base, null);

  const prepare = (origin: number): { id: number; ms: number } => {
    const id = nextId++;
    const t0 = now();
    dm.message(poolName, `create_snap ${id} ${origin}`);
    pool.activate(name(id), id, baseSize);
    return { id, ms: now() - t0 };
  };
  const commit = (id: number): number => {
    const t0 = now();
    pool.fsyncDevice(name(id));
    dm.remove(name(id));
    return now() - t0;
  };
  const remove = (id: number, active: boolean): number => {
    const t0 = now();
    if (active) dm.remove(name(id));
    dm.message(poolName, `delete ${id}`);
    return now() - t0;
  };

  log(`floor: prepare ×${n.prepare}`);
  const pl: number[] = [];
  const ch: number[] = [];
  const vw: number[] = [];
  const made: number[] = [];
  for (let i = 0; i < n.prepare; i++) {
    const a = prepare(base);
    pl.push(a.ms);
    made.push(a.id);
    const b = prepare(parent);
    ch.push(b.ms);
    made.push(b.id);
    const c = prepare(parent);
    vw.push(c.ms);
    made.push(c.id);
  }
  log(`floor: usage ×${n.usage}`);
  const us: number[] = [];
  for (let i = 0; i < n.usage; i++) {
    const t0 = now();
    dm.thinStatus(name(made[0]!));
    us.push(now() - t0);
  }
  log(`floor: commit ×${n.commit}, remove ×${n.remove}`);
  const cm: number[] = [];
  const committed: number[] = [];
  for (let i = 0; i < n.commit && made.length; i++) {
    const id = made.pop()!;
    cm.push(commit(id));
    committed.push(id);
  }
  const rm: number[] = [];
  for (let i = 0; i < n.remove; i++) {
    const id = made.pop() ?? prepare(parent).id;
    rm.push(remove(id, true));
  }
  for (const id of made) remove(id, true);
  for (const id of committed) remove(id, false);

  log(`floor: layer chains ×${n.chains} of ${n.layers}`);
  const chains: number[] = [];
  for (let r = 0; r < n.chains; r++) {
    const ids: number[] = [];
    const t0 = now();
    let origin = base;
    for (let j = 0; j < n.layers; j++) {
      const { id } = prepare(origin);
      await mountWriteUmount([{ type: "ext4", source: `/dev/mapper/${name(id)}`, options: [] }], `layer${j}`);
      commit(id);
      ids.push(id);
      origin = id;
    }
    chains.push(now() - t0);
    for (const id of ids.reverse()) remove(id, false);
  }
  remove(parent, false);
  remove(base, false);
  return {
    parentlessPrepare: stats(pl),
    childPrepare: stats(ch),
    view: stats(vw),
    commit: stats(cm),
    remove: stats(rm),
    usage: stats(us),
    chain: stats(chains),
  };
}
