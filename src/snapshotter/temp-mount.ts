/**
 * Short-lived private mounts of our own devices (lost+found removal on the
 * base, growing a filesystem), and the clean-up of those a killed thinsnap
 * left mounted: they would keep a half-made device open (busy) forever.
 *
 * They live in 0700 directories under root_path, so only root can mount
 * there; at start-up only a mount of one of our pool's devices on such a
 * directory is unmounted, and a failure is logged, never fatal (a busy
 * device is then queued for the background remover).
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../log.ts";
import { mount, umount } from "../sys/libc.ts";
import { MOUNTINFO, parseMountinfo } from "../sys/mountinfo.ts";

/** Makes `dir` (and its parents) and ensures it is 0700. */
export function privateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  return dir;
}

/** Mounts `device` on `dir`, runs fn, unmounts (also when fn throws). */
export async function withMount<T>(
  dir: string,
  device: string,
  fsType: string,
  data: string,
  fn: (dir: string) => T | Promise<T>,
): Promise<T> {
  mount(device, dir, fsType, 0n, data);
  try {
    return await fn(dir);
  } finally {
    umount(dir);
  }
}

/** Mounts `device` on a new directory inside the private `parent`, runs fn, unmounts and removes it. */
export async function withPrivateMount<T>(
  parent: string,
  device: string,
  fsType: string,
  data: string,
  fn: (dir: string) => T | Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(privateDir(parent), "m-"));
  try {
    return await withMount(dir, device, fsType, data, fn);
  } finally {
    rmdirSync(dir);
  }
}

/** "\040" and the like in /proc/self/mountinfo paths. */
/**
 * Mount points in `mountinfo` that are `dir` itself or directly inside it,
 * whose source `ours` accepts. Nothing else is ours to unmount.
 */
export function mountsIn(mountinfo: string, dir: string, ours: (source: string) => boolean): string[] {
  const inside = (point: string): boolean => point === dir || (point.startsWith(`${dir}/`) && !point.slice(dir.length + 1).includes("/"));
  return parseMountinfo(mountinfo)
    .filter((m) => inside(m.point) && ours(m.source))
    .map((m) => m.point);
}

/** Unmounts what mountsIn finds (removing directories made inside `dir`); returns what was unmounted. */
export function unmountLeftovers(
  dir: string,
  ours: (source: string) => boolean,
  log: Logger,
  what: string,
  mountinfo = MOUNTINFO,
): string[] {
  if (!existsSync(dir)) return [];
  const real = realpathSync(dir);
  const done: string[] = [];
  for (const m of mountsIn(readFileSync(mountinfo, "utf8"), real, ours)) {
    try {
      umount(m);
      if (m !== real) rmdirSync(m);
      done.push(m);
      log.info(`unmounted ${what} left by a killed thinsnap`, { mount: m });
    } catch (e) {
      log.error(`could not unmount ${what} left by a killed thinsnap; its device is deleted once free`, { mount: m, error: String(e) });
    }
  }
  return done;
}

/** A device-mapper source of pool `poolName` of the given role ("base", "snap"). */
export function poolDevice(poolName: string, role: string): (source: string) => boolean {
  const prefix = `/dev/mapper/${poolName}-${role}-`;
  return (source) => source.startsWith(prefix) && /^\d+$/.test(source.slice(prefix.length));
}
