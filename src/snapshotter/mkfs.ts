/**
 * Formats the base device — the only program thinsnap ever execs, once per
 * base (not per snapshot). lost+found is removed here, once, so that
 * parentless snapshots start empty without a temporary mount per Prepare.
 */
import { existsSync, rmdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Logger } from "../log.ts";
import { MOUNTINFO } from "../sys/mountinfo.ts";
import { killPoint } from "./kill-points.ts";
import { mountsIn, poolDevice, privateDir, unmountLeftovers, withMount } from "./temp-mount.ts";

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
  if (fsType !== "xfs") await removeLostFound(devicePath, fsType, rootPath);
}

/** The directory the base is mounted on while lost+found is removed. */
export function baseMountDir(rootPath: string): string {
  return join(resolve(rootPath), BASE_MOUNT_DIR);
}

function removeLostFound(devicePath: string, fsType: string, rootPath: string): Promise<void> {
  const dir = privateDir(baseMountDir(rootPath));
  return withMount(dir, devicePath, fsType, "", (d) => {
    killPoint("base.while-mounted");
    if (existsSync(join(d, "lost+found"))) rmdirSync(join(d, "lost+found"));
  });
}

/**
 * Mount points in `mountinfo` that a killed thinsnap left: a base device of
 * this pool (/dev/mapper/<pool>-base-<id>) mounted on `dir`.
 */
export function staleBaseMounts(mountinfo: string, dir: string, poolName: string): string[] {
  return mountsIn(mountinfo, dir, poolDevice(poolName, "base")).filter((m) => m === dir);
}

/**
 * Unmounts the temporary base mounts a killed thinsnap left (it died between
 * mount and umount in removeLostFound): they would keep the half-made base
 * device busy. A failure is logged, not fatal: the device then stays busy,
 * and start-up queues it for the background remover. Returns what was unmounted.
 */
export function unmountStaleBaseMounts(rootPath: string, poolName: string, log: Logger, mountinfo = MOUNTINFO): string[] {
  return unmountLeftovers(baseMountDir(rootPath), poolDevice(poolName, "base"), log, "a base mount", mountinfo);
}
