/**
 * Formats the base device — the only program thinsnap ever execs, once per
 * base (not per snapshot). lost+found is removed here, once, so that
 * parentless snapshots start empty without a temporary mount per Prepare.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, rmdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "../log.ts";
import { mount, umount } from "../sys/libc.ts";
import { killPoint } from "./kill-points.ts";

/** Under root_path (0700): only root can mount there, so what is mounted there is ours. */
const BASE_MOUNT_DIR = "base-mount";

/** containerd's devmapper default for ext4 when fs_options is empty. */
export const DEFAULT_EXT_OPTIONS = "nodiscard,lazy_itable_init=0,lazy_journal_init=0";

export function mkfsCommand(devicePath: string, fsType: string, fsOptions: string): string[] {
  switch (fsType) {
    case "ext4":
    case "ext2":
      return [`mkfs.${fsType}`, "-q", "-F", "-E", fsOptions || DEFAULT_EXT_OPTIONS, devicePath];
    case "xfs":
      // -K: do not discard (the device is fresh and thin); fs_options are extra args.
      return ["mkfs.xfs", "-q", "-f", "-K", ...fsOptions.split(/\s+/).filter(Boolean), devicePath];
    default:
      throw new Error(`unsupported fs_type "${fsType}" (ext4, xfs, ext2)`);
  }
}

/**
 * Formats the base device. rootPath: its temporary mount (to remove
 * lost+found) is made in a 0700 directory there, where only root can mount.
 */
export async function formatDevice(devicePath: string, fsType: string, fsOptions: string, rootPath: string): Promise<void> {
  const cmd = mkfsCommand(devicePath, fsType, fsOptions);
  let proc;
  try {
    proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new Error(`cannot run ${cmd[0]}: ${(e as Error).message} (install e2fsprogs or xfsprogs)`);
  }
  const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${code}): ${(err || out).trim()}`);
  if (fsType !== "xfs") removeLostFound(devicePath, fsType, rootPath);
}

/** The directory the base is mounted on while lost+found is removed. */
export function baseMountDir(rootPath: string): string {
  return join(resolve(rootPath), BASE_MOUNT_DIR);
}

function removeLostFound(devicePath: string, fsType: string, rootPath: string): void {
  const dir = baseMountDir(rootPath);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  mount(devicePath, dir, fsType);
  try {
    killPoint("base.while-mounted");
    if (existsSync(join(dir, "lost+found"))) rmdirSync(join(dir, "lost+found"));
  } finally {
    umount(dir);
  }
}

/** "\040" and the like in /proc/self/mountinfo paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * Mount points in `mountinfo` that a killed thinsnap left: a base device of
 * this pool (/dev/mapper/<pool>-base-<id>) mounted on `dir`. Nothing else
 * is ours to unmount.
 */
export function staleBaseMounts(mountinfo: string, dir: string, poolName: string): string[] {
  const prefix = `/dev/mapper/${poolName}-base-`;
  const ours = (source: string): boolean => source.startsWith(prefix) && /^\d+$/.test(source.slice(prefix.length));
  const out: string[] = [];
  for (const line of mountinfo.split("\n")) {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 3) continue;
    if (unescapeMountPath(f[4]!) === dir && ours(unescapeMountPath(f[sep + 2]!))) out.push(dir);
  }
  return out;
}

/**
 * Unmounts the temporary base mounts a killed thinsnap left (it died between
 * mount and umount in removeLostFound): they would keep the half-made base
 * device busy. A failure is logged, not fatal: the device then stays busy,
 * and start-up queues it for the background remover. Returns what was unmounted.
 */
export function unmountStaleBaseMounts(rootPath: string, poolName: string, log: Logger, mountinfo = "/proc/self/mountinfo"): string[] {
  const dir = baseMountDir(rootPath);
  if (!existsSync(dir)) return [];
  const done: string[] = [];
  for (const m of staleBaseMounts(readFileSync(mountinfo, "utf8"), realpathSync(dir), poolName)) {
    try {
      umount(m);
      done.push(m);
      log.info("unmounted a base mount left by a killed thinsnap", { mount: m });
    } catch (e) {
      log.error("could not unmount a base mount left by a killed thinsnap; its device is deleted once free", { mount: m, error: String(e) });
    }
  }
  return done;
}
