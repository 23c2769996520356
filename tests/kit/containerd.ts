/**
 * Test/demo helper: a private containerd (Debian's 1.6 from the host) with its
 * own root, state and socket under a directory of the caller (normally under
 * /tmp in the qemu guest), configured with proxy snapshotters (thinsnap) and,
 * optionally, containerd's built-in devmapper snapshotter on another pool.
 *
 *   const c = await startContainerd({
 *     dir: "/tmp/demo/containerd",
 *     proxySnapshotters: { thinsnap: daemon.address },
 *     devmapper: { poolName: "dm-pool", rootPath: "/tmp/demo/devmapper", baseImageSize: "64MB" },
 *   });
 *   const r = await c.ctr("snapshots", "--snapshotter", "thinsnap", "ls");
 *   await c.stop();
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readText, run, socketAccepts, startBackground, waitFor, type RunResult } from "./process.ts";

export const CONTAINERD_BIN = "/usr/bin/containerd";
export const CTR_BIN = "/usr/bin/ctr";

/**
 * Plugins that fail or are useless in the guest (no CRI, no aufs/btrfs/zfs
 * kernels, no tracing). devmapper is disabled unless configured.
 */
export const DEFAULT_DISABLED_PLUGINS: readonly string[] = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
];

export const DEVMAPPER_PLUGIN = "io.containerd.snapshotter.v1.devmapper";

/** containerd's built-in devmapper snapshotter settings (its config keys). */
export interface DevmapperOptions {
  /** An existing thin-pool (containerd does not create it). */
  poolName: string;
  rootPath: string;
  /** e.g. "64MB". */
  baseImageSize: string;
  asyncRemove?: boolean;
  discardBlocks?: boolean;
  fsType?: "ext4" | "xfs";
  fsOptions?: string;
}

export interface ContainerdOptions {
  /** Working dir: config.toml, root/, state/, containerd.sock, containerd.log. Created. */
  dir: string;
  /** Snapshotter name -> proxy plugin socket, e.g. { thinsnap: "/tmp/x/thinsnap.sock" }. */
  proxySnapshotters?: Record<string, string>;
  /** Also configure the built-in devmapper snapshotter on this pool. */
  devmapper?: DevmapperOptions;
  /** Added to DEFAULT_DISABLED_PLUGINS. */
  disabledPlugins?: string[];
  /** Appended verbatim to config.toml. */
  extraConfig?: string;
  /** Default "debug". */
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /** ctr's namespace (default "default"). */
  namespace?: string;
  /**
   * GC scheduler: collect right after deletions (schedule_delay 0s, deletion_threshold 1)
   * so tests do not wait for the default schedule. Default true.
   */
  eagerGc?: boolean;
  /** Default 60 s. */
  readyTimeoutMs?: number;
  binary?: string;
  ctrBinary?: string;
}

export interface CtrOptions {
  namespace?: string;
  /** Default 120 s. */
  timeoutMs?: number;
}

export interface Containerd {
  address: string;
  root: string;
  state: string;
  configPath: string;
  logFile: string;
  pid: number;
  namespace: string;
  /** `ctr --address A -n NS args...`. */
  ctr(...args: string[]): Promise<RunResult>;
  /** Same with options (namespace, timeout). */
  ctrWith(opts: CtrOptions, ...args: string[]): Promise<RunResult>;
  /** Like ctr() but throws with the output on a non-zero exit; returns stdout. */
  ctrOk(...args: string[]): Promise<string>;
  /**
   * A full, synchronous garbage collection: creates a lease and deletes it
   * with --sync (ctr 1.6 has no "gc" command). Needed because containerd
   * 1.6's GC scheduler can drop a deletion that commits while a collection
   * is finishing (gc/scheduler: `lastCollection` is taken after the
   * collection returns, and events older than it are ignored), leaving that
   * snapshot in the snapshotter until some later deletion.
   */
  gc(): Promise<void>;
  /** SIGKILLs and deletes every task of the namespace (teardown after a failed test). */
  removeAllTasks(): Promise<void>;
  /** SIGTERM (then SIGKILL after timeoutMs), waits; returns the exit status. */
  stop(timeoutMs?: number): Promise<number>;
  /** Teardown: removeAllTasks (a failed test may have left one running), then stop(). */
  shutdown(): Promise<number>;
  logs(): string;
  exited: Promise<number>;
}

const tomlStr = (s: string): string => JSON.stringify(s);

/** The config.toml (version 2) for the options; exported for inspection and tests. */
export function containerdConfig(o: ContainerdOptions, paths: { root: string; state: string; address: string }): string {
  const disabled = [...DEFAULT_DISABLED_PLUGINS, ...(o.disabledPlugins ?? [])];
  if (!o.devmapper) disabled.push(DEVMAPPER_PLUGIN);
  const lines: string[] = [
    "version = 2",
    `root = ${tomlStr(paths.root)}`,
    `state = ${tomlStr(paths.state)}`,
    `disabled_plugins = [${[...new Set(disabled)].map(tomlStr).join(", ")}]`,
    "",
    "[grpc]",
    `  address = ${tomlStr(paths.address)}`,
    "",
    "[ttrpc]",
    `  address = ${tomlStr(`${paths.address}.ttrpc`)}`,
    "",
    "[debug]",
    `  level = ${tomlStr(o.logLevel ?? "debug")}`,
    "",
    "[metrics]",
    '  address = ""',
    "",
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${tomlStr(join(paths.root, "opt"))}`,
    "",
  ];
  if (o.eagerGc !== false) {
    lines.push(
      '[plugins."io.containerd.gc.v1.scheduler"]',
      "  pause_threshold = 0.02",
      "  deletion_threshold = 1",
      "  mutation_threshold = 100",
      '  schedule_delay = "0s"',
      '  startup_delay = "100ms"',
      "",
    );
  }
  if (o.devmapper) {
    const d = o.devmapper;
    lines.push(
      `[plugins.${tomlStr(DEVMAPPER_PLUGIN)}]`,
      `  pool_name = ${tomlStr(d.poolName)}`,
      `  root_path = ${tomlStr(d.rootPath)}`,
      `  base_image_size = ${tomlStr(d.baseImageSize)}`,
      `  async_remove = ${d.asyncRemove === true}`,
      `  discard_blocks = ${d.discardBlocks === true}`,
    );
    if (d.fsType !== undefined) lines.push(`  fs_type = ${tomlStr(d.fsType)}`);
    if (d.fsOptions !== undefined) lines.push(`  fs_options = ${tomlStr(d.fsOptions)}`);
    lines.push("");
  }
  for (const [name, address] of Object.entries(o.proxySnapshotters ?? {})) {
    lines.push(`[proxy_plugins.${tomlStr(name)}]`, '  type = "snapshot"', `  address = ${tomlStr(address)}`, "");
  }
  if (o.extraConfig) lines.push(o.extraConfig, "");
  return lines.join("\n");
}

/** True if containerd and ctr are installed. */
export function containerdInstalled(o: { binary?: string; ctrBinary?: string } = {}): boolean {
  return existsSync(o.binary ?? CONTAINERD_BIN) && existsSync(o.ctrBinary ?? CTR_BIN);
}

/** Why `ctr run` cannot work here (containerd, runc, a static busybox for the images, cgroup2), or null if it can. */
export function ctrRunMissing(): string | null {
  if (!containerdInstalled()) return "containerd or ctr is not installed (apt-get install containerd)";
  if (!existsSync("/usr/sbin/runc") && !existsSync("/usr/bin/runc")) return "runc is not installed (apt-get install runc)";
  if (!existsSync("/bin/busybox")) return "/bin/busybox is missing (apt-get install busybox-static)";
  if (!existsSync("/sys/fs/cgroup/cgroup.controllers")) return "no cgroup2 at /sys/fs/cgroup (runc needs it)";
  return null;
}

/** Starts containerd and waits until `ctr version` answers. */
export async function startContainerd(o: ContainerdOptions): Promise<Containerd> {
  mkdirSync(o.dir, { recursive: true });
  const root = join(o.dir, "root");
  const state = join(o.dir, "state");
  const address = join(o.dir, "containerd.sock");
  const configPath = join(o.dir, "config.toml");
  const logFile = join(o.dir, "containerd.log");
  const namespace = o.namespace ?? "default";
  const ctrBin = o.ctrBinary ?? CTR_BIN;
  mkdirSync(root, { recursive: true });
  mkdirSync(state, { recursive: true });
  if (o.devmapper) mkdirSync(o.devmapper.rootPath, { recursive: true });
  writeFileSync(configPath, containerdConfig(o, { root, state, address }));
  rmSync(address, { force: true });
  rmSync(`${address}.ttrpc`, { force: true });

  const child = startBackground(
    "containerd",
    [o.binary ?? CONTAINERD_BIN, "--config", configPath, "--root", root, "--state", state, "--address", address],
    logFile,
    // Its own process group: stop() must not reach shims, and a test
    // runner's signal must not reach containerd before we stop it.
    { detached: true },
  );
  const logs = (): string => readText(logFile);

  const ctrWith = (opts: CtrOptions, ...args: string[]): Promise<RunResult> =>
    run([ctrBin, "--address", address, "--namespace", opts.namespace ?? namespace, ...args], {
      timeoutMs: opts.timeoutMs ?? 120_000,
    });
  const ctr = (...args: string[]): Promise<RunResult> => ctrWith({}, ...args);
  const ctrOk = async (...args: string[]): Promise<string> => {
    const r = await ctr(...args);
    if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: exit ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };

  const gc = async (): Promise<void> => {
    const id = (await ctrOk("leases", "create")).trim();
    await ctrOk("leases", "delete", "--sync", id);
  };

  try {
    await waitFor(
      `containerd (${address})`,
      async () => (await socketAccepts(address)) && (await ctrWith({ timeoutMs: 30_000 }, "version")).code === 0,
      {
        timeoutMs: o.readyTimeoutMs ?? 60_000,
        intervalMs: 200,
        died: () => {
          const status = child.status();
          return status === null ? null : `exited with status ${status} before serving; log:\n${logs().slice(-8000)}`;
        },
      },
    );
  } catch (e) {
    child.child.kill("SIGKILL");
    await child.exited;
    throw e;
  }

  const removeAllTasks = async (): Promise<void> => {
    const tasks = await ctr("tasks", "ls", "-q");
    for (const id of tasks.stdout.split("\n").filter((x) => x !== "")) {
      await ctr("tasks", "kill", "-s", "SIGKILL", id);
      await ctr("tasks", "rm", "-f", id);
    }
  };

  const stop = (timeoutMs = 20_000): Promise<number> => child.stop(timeoutMs);

  return {
    address,
    root,
    state,
    configPath,
    logFile,
    pid: child.pid,
    namespace,
    ctr,
    ctrWith,
    ctrOk,
    gc,
    removeAllTasks,
    stop,
    shutdown: async () => {
      await removeAllTasks();
      return stop();
    },
    logs,
    exited: child.exited,
  };
}
