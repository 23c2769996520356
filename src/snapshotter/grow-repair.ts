/**
 * Start-up repair of a grow a kill interrupted (grow.ts): its private mount
 * would keep the half-made device open, so reconcile could only queue it
 * instead of rolling its create back. Unmounting is all it needs: the device
 * is still 'creating', and reconcile rolls it back like any unfinished create.
 */
import type { Logger } from "../log.ts";
import { MOUNTINFO } from "../sys/mountinfo.ts";
import { growMountDir } from "./grow.ts";
import { poolDevice, unmountLeftovers } from "./temp-mount.ts";

export function unmountInterruptedGrows(rootPath: string, poolName: string, log: Logger, mountinfo = MOUNTINFO): number {
  return unmountLeftovers(growMountDir(rootPath), poolDevice(poolName, "snap"), log, "the mount of an interrupted grow", mountinfo).length;
}
