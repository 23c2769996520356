import { expect, test } from "bun:test";
import { formatPrintf } from "../../src/dm/dm-log.ts";
import { DmError, Errno } from "../../src/dm/errors.ts";

const strings = new Map<bigint, string>([
  [0x1000n, "tp"],
  [0x2000n, "File exists"],
]);
const read = (p: bigint): string => strings.get(p) ?? "<bad>";

test("formats libdm's ioctl failure line", () => {
  const fmt = "device-mapper: %s ioctl on %s %s%s%.0d%s%.0d%s%s failed: %s";
  // libdm passes "" for the parts it elides and 0 for the hidden major:minor.
  const E = 0x4000n;
  const msg = formatPrintf(fmt, [0x3000n, 0x1000n, E, E, 0n, E, 0n, E, E, 0x2000n], (p) =>
    p === 0x3000n ? "message" : p === E ? "" : read(p),
  );
  expect(msg).toBe("device-mapper: message ioctl on tp  failed: File exists");
  expect(formatPrintf("%s", [0n], read)).toBe("(null)");
});

test("integer conversions honour width of the length modifier", () => {
  expect(formatPrintf("%d %u %x %lu %" + "c%%", [0xffffffffn, 0xffffffffn, 255n, 1n << 40n, 65n], read)).toBe(
    "-1 4294967295 ff 1099511627776 A%",
  );
});

test("floats cannot be read and missing arguments do not crash", () => {
  expect(formatPrintf("%f then %d", [7n], read)).toBe("? then 7");
  expect(formatPrintf("%s %s", [0x1000n], read)).toBe("tp ?");
  expect(formatPrintf("%.0d", [0n], read)).toBe("");
  expect(formatPrintf("%.0d", [3n], read)).toBe("3");
});

test("DmError derives errno from libdm's log when the task lost it", () => {
  const e = new DmError("create", "x", 0, ["device-mapper: create ioctl on x failed: Device or resource busy"]);
  expect(e.errno).toBe(Errno.EBUSY);
  expect(e.message).toContain("EBUSY");
  expect(new DmError("message", "p", Errno.ENODATA, []).message).toContain("ENODATA");
});
