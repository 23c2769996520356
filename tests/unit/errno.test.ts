/**
 * errno of a failed libc call (src/sys/libc.ts errno()) is read first thing
 * after the call. Whether JS run in between clobbers it depends on what that
 * JS does (a GC or an allocation slow path may make syscalls): not something a
 * test can provoke reliably. What it can do: make the code in between fail a
 * libc call itself (a source path whose string conversion does one, as
 * building the error message converts it again) and check the reported errno
 * is still the mount's own.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { blockDeviceSize } from "../../src/dm/blockdev.ts";
import { libc, mount, SyscallError } from "../../src/sys/libc.ts";

const EBADF = 9;
const ENOTTY = 25;

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error("did not throw");
}

test("a failed ioctl reports its own errno", () => {
  const e = thrown(() => blockDeviceSize("/dev/null"));
  expect(e).toBeInstanceOf(SyscallError);
  expect((e as SyscallError).errno).toBe(ENOTTY);
});

test("errno is read before the error message is built", () => {
  const dir = mkdtempSync("/tmp/thinsnap-errno-");
  try {
    // Converting this path to a string fails a libc call (EBADF) each time.
    const source = {
      toString(): string {
        libc().ioctl(-1, 0n, 0n);
        return "/dev/null";
      },
    } as unknown as string;
    const e = thrown(() => mount(source, dir, "thinsnap-no-such-fs"));
    expect(e).toBeInstanceOf(SyscallError);
    // ENODEV as root (unknown filesystem type), EPERM otherwise: never the EBADF from in between.
    expect((e as SyscallError).errno).not.toBe(EBADF);
    expect([1, 19]).toContain((e as SyscallError).errno);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
