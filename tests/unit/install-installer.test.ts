/**
 * `thinsnap install` / `uninstall` against a scratch host root with systemctl
 * stubbed (src/install/installer.ts): what is written, what is run and in
 * which order, idempotence, the operator's config kept, exact restoration,
 * and --dry-run writing nothing.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_CONFIG_PATH, DEFAULTS } from "../../src/config/config.ts";
import {
  BACKUP_SUFFIX,
  install,
  InstallError,
  NOT_FOUND,
  uninstall,
  type InstallOptions,
  type RunResult,
} from "../../src/install/installer.ts";
import { BINARY_PATH, UNIT_PATH, systemdUnit } from "../../src/install/snippets.ts";

const V2 = `version = 2
root = "/srv/containerd"   # operator's root

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"
`;

let root: string;
let calls: string[][];
let out: string[];
let systemctl: (args: string[]) => RunResult;

function opts(o: Partial<InstallOptions> = {}): InstallOptions {
  return {
    hostRoot: root,
    containerdConfig: "/etc/containerd/config.toml",
    dryRun: false,
    restart: true,
    run: (argv) => {
      calls.push(argv);
      if (argv[0] === "containerd") return { code: 0, stdout: "containerd github.com/containerd/containerd 1.6.20~ds1 x\n", stderr: "" };
      return systemctl(argv.slice(1));
    },
    print: (l) => out.push(l),
    binary: join(root, "..", "thinsnap-src"),
    address: DEFAULTS.address,
    poolName: "thinsnap-pool",
    dataSize: "100GB",
    criDefault: true,
    runtimeHandlers: [],
    containerd: null,
    platform: "linux/amd64",
    ...o,
  };
}

const host = (p: string): string => join(root, p);
const sys = (): string[] => calls.filter((c) => c[0] === "systemctl").map((c) => c.slice(1).join(" "));

beforeEach(() => {
  const dir = mkdtempSync(join(tmpdir(), "thinsnap-install-"));
  root = join(dir, "host");
  mkdirSync(host("/etc/containerd"), { recursive: true });
  writeFileSync(host("/etc/containerd/config.toml"), V2);
  writeFileSync(join(dir, "thinsnap-src"), "#!/bin/sh\necho fake thinsnap\n");
  calls = [];
  out = [];
  systemctl = () => ({ code: 0, stdout: "", stderr: "" });
});

afterEach(() => rmSync(join(root, ".."), { recursive: true, force: true }));

describe("thinsnap install", () => {
  test("installs everything, in order, and edits containerd's config with a backup", () => {
    install(opts());
    expect(readFileSync(host(BINARY_PATH), "utf8")).toBe("#!/bin/sh\necho fake thinsnap\n");
    expect(statSync(host(BINARY_PATH)).mode & 0o777).toBe(0o755);
    expect(readFileSync(host(UNIT_PATH), "utf8")).toBe(systemdUnit());
    expect(readFileSync(host(DEFAULT_CONFIG_PATH), "utf8")).toContain('pool_name = "thinsnap-pool"');
    expect(readFileSync(host("/etc/containerd/config.toml") + BACKUP_SUFFIX, "utf8")).toBe(V2);
    const edited = readFileSync(host("/etc/containerd/config.toml"), "utf8");
    expect(edited).toContain("[proxy_plugins.thinsnap]");
    expect(edited).toStartWith('version = 2\nroot = "/srv/containerd"   # operator\'s root\n');
    // containerd 1.6: kubelet's image filesystem under containerd's root.
    expect(existsSync(host("/srv/containerd/io.containerd.snapshotter.v1.thinsnap"))).toBe(true);
    expect(sys()).toEqual(["daemon-reload", "enable thinsnap.service", "restart thinsnap.service", "restart containerd.service"]);
    expect(out.some((l) => /containerd: 1\.6\.20/.test(l))).toBe(true);
  });

  test("a second run changes nothing and restarts nothing", () => {
    install(opts());
    const cfg = readFileSync(host("/etc/containerd/config.toml"), "utf8");
    const mtime = statSync(host("/etc/containerd/config.toml")).mtimeMs;
    calls = [];
    out = [];
    install(opts());
    expect(readFileSync(host("/etc/containerd/config.toml"), "utf8")).toBe(cfg);
    expect(statSync(host("/etc/containerd/config.toml")).mtimeMs).toBe(mtime);
    expect(sys()).toEqual(["enable thinsnap.service", "start thinsnap.service"]);
    expect(out.join("\n")).toContain("already has every thinsnap setting");
  });

  test("never overwrites the operator's thinsnap config", () => {
    mkdirSync(host("/etc/thinsnap"), { recursive: true });
    writeFileSync(host(DEFAULT_CONFIG_PATH), 'pool_name = "mine"\n');
    install(opts());
    expect(readFileSync(host(DEFAULT_CONFIG_PATH), "utf8")).toBe('pool_name = "mine"\n');
    expect(out.join("\n")).toContain("kept (an existing config is never overwritten)");
  });

  test("--dry-run writes nothing, runs no systemctl, and shows the diff", () => {
    install(opts({ dryRun: true }));
    expect(existsSync(host(BINARY_PATH))).toBe(false);
    expect(existsSync(host(UNIT_PATH))).toBe(false);
    expect(existsSync(host(DEFAULT_CONFIG_PATH))).toBe(false);
    expect(readFileSync(host("/etc/containerd/config.toml"), "utf8")).toBe(V2);
    expect(sys()).toEqual([]);
    const text = out.join("\n");
    expect(text).toContain('+  snapshotter = "thinsnap"  # thinsnap-install: added');
    expect(text).toContain("+[proxy_plugins.thinsnap]");
    expect(text).toContain("systemctl restart containerd.service: would run");
  });

  test("a host without systemctl: files installed, the commands left to the operator", () => {
    systemctl = () => ({ code: NOT_FOUND, stdout: "", stderr: "chroot: failed to run command 'systemctl'" });
    install(opts());
    expect(existsSync(host(UNIT_PATH))).toBe(true);
    expect(sys()).toEqual(["daemon-reload"]); // tried once, then skipped
    expect(out.join("\n")).toContain("the host has no systemctl");
  });

  test("a failing systemctl stops the install with its message", () => {
    systemctl = (a) => (a[0] === "restart" ? { code: 1, stdout: "", stderr: "Job for thinsnap.service failed.\n" } : { code: 0, stdout: "", stderr: "" });
    expect(() => install(opts())).toThrow(/systemctl restart thinsnap.service failed \(exit 1\): Job for thinsnap.service failed\./);
  });

  test("no containerd config and no containerd: asks for the version; with it, creates the file", () => {
    rmSync(host("/etc/containerd/config.toml"));
    const none = opts();
    none.run = (argv) => (argv[0] === "containerd" ? { code: NOT_FOUND, stdout: "", stderr: "" } : { code: 0, stdout: "", stderr: "" });
    expect(() => install(none)).toThrow(InstallError);
    expect(() => install(none)).toThrow(/--containerd-version/);
    install({ ...none, containerd: { major: 2, minor: 1, patch: 0 } });
    expect(readFileSync(host("/etc/containerd/config.toml"), "utf8")).toContain("version = 3");
    uninstall(opts());
    expect(existsSync(host("/etc/containerd/config.toml"))).toBe(false);
  });

  test("a runtime handler the file does not configure is refused before anything is installed", () => {
    expect(() => install(opts({ runtimeHandlers: ["kata"], containerd: { major: 1, minor: 7, patch: 20 } }))).toThrow(/runtime handler kata is not configured/);
    expect(existsSync(host(BINARY_PATH))).toBe(false);
  });
});

describe("thinsnap uninstall", () => {
  test("restores containerd's config byte for byte, removes unit and binary, keeps the config", () => {
    install(opts());
    calls = [];
    uninstall(opts());
    expect(readFileSync(host("/etc/containerd/config.toml"), "utf8")).toBe(V2);
    expect(existsSync(host(UNIT_PATH))).toBe(false);
    expect(existsSync(host(BINARY_PATH))).toBe(false);
    expect(existsSync(host(DEFAULT_CONFIG_PATH))).toBe(true);
    expect(existsSync(host("/srv/containerd/io.containerd.snapshotter.v1.thinsnap"))).toBe(false);
    // containerd restarts last: from a pod's preStop hook, its restart may cut the hook's session.
    expect(sys()).toEqual(["disable --now thinsnap.service", "daemon-reload", "restart containerd.service"]);
    calls = [];
    uninstall(opts());
    expect(sys()).toEqual([]);
    expect(readFileSync(host("/etc/containerd/config.toml"), "utf8")).toBe(V2);
  });
});
