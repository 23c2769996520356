/**
 * Formats the base device — the only program thinsnap ever execs, once per
 * base (not per snapshot). lost+found is removed here, once, so that
 * parentless snapshots start empty without a temporary mount per Prepare.
 */
import { rmdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { killPoint } from "../testing/kill-point.ts";
import { unmountStale, withTempMount } from "./temp-mount.ts";

const TEMP_MOUNT_PREFIX = "thinsnap-base-";

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

export async function formatDevice(devicePath: string, fsType: string, fsOptions: string): Promise<void> {
  const cmd = mkfsCommand(devicePath, fsType, fsOptions);
  let proc;
  try {
    proc = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  } catch (e) {
    throw new Error(`cannot run ${cmd[0]}: ${(e as Error).message} (install e2fsprogs or xfsprogs)`);
  }
  const [code, out, err] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${code}): ${(err || out).trim()}`);
  if (fsType !== "xfs") await removeLostFound(devicePath, fsType);
}

function removeLostFound(devicePath: string, fsType: string): Promise<void> {
  return withTempMount(TEMP_MOUNT_PREFIX, devicePath, fsType, "", (dir) => {
    killPoint("base.while-mounted");
    if (existsSync(join(dir, "lost+found"))) rmdirSync(join(dir, "lost+found"));
  });
}

/**
 * Unmounts temporary base mounts a killed thinsnap left behind (it died
 * between mount and umount in removeLostFound): they would keep the
 * half-made base device busy forever. Returns the mount points removed.
 */
export function unmountStaleBaseMounts(mountinfo = "/proc/self/mountinfo"): string[] {
  return unmountStale(TEMP_MOUNT_PREFIX, mountinfo);
}
