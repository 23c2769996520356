/** `thinsnap install` / `thinsnap uninstall`: flags and printing; the steps are src/install/installer.ts. */
import { basename } from "node:path";
import { DEFAULTS } from "../config/config.ts";
import { sizeText } from "../config/kinds.ts";
import { DEFAULT_DATA_SIZE } from "../pool/geometry.ts";
import { ContainerdConfigError, type ContainerdVersion } from "../install/containerd-config.ts";
import { hostRunner, install, InstallError, uninstall, type CommonOptions } from "../install/installer.ts";
import { CONTAINERD_CONFIG_PATH, hostPlatform, NODE_POOL_NAME } from "../install/snippets.ts";
import { flagHelp, type FlagSpec, type Parsed, str, UsageError } from "./args.ts";
import { CliError, requireRoot } from "./runtime.ts";

const DATA_SIZE = sizeText(DEFAULT_DATA_SIZE);

const COMMON_FLAGS: Record<string, FlagSpec> = {
  "host-root": { help: "the host's root directory as seen here (a privileged container mounts it at /host)", default: "/" },
  "containerd-config": { help: "containerd's config.toml on the host", default: CONTAINERD_CONFIG_PATH },
  "dry-run": { type: "boolean", help: "change nothing: print each step and the diff of containerd's config" },
  "no-restart": { type: "boolean", help: "do not run systemctl (reload, start, restart): print the commands instead" },
  help: { type: "boolean", help: "show this help" },
};

export const INSTALL_FLAGS: Record<string, FlagSpec> = {
  ...COMMON_FLAGS,
  binary: { help: "the thinsnap executable to install", default: "this one" },
  "containerd-version": { help: "containerd's version (e.g. 1.7 or 2.1.4)", default: "from `containerd --version` on the host" },
  address: { help: "thinsnap's socket, for containerd's config and a new thinsnap config", default: DEFAULTS.address },
  "runtime-handler": { help: "CRI runtime handler(s) to give thinsnap, comma-separated (e.g. kata)" },
  "cri-default": { type: "boolean", help: "make thinsnap CRI's default snapshotter (=false: only register it)", default: "true without --runtime-handler" },
  "pool-name": { help: "pool_name of a new /etc/thinsnap/config.toml", default: NODE_POOL_NAME },
  "data-size": { help: "data file size of a new config's file-backed pool (sparse)", default: DATA_SIZE },
};

export const UNINSTALL_FLAGS: Record<string, FlagSpec> = COMMON_FLAGS;

export const INSTALL_HELP = `Usage: thinsnap install [flags]

Installs thinsnap on this node (or, with --host-root, on the host whose root is
mounted there): the binary in /usr/local/bin, /etc/thinsnap/config.toml (only if
there is none), the systemd unit, and thinsnap's lines in containerd's
config.toml (edited in place, every other line kept; backup: config.toml.before-thinsnap).
Then systemctl daemon-reload, enable and start thinsnap, restart containerd.
Running it again changes nothing; \`thinsnap uninstall\` reverses it.

Flags:
${flagHelp(INSTALL_FLAGS)}
`;

export const UNINSTALL_HELP = `Usage: thinsnap uninstall [flags]

Takes thinsnap's lines out of containerd's config.toml (restoring the lines it
replaced) and restarts containerd, then stops and disables thinsnap and removes
its unit and binary. Keeps /etc/thinsnap/config.toml and the pool's data.

Flags:
${flagHelp(UNINSTALL_FLAGS)}
`;

function common(p: Parsed, what: string): CommonOptions {
  const hostRoot = str(p, "host-root") ?? "/";
  if (!hostRoot.startsWith("/")) throw new UsageError("--host-root must be an absolute path");
  const containerdConfig = str(p, "containerd-config") ?? CONTAINERD_CONFIG_PATH;
  if (!containerdConfig.startsWith("/")) throw new UsageError("--containerd-config is a path on the host: absolute");
  const dryRun = p.flags["dry-run"] === true;
  if (!dryRun) requireRoot(what);
  return {
    hostRoot,
    containerdConfig,
    dryRun,
    restart: p.flags["no-restart"] !== true,
    run: hostRunner(hostRoot),
    print: (l) => process.stdout.write(`${l}\n`),
  };
}

/** "1.7" or "v2.1.4" -> a version. */
function parseVersionFlag(v: string): ContainerdVersion {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?$/.exec(v);
  if (!m) throw new UsageError(`--containerd-version: expected MAJOR.MINOR[.PATCH] (e.g. 1.7 or 2.1.4), got "${v}"`);
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3] ?? 0) };
}

function thisBinary(): string {
  // Under `bun src/cli/main.ts` the executable is bun itself, not thinsnap.
  if (/^bun(-debug)?(\.exe)?$/.test(basename(process.execPath))) {
    throw new UsageError("not running as the thinsnap executable: pass --binary dist/thinsnap");
  }
  return process.execPath;
}

function guard(f: () => void): number {
  try {
    f();
    return 0;
  } catch (e) {
    if (e instanceof InstallError || e instanceof ContainerdConfigError) throw new CliError(e.message);
    throw e;
  }
}

export function installCommand(p: Parsed): number {
  const o = common(p, "thinsnap install");
  const handlers = (str(p, "runtime-handler") ?? "").split(",").map((h) => h.trim()).filter((h) => h !== "");
  const cd = str(p, "containerd-version");
  const address = str(p, "address") ?? DEFAULTS.address;
  if (!address.startsWith("/")) throw new UsageError("--address must be an absolute path");
  return guard(() =>
    install({
      ...o,
      binary: str(p, "binary") ?? thisBinary(),
      address,
      poolName: str(p, "pool-name") ?? NODE_POOL_NAME,
      dataSize: str(p, "data-size") ?? DATA_SIZE,
      criDefault: typeof p.flags["cri-default"] === "boolean" ? p.flags["cri-default"] : handlers.length === 0,
      runtimeHandlers: handlers,
      containerd: cd === undefined ? null : parseVersionFlag(cd),
      platform: hostPlatform(),
    }),
  );
}

export function uninstallCommand(p: Parsed): number {
  return guard(() => uninstall(common(p, "thinsnap uninstall")));
}
