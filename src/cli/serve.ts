/** `thinsnap serve`: the proxy snapshotter daemon. */
import { getgrnam } from "./group.ts";
import { loadConfig, type Config, type ConfigOverrides, type LogFormat, type LogLevel } from "../config/config.ts";
import { createLogger, type Logger } from "../log.ts";
import { startServer } from "../rpc/server.ts";
import { createSnapshotsService } from "../rpc/service.ts";
import { formatDevice, unmountStaleBaseMounts } from "../snapshotter/mkfs.ts";
import { ThinSnapshotter } from "../snapshotter/snapshotter.ts";
import { Store } from "../store/store.ts";
import { KernelWorkers } from "../dm/kernel-workers.ts";
import { sdNotify } from "../sys/sd-notify.ts";
import { BUILD_DATE, REVISION, VERSION } from "../version.ts";
import { CliError, lockRoot, openDeviceMapper, poolFromConfig, requireRoot } from "./runtime.ts";
import { flagHelp, type FlagSpec, type Parsed, str } from "./args.ts";

/**
 * In-flight calls may finish for this long after SIGTERM; server.close then
 * returns within a bounded flush (src/rpc/limits.ts), whatever clients do.
 */
const SHUTDOWN_GRACE_MS = 10_000;

export const SERVE_FLAGS: Record<string, FlagSpec> = {
  config: { help: "config file (TOML; a containerd config.toml with a devmapper section works too)", default: "/etc/thinsnap/config.toml" },
  address: { help: "unix socket to serve on", default: "/run/thinsnap/thinsnap.sock" },
  root: { help: "state directory (the metadata database)", default: "/var/lib/thinsnap" },
  "pool-name": { help: "thin-pool device name (overrides pool_name)" },
  "log-level": { help: "trace, debug, info, warn or error", default: "info" },
  "log-format": { help: "text or json", default: "text" },
  help: { type: "boolean", help: "show this help" },
};

export const SERVE_HELP = `Usage: thinsnap serve [flags]

Serves containerd's snapshots API on a unix socket. Configure containerd with:

  [proxy_plugins.thinsnap]
    type = "snapshot"
    address = "/run/thinsnap/thinsnap.sock"

Flags:
${flagHelp(SERVE_FLAGS)}
`;

/** Flag values override the file's; the file's override the defaults. */
export async function configFromFlags(p: Parsed): Promise<Config> {
  const o: ConfigOverrides = {};
  const address = str(p, "address");
  const root = str(p, "root");
  const level = str(p, "log-level");
  const format = str(p, "log-format");
  const poolName = str(p, "pool-name");
  if (address !== undefined) o.address = address;
  if (root !== undefined) o.rootPath = root;
  if (level !== undefined) o.logLevel = level as LogLevel;
  if (format !== undefined) o.logFormat = format as LogFormat;
  if (poolName !== undefined) o.poolName = poolName;
  return loadConfig(str(p, "config") ?? null, o);
}

export async function serve(p: Parsed): Promise<number> {
  const cfg = await configFromFlags(p);
  const log = createLogger(cfg.logLevel, cfg.logFormat);
  requireRoot("thinsnap serve");
  lockRoot(cfg.rootPath, "thinsnap serve");
  const t0 = performance.now();
  const dm = openDeviceMapper();
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
  for (const m of unmountStaleBaseMounts()) log.warn("unmounted a base mount left by a killed thinsnap", { mount: m });
  const store = Store.open(`${cfg.rootPath}/metadata.db`);
  const kernel = await startKernelWorkers(cfg, log);
  let sn: ThinSnapshotter;
  try {
    sn = await ThinSnapshotter.open(cfg, { store, pool, format: formatDevice, log, listDevices: () => dm.list(), kernel });
  } catch (e) {
    kernel?.close();
    store.close();
    throw new CliError(`cannot open the snapshotter: ${(e as Error).message}`);
  }
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
  });
  const st = pool.status();
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
    await sn.close();
    kernel?.close();
  });
}

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
