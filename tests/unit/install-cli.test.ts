/** `thinsnap install|uninstall` flags (src/cli/install.ts), through the CLI's entry point. */
import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
const root = mkdtempSync(join(tmpdir(), "thinsnap-install-cli-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const cli = (...args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { encoding: "utf8" });
const V3 = "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n";

test("install --dry-run prints the steps and the diff, and writes nothing", () => {
  mkdirSync(join(root, "etc/containerd"), { recursive: true });
  writeFileSync(join(root, "etc/containerd/config.toml"), V3);
  const r = cli("install", "--dry-run", "--host-root", root, "--binary", MAIN, "--containerd-version", "2.1");
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout).toContain("[1] containerd: 2.1.0");
  expect(r.stdout).toContain("--- /etc/containerd/config.toml (now)");
  expect(r.stdout).toContain('+  snapshotter = "thinsnap"  # thinsnap-install: added');
  expect(r.stdout).toContain("-  snapshotter = 'overlayfs'");
  expect(r.stdout).toContain("systemctl restart containerd.service: would run");
  expect(readFileSync(join(root, "etc/containerd/config.toml"), "utf8")).toBe(V3);
  expect(existsSync(join(root, "usr"))).toBe(false);
});

test("bad flags are usage errors (exit 2) that say what is expected", () => {
  let r = cli("install", "--dry-run", "--host-root", root, "--binary", MAIN, "--containerd-version", "two");
  expect(r.status).toBe(2);
  expect(r.stderr).toContain("--containerd-version: expected MAJOR.MINOR[.PATCH]");
  r = cli("uninstall", "--host-root", "host");
  expect(r.status).toBe(2);
  expect(r.stderr).toContain("--host-root must be an absolute path");
  r = cli("install", "--dry-run", "--host-root", root);
  expect(r.status).toBe(2);
  expect(r.stderr).toContain("pass --binary dist/thinsnap");
});

test("a containerd config it cannot edit: exit 1, and the lines to add by hand", () => {
  writeFileSync(join(root, "etc/containerd/config.toml"), "version = 3\n[plugins]\n  'io.containerd.cri.v1.images' = { snapshotter = 'overlayfs' }\n");
  const r = cli("install", "--dry-run", "--host-root", root, "--binary", MAIN, "--containerd-version", "2.1");
  expect(r.status).toBe(1);
  expect(r.stderr).toContain("add these lines by hand");
  expect(r.stderr).toContain('[plugins."io.containerd.cri.v1.images"]');
});
