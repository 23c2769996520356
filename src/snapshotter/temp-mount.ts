/**
 * Short-lived private mounts of our own devices (lost+found removal on the
 * base, growing a filesystem) on fresh directories under the temp dir, and
 * the clean-up of those a killed thinsnap left mounted: they would keep a
 * half-made device open (busy) forever.
 */
import { mkdtempSync, readFileSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mount, umount } from "../sys/libc.ts";

/** Mounts `device` on a new directory named `prefix`…, runs fn, unmounts (also when fn throws). */
export async function withTempMount<T>(
  prefix: string,
  device: string,
  fsType: string,
  data: string,
  fn: (dir: string) => T | Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    mount(device, dir, fsType, 0n, data);
  } catch (e) {
    rmdirSync(dir);
    throw e;
  }
  try {
    return await fn(dir);
  } finally {
    umount(dir);
    rmdirSync(dir);
  }
}

/** Unmounts and removes the directories `prefix`… left mounted; returns them. */
export function unmountStale(prefix: string, mountinfo = "/proc/self/mountinfo"): string[] {
  const base = join(tmpdir(), prefix);
  const stale = readFileSync(mountinfo, "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m.startsWith(base));
  for (const m of stale) {
    umount(m);
    rmdirSync(m);
  }
  return stale;
}
