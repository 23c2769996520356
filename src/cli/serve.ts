/** `thinsnap serve`: the proxy snapshotter daemon. */
import { getgrnam } from "./group.ts";
import type { Config } from "../config/config.ts";
import { createLogger, type Logger } from "../log.ts";
import { startServer } from "../rpc/server.ts";
import { createSnapshotsService } from "../rpc/service.ts";
import { formatDevice, unmountStaleBaseMounts } from "../snapshotter/mkfs.ts";
import { ThinSnapshotter } from "../snapshotter/snapshotter.ts";
import { Store } from "../store/store.ts";
import { KernelWorkers } from "../dm/kernel-workers.ts";
import type { DeviceMapper } from "../dm/device-mapper.ts";
import { ThinPool } from "../dm/thin-pool.ts";
import { devPath, loopBackingFile } from "../dm/blockdev.ts";
import { resolve } from "node:path";
import { sdNotify } from "../sys/sd-notify.ts";
import { BUILD_DATE, REVISION, VERSION } from "../version.ts";
import { CliError, lockRoot, openDeviceMapper, poolFromConfig, requireRoot } from "./runtime.ts";
import { flagHelp, type FlagSpec, type Parsed } from "./args.ts";
import { CONFIG_FLAGS, configFile, configFromFlags, refuseNoRoom } from "./config-flags.ts";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { configToml } from "../config/render.ts";
import { hostSnippet } from "../install/snippets.ts";
import { PoolStoreMismatch } from "../snapshotter/reconcile.ts";
import { Observability } from "../metrics/observability.ts";

/**
 * In-flight calls may finish for this long after SIGTERM; server.close then
 * returns within a bounded flush (src/rpc/limits.ts), whatever clients do.
 */
const SHUTDOWN_GRACE_MS = 10_000;

export const SERVE_FLAGS: Record<string, FlagSpec> = {
  ...CONFIG_FLAGS,
  help: { type: "boolean", help: "show this help" },
};

export const SERVE_HELP = `Usage: thinsnap serve [--config FILE] [flags]

Serves containerd's snapshots API on a unix socket. With no config file
(none given, none at ${DEFAULT_CONFIG_PATH}) it serves on the embedded
default: a file-backed thin-pool under root_path (sparse files sized from
the free space there), created on first start and reloaded after a reboot;
what it chose is printed, to copy into a config, with the containerd lines
for the containerd found. The least every containerd needs:

  [proxy_plugins.thinsnap]
    type = "snapshot"
    address = "${CONFIG_FLAGS.address?.default ?? ""}"

(containerd 2.x also needs the transfer service's unpack_config entry:
thinsnap install writes every line; packaging/containerd/ has them as files.)

Flags:
${flagHelp(SERVE_FLAGS)}
`;

export async function serve(p: Parsed): Promise<number> {
  const given = await configFromFlags(p);
  const embedded = configFile(p) === null;
  const log = createLogger(given.logLevel, given.logFormat);
  requireRoot("thinsnap serve");
  const t0 = performance.now();
  const dm = openDeviceMapper();
  const cfg = embedded ? asLoaded(dm, given) : given;
  refuseNoRoom(p, cfg);
  const obs = await Observability.create({ metricsAddress: cfg.metricsAddress, log, limits: cfg });
  lockRoot(cfg.rootPath, "thinsnap serve");
  log.info("starting thinsnap", {
    version: VERSION,
    revision: REVISION,
    built: BUILD_DATE,
    libdevmapper: dm.libraryVersion(),
    driver: dm.driverVersion(),
    udev: dm.udev,
    pool: cfg.poolName,
    kernel_threads: cfg.kernelThreads,
  });
  const pool = poolFromConfig(dm, cfg, log);
  const snPool = obs.wrapPool(pool);
  if (embedded) printEmbedded(cfg, log);
  unmountStaleBaseMounts(cfg.rootPath, cfg.poolName, log);
  const store = Store.open(`${cfg.rootPath}/metadata.db`);
  const kernel = await startKernelWorkers(cfg, log);
  let sn: ThinSnapshotter;
  try {
    sn = await ThinSnapshotter.open(cfg, {
      store,
      pool: snPool,
      format: formatWithProgress(log, cfg.rootPath),
      rootPath: cfg.rootPath,
      log,
      listDevices: () => dm.list(),
      kernel: obs.wrapKernel(kernel),
      onSpaceRefusal: obs.onSpaceRefusal,
    });
  } catch (e) {
    kernel?.close();
    store.close();
    const fix = e instanceof PoolStoreMismatch ? `\n${mismatchFix(e, cfg, configFile(p))}` : "";
    throw new CliError(`cannot open the snapshotter: ${(e as Error).message}${fix}`);
  }
  await obs.start({ pool: snPool, store, remover: sn.remover, reconcile: sn.lastReconcile, lowWaterMarkBlocks: pool.table().lowWaterMark });
  const socketGroup = cfg.socketGroup === null ? undefined : getgrnam(cfg.socketGroup);
  if (cfg.socketGroup !== null && socketGroup === undefined) {
    throw new CliError(`socket_group "${cfg.socketGroup}" does not exist`);
  }
  const server = await startServer({
    socketPath: cfg.address,
    socketMode: cfg.socketMode,
    socketGroup,
    service: createSnapshotsService(sn),
    log,
    observe: obs.observer(),
  });
  const st = pool.status();
  if (!st.errorIfNoSpace) {
    // A pool thinsnap did not create: Commit/Prepare on it are refused once it is full, but writes queue.
    log.warn("the pool has no error_if_no_space: once full, writes to it wait up to no_space_timeout (60 s) instead of failing", {
      pool: cfg.poolName,
      fix: `lvchange --errorwhenfull y VG/${cfg.poolName}, or reload its thin-pool table with the error_if_no_space feature`,
    });
  }
  log.info("serving", {
    address: server.address,
    kernel_threads: kernel ? cfg.kernelThreads : 0,
    ms: Math.round(performance.now() - t0),
    data_used: `${st.usedDataBlocks}/${st.totalDataBlocks}`,
    metadata_used: `${st.usedMetadataBlocks}/${st.totalMetadataBlocks}`,
  });
  sdNotify("READY=1");
  return waitForSignal(log, async () => {
    sdNotify("STOPPING=1");
    await server.close(SHUTDOWN_GRACE_MS);
    await obs.close();
    await sn.close();
    kernel?.close();
  });
}

/**
 * Without a config file the embedded default describes a file-backed pool. A
 * pool of that name already loaded on other devices (`pool create
 * --data-dev`, LVM) is served as it is: no room check for files it never
 * needs, and no [pool] table printed that would describe other files.
 */
function asLoaded(dm: DeviceMapper, cfg: Config): Config {
  if (cfg.pool === null || !dm.info(cfg.poolName)) return cfg;
  const data = loopBackingFile(devPath(new ThinPool(dm, cfg.poolName).table().dataDev));
  return data !== null && resolve(data) === resolve(cfg.pool.dataFile) ? cfg : { ...cfg, pool: null };
}

/** What the embedded default chose, as the config file and containerd snippet to keep it. */
function printEmbedded(cfg: Config, log: Logger): void {
  const toml = configToml(cfg);
  const snippet = hostSnippet(cfg);
  if (cfg.logFormat === "json") {
    log.info("no config file: serving on the embedded default", { config_file: DEFAULT_CONFIG_PATH, config: toml, containerd: snippet });
    return;
  }
  const what =
    cfg.pool === null
      ? `the embedded default's settings and the thin-pool "${cfg.poolName}" already loaded (not on the default's files, so none are made)`
      : `the embedded default, a file-backed thin-pool (sparse files; a real pool on block devices is the production set-up)`;
  process.stderr.write(
    `thinsnap: no config file (${DEFAULT_CONFIG_PATH}): serving on ${what}.\n` +
      `To keep these settings, save this as ${DEFAULT_CONFIG_PATH}:\n\n${toml}\n` +
      `containerd: the lines for the containerd found here (\`thinsnap install\` writes them):\n\n${snippet}`,
  );
}

/** Which file to move, or which commands re-create a pool and store that belong together. */
function mismatchFix(e: PoolStoreMismatch, cfg: Config, file: string | null): string {
  const db = `${cfg.rootPath}/metadata.db`;
  const withConfig = file === null ? "" : ` --config ${file}`;
  if (!e.poolUsed) {
    return `The pool holds no data: to start over with it, move the store aside (mv ${db} ${db}.old, with its -wal and -shm files) and start thinsnap serve again.`;
  }
  return (
    `If neither holds anything you need, start over with both: thinsnap pool destroy${withConfig} --delete-files ` +
    `(it moves ${db} aside), then thinsnap serve${withConfig} (it re-creates the pool${cfg.pool === null ? ' once the config has a [pool] table, or run "thinsnap pool create" first' : ""}). ` +
    `Otherwise point root_path at the store that belongs to pool "${cfg.poolName}".`
  );
}

/** Formatting the base can take minutes on a slow disk: say so, keep saying so, and keep systemd's start timeout away. */
/** The snapshotter's formatter (its temporary mount under rootPath), with progress lines while mkfs runs. */
function formatWithProgress(log: Logger, rootPath: string): (device: string, fsType: string, fsOptions: string) => Promise<void> {
  return async (device, fsType, fsOptions) => {
    const t0 = performance.now();
    const extend = (): void => void sdNotify(`EXTEND_TIMEOUT_USEC=${FORMAT_TICK_MS * 3 * 1000}`);
    log.info("formatting the base device (once per pool; can take minutes on a slow disk)", { device, fs_type: fsType });
    extend();
    const timer = setInterval(() => {
      extend();
      log.info("still formatting the base device", { device, s: Math.round((performance.now() - t0) / 1000) });
    }, FORMAT_TICK_MS);
    try {
      await formatDevice(device, fsType, fsOptions, rootPath);
    } finally {
      clearInterval(timer);
    }
    log.info("formatted the base device", { device, ms: Math.round(performance.now() - t0) });
  };
}
const FORMAT_TICK_MS = 10_000;

function waitForSignal(log: Logger, stop: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) return;
      stopping = true;
      log.info("shutting down; devices stay as they are", { signal: sig });
      stop().then(
        () => resolve(0),
        (e) => {
          log.error("shutdown failed", { error: String(e) });
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

/** The kernel threads, or none (calls on the main thread) when they cannot work here. */
async function startKernelWorkers(cfg: Config, log: Logger): Promise<KernelWorkers | undefined> {
  if (cfg.kernelThreads === 0) return undefined;
  let kw: KernelWorkers | undefined;
  try {
    kw = new KernelWorkers({ poolName: cfg.poolName, max: cfg.kernelThreads });
    await kw.probe();
    return kw;
  } catch (e) {
    kw?.close();
    log.warn("kernel threads unavailable; device-mapper calls run on the main thread", { error: String(e) });
    return undefined;
  }
}
