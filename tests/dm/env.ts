// Device-mapper availability for tests/dm. Tests that need a real thin-pool use
//   test.skipIf(!dm.available)(...)
// and print dm.reason, so a run without device-mapper shows SKIPPED, never a silent pass.
// `npm run test:dm` (tests/vm/run-dm-tests) runs tests/dm as root in a qemu guest
// with device-mapper when this host cannot.
import { existsSync, readFileSync } from "node:fs";

const uid = typeof process.getuid === "function" ? process.getuid() : -1;
const isRoot = uid === 0;
// The node alone proves nothing: libdevmapper creates it even on a kernel
// without device-mapper. /proc/misc lists the driver only when it is there.
const kernelHasDm = (() => {
  try {
    return /\bdevice-mapper\b/.test(readFileSync("/proc/misc", "utf8"));
  } catch {
    return false;
  }
})();
const hasControl = kernelHasDm && existsSync("/dev/mapper/control");

function why(): string {
  const hint = "run `npm run test:dm` (tests/vm/run-dm-tests) to use the qemu guest";
  if (!isRoot && !hasControl) return `not root (uid ${uid}) and no /dev/mapper/control; ${hint}`;
  if (!isRoot) return `not running as root (uid ${uid}); ${hint}`;
  if (!kernelHasDm) return `this kernel has no device-mapper (not in /proc/misc); ${hint}`;
  if (!hasControl) return `/dev/mapper/control does not exist; ${hint}`;
  return process.env.THINSNAP_GUEST === "1"
    ? "root in the thinsnap qemu guest with /dev/mapper/control"
    : "root with /dev/mapper/control";
}

export const dm: { available: boolean; reason: string } = {
  available: isRoot && hasControl,
  reason: why(),
};

/** True inside tests/vm/vmrun's guest (THINSNAP_GUEST=1). */
export const inGuest: boolean = process.env.THINSNAP_GUEST === "1";
