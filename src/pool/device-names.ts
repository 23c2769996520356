/**
 * Names of the thin devices thinsnap derives from pool_name, and the limit
 * that puts on pool_name. The snapshotter names its devices
 * `<pool>-snap-<id>`, `<pool>-base-<id>` and `<pool>-foreign-<id>`
 * (src/snapshotter/snapshotter.ts); a unit test holds it to these forms.
 */
import { MAX_THIN_ID } from "../dm/status.ts";

/** DM_NAME_LEN is 128 bytes including the terminating NUL. */
export const DM_NAME_MAX = 127;

export const THIN_DEVICE_ROLES = ["snap", "base", "foreign"] as const;
export type ThinDeviceRole = (typeof THIN_DEVICE_ROLES)[number];

export function thinDeviceName(poolName: string, role: ThinDeviceRole, thinId: number): string {
  return `${poolName}-${role}-${thinId}`;
}

const utf8Length = (s: string): number => new TextEncoder().encode(s).length;

/** Bytes the longest derived name adds to pool_name: "-foreign-16777215". */
export const LONGEST_DEVICE_SUFFIX = Math.max(
  ...THIN_DEVICE_ROLES.map((role) => utf8Length(thinDeviceName("", role, MAX_THIN_ID))),
);

/** The longest pool_name whose every derived device name fits DM_NAME_MAX. */
export const MAX_POOL_NAME_BYTES = DM_NAME_MAX - LONGEST_DEVICE_SUFFIX;

export { utf8Length };
