/**
 * The pre-formatted base device every parentless snapshot is a snapshot of,
 * so that no mkfs runs on a request. Made once (and again only when
 * base_image_size, fs_type or fs_options change), with an intent row first
 * like every other device.
 */
import type { Logger } from "../log.ts";
import type { DeviceRow, Store } from "../store/store.ts";
import { killPoint } from "./kill-points.ts";
import type { Formatter, PoolApi } from "./pool-api.ts";
import type { PoolGuard } from "./pool-guard.ts";
import { rollbackCreate, type RollbackContext } from "./rollback.ts";
import { BASE_MAPPED_META } from "./usage.ts";

export interface BaseOptions {
  poolName: string;
  baseImageSize: bigint;
  fsType: string;
  fsOptions: string;
}

export interface BaseContext extends RollbackContext {
  guard: PoolGuard;
  format: Formatter;
}

/** Returns the ready base device, making it first if the store has none for these options. */
export async function ensureBase(c: BaseContext, opts: BaseOptions, log: Logger): Promise<DeviceRow> {
  const { store, pool } = c;
  const want = JSON.stringify({ size: opts.baseImageSize.toString(), fsType: opts.fsType, fsOptions: opts.fsOptions });
  const have = store.baseDevice();
  if (have && have.state === "ready" && store.getMeta("base_config") === want) return have;
  const t0 = performance.now();
  c.guard.checkSpace("create base device");
  const dev = store.tx(() => {
    const thinId = store.allocateThinId();
    const d: DeviceRow = {
      thinId,
      dmName: `${opts.poolName}-base-${thinId}`,
      role: "base",
      state: "creating",
      originId: null,
      sizeBytes: opts.baseImageSize,
      fsType: opts.fsType,
      active: true,
      discard: false,
      fsBytes: null,
    };
    store.insertDevice(d);
    return d;
  });
  killPoint("base.after-intent");
  let baseMapped: bigint;
  try {
    baseMapped = await makeBase(pool, c.format, dev, opts.fsOptions);
  } catch (e) {
    rollbackCreate(c, dev, e);
    throw c.guard.mapError(e, "create base device");
  }
  markReady(store, dev, have, want, baseMapped);
  log.info("base device ready", {
    device: dev.dmName,
    thin_id: dev.thinId,
    fs_type: dev.fsType,
    size: dev.sizeBytes,
    ms: Math.round(performance.now() - t0),
  });
  return { ...dev, state: "ready", active: false };
}

/** create_thin, activate, mkfs, fsync, measure, deactivate; returns the bytes the fresh filesystem maps. */
async function makeBase(pool: PoolApi, format: Formatter, dev: DeviceRow, fsOptions: string): Promise<bigint> {
  pool.createThin(dev.thinId);
  pool.activate(dev.dmName, dev.thinId, dev.sizeBytes);
  await format(`/dev/mapper/${dev.dmName}`, dev.fsType, fsOptions);
  killPoint("base.after-format");
  pool.fsyncDevice(dev.dmName);
  const mapped = pool.mappedBytes(dev.dmName);
  pool.deactivate(dev.dmName, { retry: true });
  return mapped;
}

/** One transaction: the new base is ready, the old one (if any) is queued for deletion. */
function markReady(store: Store, dev: DeviceRow, old: DeviceRow | null, want: string, mapped: bigint): void {
  store.tx(() => {
    if (old) store.markDeviceDeleting(old.thinId, false);
    store.setDeviceState(dev.thinId, "ready");
    store.setDeviceActive(dev.thinId, false);
    store.setMeta("base_config", want);
    store.setMeta(BASE_MAPPED_META, String(mapped));
  });
}
