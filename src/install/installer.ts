/**
 * `thinsnap install` / `thinsnap uninstall` on a node: the binary, thinsnap's
 * config (never overwritten), the systemd unit, containerd's config.toml
 * (edited in place, a backup kept), then systemd and containerd restarted.
 * Every path is under `hostRoot` ("/" on the host itself, "/host" in the
 * DaemonSet's privileged container); host commands go through `run`, which
 * the CLI points at the host (chroot) and tests stub. Each step is printed.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { DEFAULT_CONFIG_PATH, DEFAULTS, parseConfig } from "../config/config.ts";
import {
  applyEdit,
  configVersionFor,
  containerdRoot,
  type ContainerdVersion,
  detectConfigVersion,
  formatVersion,
  parseContainerdVersion,
  planFor,
  revertEdit,
  snapshotterDir,
  unconfiguredHandlers,
} from "./containerd-config.ts";
import { unifiedDiff } from "./diff.ts";
import { BINARY_PATH, CONTAINERD_CONFIG_PATH, nodeConfig, systemdUnit, UNIT_PATH } from "./snippets.ts";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command on the host. Exit 127: the command does not exist there. */
export type Runner = (argv: string[]) => RunResult;

export const NOT_FOUND = 127;

/** A Runner for the host whose root is `hostRoot`: directly on "/", else through chroot (busybox's in the image). */
export function hostRunner(hostRoot: string): Runner {
  return (argv) => {
    const [cmd, args] = hostRoot === "/" ? [argv[0]!, argv.slice(1)] : ["chroot", [hostRoot, ...argv]];
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 300_000 });
    if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT") {
      if (cmd === "chroot") throw new InstallError("chroot is not on PATH: --host-root needs it to run the host's systemctl");
      return { code: NOT_FOUND, stdout: "", stderr: `${cmd}: not found` };
    }
    return { code: r.status ?? 1, stdout: r.stdout ?? "", stderr: r.stderr ?? (r.error ? String(r.error) : "") };
  };
}

export class InstallError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InstallError";
  }
}

export interface CommonOptions {
  /** The host's root directory as this process sees it. */
  hostRoot: string;
  /** containerd's config.toml on the host. */
  containerdConfig: string;
  dryRun: boolean;
  /** Run systemctl (reload, start, restart); false: print the commands to run instead. */
  restart: boolean;
  run: Runner;
  print: (line: string) => void;
}

export interface InstallOptions extends CommonOptions {
  /** The thinsnap executable to install. */
  binary: string;
  /** thinsnap's socket; written to a new thinsnap config and to containerd's. */
  address: string;
  /** For a new /etc/thinsnap/config.toml. */
  poolName: string;
  dataSize: string;
  criDefault: boolean;
  runtimeHandlers: string[];
  /** containerd's version when given (--containerd-version); else asked from `containerd --version`. */
  containerd: ContainerdVersion | null;
  platform: string;
}

/** Kept next to containerd's config.toml: the file before the last edit. */
export const BACKUP_SUFFIX = ".before-thinsnap";
/** Kept by uninstall: the file as it was before uninstall took thinsnap's lines out. */
export const UNINSTALL_BACKUP_SUFFIX = ".with-thinsnap";
const UNIT = "thinsnap.service";


class Steps {
  private n = 0;
  private systemd = true;
  constructor(private readonly o: CommonOptions) {}

  step(what: string, result: string): void {
    this.o.print(`[${++this.n}] ${what}: ${result}`);
  }

  host(p: string): string {
    return join(this.o.hostRoot, p);
  }

  /** Writes a file atomically (a temp file renamed over it), keeping an existing file's mode and owner. */
  write(p: string, data: string | Uint8Array, mode: number): void {
    const path = this.host(p);
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    const tmp = `${path}.thinsnap-tmp`;
    writeFileSync(tmp, data, { mode });
    if (existsSync(path)) {
      const st = statSync(path);
      chmodSync(tmp, st.mode & 0o7777);
      chownSync(tmp, st.uid, st.gid);
    } else chmodSync(tmp, mode);
    renameSync(tmp, path);
  }

  /** systemctl on the host; a host without it is told what to do by hand. */
  systemctl(...args: string[]): void {
    const cmd = `systemctl ${args.join(" ")}`;
    if (this.o.dryRun || !this.o.restart) {
      this.step(cmd, this.o.dryRun ? "would run" : "skipped (--no-restart): run it yourself");
      return;
    }
    if (!this.systemd) {
      this.step(cmd, "skipped (no systemctl): run it yourself");
      return;
    }
    const r = this.o.run(["systemctl", ...args]);
    if (r.code === NOT_FOUND) {
      this.systemd = false;
      this.step(cmd, "skipped: the host has no systemctl; start thinsnap and restart containerd yourself");
      return;
    }
    if (r.code !== 0) throw new InstallError(`${cmd} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
    this.step(cmd, "done");
  }

  diff(p: string, before: string, after: string): void {
    const d = unifiedDiff(before, after, `${p} (now)`, `${p} (after)`);
    if (d) for (const l of d.replace(/\n$/, "").split("\n")) this.o.print(`    ${l}`);
  }
}

function read(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

function sameFile(a: string, b: string): boolean {
  try {
    if (statSync(a).size !== statSync(b).size) return false;
    return readFileSync(a).equals(readFileSync(b));
  } catch {
    return false;
  }
}

/** The containerd the host runs: the given version, else `containerd --version` on the host, else null. */
export function hostContainerd(o: { containerd: ContainerdVersion | null; run: Runner }): ContainerdVersion | null {
  if (o.containerd) return o.containerd;
  const r = o.run(["containerd", "--version"]);
  return r.code === 0 ? parseContainerdVersion(r.stdout) : null;
}

export function install(o: InstallOptions): void {
  const s = new Steps(o);
  const cd = hostContainerd(o);
  s.step("containerd", cd ? formatVersion(cd) : "not found on the host (the config file's version decides)");

  // containerd's config first: it is the step that may refuse (an unknown shape), before anything is installed.
  const cfgPath = s.host(o.containerdConfig);
  const before = read(cfgPath);
  const version = detectConfigVersion(before ?? "", o.containerdConfig) ?? (cd ? configVersionFor(cd) : null);
  if (version === null) {
    throw new InstallError(
      `${o.containerdConfig} sets nothing and containerd's version is unknown: pass --containerd-version (e.g. 1.7 or 2.1)`,
    );
  }
  const plan = planFor(version, {
    address: o.address,
    exportsRoot: DEFAULTS.rootPath,
    platform: o.platform,
    criDefault: o.criDefault,
    runtimeHandlers: o.runtimeHandlers,
    containerd: cd,
  });
  const missing = unconfiguredHandlers(before ?? "", version, o.runtimeHandlers, o.containerdConfig);
  if (missing.length) {
    throw new InstallError(
      `runtime handler ${missing.join(", ")} is not configured in ${o.containerdConfig} (no runtime_type): ` +
        `configure the runtime first; thinsnap only sets its snapshotter`,
    );
  }
  const edit = applyEdit(before, plan, o.containerdConfig);

  // The binary.
  const bin = s.host(BINARY_PATH);
  const newBinary = !sameFile(o.binary, bin);
  if (!newBinary) s.step(`binary ${BINARY_PATH}`, "up to date");
  else if (o.dryRun) s.step(`binary ${BINARY_PATH}`, `would copy ${o.binary}`);
  else {
    mkdirSync(dirname(bin), { recursive: true, mode: 0o755 });
    const tmp = `${bin}.thinsnap-tmp`;
    copyFileSync(o.binary, tmp);
    chmodSync(tmp, 0o755);
    renameSync(tmp, bin); // a running thinsnap keeps its old inode
    s.step(`binary ${BINARY_PATH}`, `installed (${(statSync(bin).size / 2 ** 20).toFixed(1)} MiB)`);
  }

  // thinsnap's config: the operator's wins.
  if (existsSync(s.host(DEFAULT_CONFIG_PATH))) s.step(`config ${DEFAULT_CONFIG_PATH}`, "kept (an existing config is never overwritten)");
  else {
    const text = nodeConfig({ poolName: o.poolName, dataSize: o.dataSize, address: o.address });
    parseConfig(text, DEFAULT_CONFIG_PATH); // what we write must load
    if (o.dryRun) s.step(`config ${DEFAULT_CONFIG_PATH}`, `would write (pool ${o.poolName}, ${o.dataSize} sparse data file)`);
    else {
      s.write(DEFAULT_CONFIG_PATH, text, 0o644);
      s.step(`config ${DEFAULT_CONFIG_PATH}`, `written (pool ${o.poolName}, ${o.dataSize} sparse data file)`);
    }
  }

  // The unit.
  const unit = systemdUnit();
  const unitChanged = read(s.host(UNIT_PATH)) !== unit;
  if (!unitChanged) s.step(`unit ${UNIT_PATH}`, "up to date");
  else if (o.dryRun) s.step(`unit ${UNIT_PATH}`, "would write");
  else {
    s.write(UNIT_PATH, unit, 0o644);
    s.step(`unit ${UNIT_PATH}`, "written");
  }
  if (unitChanged) s.systemctl("daemon-reload");
  s.systemctl("enable", UNIT);
  // Type=notify: start returns once thinsnap serves, before containerd is restarted.
  s.systemctl(newBinary || unitChanged ? "restart" : "start", UNIT);

  // kubelet's image filesystem under containerd 1.6 (and 1.7 before 1.7.16).
  const dir = snapshotterDir(containerdRoot(before ?? "", o.containerdConfig));
  if (existsSync(s.host(dir))) s.step(`directory ${dir}`, "exists");
  else if (o.dryRun) s.step(`directory ${dir}`, "would create (kubelet's image filesystem path under containerd 1.6)");
  else {
    mkdirSync(s.host(dir), { recursive: true, mode: 0o700 });
    s.step(`directory ${dir}`, "created (kubelet's image filesystem path under containerd 1.6)");
  }

  // containerd's config.
  const what = `containerd config ${o.containerdConfig} (version ${version})`;
  if (edit.changes.length === 0) {
    s.step(what, "already has every thinsnap setting");
    return;
  }
  if (o.dryRun) {
    s.step(what, `would change ${edit.changes.length} setting(s):`);
    s.diff(o.containerdConfig, before ?? "", edit.text);
    s.systemctl("restart", "containerd.service");
    return;
  }
  if (before !== null) s.write(o.containerdConfig + BACKUP_SUFFIX, before, 0o600);
  s.write(o.containerdConfig, edit.text, 0o644);
  s.step(what, `${before === null ? "created" : `edited (backup: ${o.containerdConfig}${BACKUP_SUFFIX})`}:`);
  for (const c of edit.changes) o.print(`    ${c}`);
  s.systemctl("restart", "containerd.service");
}

export function uninstall(o: CommonOptions): void {
  const s = new Steps(o);
  const cfgPath = s.host(o.containerdConfig);
  const before = read(cfgPath);
  const what = `containerd config ${o.containerdConfig}`;
  const back = before === null ? null : revertEdit(before);
  const restore = back !== null && back.changed > 0;
  if (!restore) s.step(what, "has no lines of thinsnap install");
  else if (o.dryRun) {
    s.step(what, back.created && back.text === "" ? "would delete (thinsnap install created it)" : "would restore:");
    s.diff(o.containerdConfig, before!, back.text);
  } else {
    s.write(o.containerdConfig + UNINSTALL_BACKUP_SUFFIX, before!, 0o600);
    if (back.created && back.text === "") {
      rmSync(cfgPath);
      s.step(what, "deleted (thinsnap install created it)");
    } else {
      s.write(o.containerdConfig, back.text, 0o644);
      s.step(what, `restored (${back.changed} line(s) of thinsnap install taken out; backup: ${o.containerdConfig}${UNINSTALL_BACKUP_SUFFIX})`);
    }
  }

  const unitPath = s.host(UNIT_PATH);
  if (existsSync(unitPath)) {
    s.systemctl("disable", "--now", UNIT);
    if (o.dryRun) s.step(`unit ${UNIT_PATH}`, "would remove");
    else {
      rmSync(unitPath);
      s.step(`unit ${UNIT_PATH}`, "removed");
    }
    s.systemctl("daemon-reload");
  } else s.step(`unit ${UNIT_PATH}`, "not installed");

  const bin = s.host(BINARY_PATH);
  if (!existsSync(bin)) s.step(`binary ${BINARY_PATH}`, "not installed");
  else if (o.dryRun) s.step(`binary ${BINARY_PATH}`, "would remove");
  else {
    rmSync(bin);
    s.step(`binary ${BINARY_PATH}`, "removed");
  }

  const dir = snapshotterDir(containerdRoot(back?.text ?? "", o.containerdConfig));
  if (existsSync(s.host(dir)) && readdirSync(s.host(dir)).length === 0) {
    if (!o.dryRun) rmdirSync(s.host(dir));
    s.step(`directory ${dir}`, o.dryRun ? "would remove (empty)" : "removed (empty)");
  }
  // Last: from the DaemonSet's preStop hook, containerd's restart may cut the hook's exec session.
  if (restore) s.systemctl("restart", "containerd.service");
  s.step("kept", `${DEFAULT_CONFIG_PATH} and the pool and snapshots under root_path (${DEFAULTS.rootPath} by default); ` +
    "`thinsnap pool destroy --name NAME --delete-files` frees a file-backed pool");
}
