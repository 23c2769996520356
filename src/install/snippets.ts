/**
 * The text thinsnap installs or prints: containerd config snippets per
 * containerd release, the systemd unit, and the config a node install starts
 * with. packaging/containerd/*.toml and packaging/thinsnap.service are these
 * texts, written out (tests/unit/install-snippets.test.ts keeps them equal).
 */
import { spawnSync } from "node:child_process";
import { DEFAULT_CONFIG_PATH, DEFAULTS } from "../config/config.ts";
import {
  CONTAINERD_DEFAULT_ROOT,
  configVersionFor,
  type ContainerdVersion,
  formatVersion,
  parseContainerdVersion,
  planFor,
  renderTables,
  snapshotterDir,
  type PlanOptions,
} from "./containerd-config.ts";

/** Where `thinsnap install` puts the binary (and the unit runs it from). */
export const BINARY_PATH = "/usr/local/bin/thinsnap";
export const UNIT_PATH = "/etc/systemd/system/thinsnap.service";
export const CONTAINERD_CONFIG_PATH = "/etc/containerd/config.toml";
/** The pool a node install's config names (serve creates it, file-backed, under root_path). */
export const NODE_POOL_NAME = "thinsnap-pool";

const GOARCH: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x" };
/** This machine's OCI platform ("linux/amd64"). */
export const hostPlatform = (): string => `linux/${GOARCH[process.arch] ?? process.arch}`;

/** `containerd --version` of the containerd on PATH; null when there is none or it says something else. */
export function detectContainerd(argv: readonly string[] = ["containerd", "--version"]): ContainerdVersion | null {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", timeout: 10_000 });
  return r.status === 0 ? parseContainerdVersion(r.stdout) : null;
}

/** The options every snippet uses: thinsnap's defaults. */
export function defaultPlanOptions(containerd: ContainerdVersion | null, platform = hostPlatform()): PlanOptions {
  return { address: DEFAULTS.address, exportsRoot: DEFAULTS.rootPath, platform, criDefault: true, runtimeHandlers: [], containerd };
}

/** The config.toml lines for this containerd (null: unknown, then the 2.x form), as a fresh file. */
export function containerdSnippet(o: PlanOptions): string {
  const cd = o.containerd;
  const version = cd === null ? 3 : configVersionFor(cd);
  const plan = planFor(version, o);
  const what = cd === null ? "containerd 2.x (no containerd found: version 3 config)" : `containerd ${formatVersion(cd)}`;
  return [
    `# ${what}: add to ${CONTAINERD_CONFIG_PATH} (a file with version = ${version}), then restart containerd.`,
    `# \`thinsnap install\` makes this edit itself, idempotently, and \`thinsnap uninstall\` takes it out.`,
    `version = ${version}`,
    "",
    ...renderTables(plan.settings, plan.entries),
    "",
  ].join("\n");
}

/** A packaged snippet: packaging/containerd/<file>. */
export interface PackagedSnippet {
  file: string;
  header: string[];
  version: 2 | 3;
  options: PlanOptions;
}

const v = (major: number, minor: number): ContainerdVersion => ({ major, minor, patch: 0 });

/** The snippets in packaging/containerd/, one per containerd an operator may run. */
export const PACKAGED_SNIPPETS: readonly PackagedSnippet[] = [
  {
    file: "containerd-1.6.toml",
    header: [
      "containerd 1.6 (config version 2). CRI reports the image filesystem of a",
      "snapshotter as <containerd root>/io.containerd.snapshotter.v1.thinsnap (exports is",
      "ignored before 1.7.16): kubelet needs that directory to exist (`thinsnap install`",
      `creates it; by hand: mkdir -p ${snapshotterDir(CONTAINERD_DEFAULT_ROOT)}).`,
    ],
    version: 2,
    options: { ...defaultPlanOptions(v(1, 6), "linux/amd64") },
  },
  {
    file: "containerd-1.7.toml",
    header: [
      "containerd 1.7 (config version 2). `ctr --local=false` pulls go through the",
      "transfer service, which unpacks only into the snapshotters its unpack_config lists.",
      "Before 1.7.16, create <containerd root>/io.containerd.snapshotter.v1.thinsnap for kubelet.",
      "For a runtime handler (e.g. kata) instead of CRI's default: `thinsnap install --runtime-handler kata`,",
      "or set snapshotter = \"thinsnap\" in [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata].",
    ],
    version: 2,
    options: { ...defaultPlanOptions(v(1, 7), "linux/amd64") },
  },
  {
    file: "containerd-2.x.toml",
    header: [
      "containerd 2.x (config version 3; a version 2 file is migrated in memory, but new",
      "keys belong in a version 3 file: `containerd config migrate`). Pulls (ctr; CRI from 2.1)",
      "go through the transfer service: without the unpack_config entries they fail with",
      "\"no unpack platforms defined\" or unpack into the default snapshotter.",
    ],
    version: 3,
    options: { ...defaultPlanOptions(v(2, 0), "linux/amd64") },
  },
  {
    file: "containerd-2.x-kata.toml",
    header: [
      "containerd 2.x (config version 3), thinsnap for one runtime handler (here kata, e.g.",
      "for Kata Containers' block-device rootfs) while CRI's default snapshotter stays as it is.",
      "The handler's own runtime settings (runtime_type, options) are not shown: keep yours.",
    ],
    version: 3,
    options: { ...defaultPlanOptions(v(2, 0), "linux/amd64"), criDefault: false, runtimeHandlers: ["kata"] },
  },
];

export function renderPackagedSnippet(s: PackagedSnippet): string {
  const plan = planFor(s.version, s.options);
  return [
    `# packaging/containerd/${s.file}: generated from src/install/snippets.ts (a unit test checks it).`,
    ...s.header.map((l) => `# ${l}`),
    `# Paths are thinsnap's defaults (address, root_path); platform: the node's (linux/arm64 on arm64).`,
    `version = ${s.version}`,
    "",
    ...renderTables(plan.settings, plan.entries),
    "",
  ].join("\n");
}

/** The systemd unit (packaging/thinsnap.service). */
export function systemdUnit(binary = BINARY_PATH, configPath = DEFAULT_CONFIG_PATH): string {
  return `# systemd unit for thinsnap, containerd's thin-pool snapshotter (proxy plugin).
# Installed by \`thinsnap install\` (or: cp dist/thinsnap ${binary} && cp packaging/thinsnap.service ${UNIT_PATH}
#          && systemctl daemon-reload && systemctl enable --now thinsnap).
# It runs under the host's systemd, never in a pod: containerd needs it to start pods.
[Unit]
Description=thinsnap: containerd snapshotter on a device-mapper thin-pool
Documentation=https://github.com/thinsnap/thinsnap
After=local-fs.target systemd-udevd.service
Before=containerd.service
Wants=systemd-udevd.service

[Service]
Type=notify
ExecStartPre=-/sbin/modprobe dm_thin_pool
ExecStart=${binary} serve --config ${configPath}
Restart=always
RestartSec=2
# Stopping thinsnap never touches running containers' devices.
KillSignal=SIGTERM
TimeoutStopSec=30
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}

/** /etc/thinsnap/config.toml of a node install: a file-backed pool serve creates (sparse: costs what is used). */
export function nodeConfig(o: { poolName: string; dataSize: string; address: string }): string {
  return `# thinsnap configuration, written by \`thinsnap install\` (which never overwrites it).
# Every key, with its default: packaging/config.example.toml.
pool_name = ${JSON.stringify(o.poolName)}
${o.address === DEFAULTS.address ? `# address = ${JSON.stringify(DEFAULTS.address)}` : `address = ${JSON.stringify(o.address)}`}

# A pool thinsnap creates (and reloads after a reboot) from two sparse files
# under root_path; replace with an existing thin-pool by deleting this table.
[pool]
data_size = ${JSON.stringify(o.dataSize)}
`;
}

/** The snippet for this host's containerd, pointing at a config's socket and root. */
export function hostSnippet(cfg: { address: string; rootPath: string }): string {
  return containerdSnippet({ ...defaultPlanOptions(detectContainerd()), address: cfg.address, exportsRoot: cfg.rootPath });
}
