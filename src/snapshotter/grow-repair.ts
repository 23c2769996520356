/**
 * Start-up repair of a grow a kill interrupted (grow.ts): its temp mount
 * would keep the half-made device open, so reconcile could only queue it
 * instead of rolling its create back. Unmounting is all it needs: the device
 * is still 'creating', and reconcile rolls it back like any unfinished create.
 */
import type { Logger } from "../log.ts";
import { GROW_MOUNT_PREFIX } from "./grow.ts";
import { unmountStale } from "./temp-mount.ts";

export function unmountInterruptedGrows(log: Logger, mountinfo = "/proc/self/mountinfo"): number {
  const stale = unmountStale(GROW_MOUNT_PREFIX, mountinfo);
  for (const m of stale) log.warn("reconcile: unmounted the mount of an interrupted grow", { mount: m });
  return stale.length;
}
