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

test("%.*s takes its precision from a slot and reads no further than it", () => {
  // libdm prints counted, not NUL-terminated, strings this way.
  const asked: (number | undefined)[] = [];
  const bounded = (p: bigint, max: number | undefined): string => {
    asked.push(max);
    const s = p === 0x5000n ? "thin-pool-and-more" : "?";
    return max === undefined ? s : s.slice(0, max);
  };
  expect(formatPrintf("target %.*s: %d", [9n, 0x5000n, 7n], bounded)).toBe("target thin-pool: 7");
  expect(asked).toEqual([9]);
  expect(formatPrintf("[%.4s]", [0x5000n], bounded)).toBe("[thin]");
  expect(asked).toEqual([9, 4]);
  // A negative precision is no precision.
  expect(formatPrintf("%.*s", [-1n, 0x5000n], bounded)).toBe("thin-pool-and-more");
});

test("width and flags pad as C does, `*` width takes a slot", () => {
  expect(formatPrintf("%*d|%-4s|%08x|%5u|%+d", [5n, 42n, 0x1000n, 0xbeefn, 7n, 3n], read)).toBe(
    "   42|tp  |0000beef|    7|+3",
  );
  expect(formatPrintf("%*d|", [-4n, 1n], read)).toBe("1   |");
  expect(formatPrintf("%hhu %hd %.3d %p %p", [0x1ffn, 0x18000n, 5n, 0n, 0xabcn], read)).toBe("255 -32768 005 (nil) 0xabc");
});

test("an unknown conversion stops formatting instead of shifting later arguments", () => {
  // %n / %Lf / a typo take an unknown number of slots: what follows would be misread.
  expect(formatPrintf("a %d %Q then %s", [1n, 0x1000n], read)).toBe("a 1 %Q then %s");
  expect(formatPrintf("n%n %s", [0x1000n], read)).toBe("n%n %s");
  expect(formatPrintf("%Lf %s", [0x1000n], read)).toBe("%Lf %s");
  expect(formatPrintf("trailing %", [], read)).toBe("trailing %");
  // %m (glibc) takes no slot, like the floats.
  expect(formatPrintf("%m %s", [0x1000n], read)).toBe("? tp");
});

test("DmError derives errno from libdm's log when the task lost it", () => {
  const e = new DmError("create", "x", 0, ["device-mapper: create ioctl on x failed: Device or resource busy"]);
  expect(e.errno).toBe(Errno.EBUSY);
  expect(e.message).toContain("EBUSY");
  expect(new DmError("message", "p", Errno.ENODATA, []).message).toContain("ENODATA");
});
