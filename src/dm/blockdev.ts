/**
 * Block-device ioctls through libc (size, discard) and loop devices for
 * file-backed pools. Used at pool set-up and by the background remover —
 * never a subprocess.
 */
import { ptr as addressOf } from "bun:ffi";
import { errno, libc, SyscallError } from "../sys/libc.ts";
import { closeSync, existsSync, openSync, readFileSync, readdirSync, readlinkSync, constants } from "node:fs";

// linux/fs.h and linux/loop.h request numbers (x86_64/arm64 share them).
const BLKGETSIZE64 = 0x80081272n;
const BLKDISCARD = 0x1277n;
const LOOP_SET_FD = 0x4c00n;
const LOOP_CLR_FD = 0x4c01n;
const LOOP_SET_STATUS64 = 0x4c04n;
const LOOP_CTL_GET_FREE = 0x4c82n;
const LOOP_INFO64_SIZE = 232;
// struct loop_info64: 5×u64, lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags, lo_file_name@56
const LO_FILE_NAME_OFFSET = 56;

function ioctl(fd: number, req: bigint, arg: NodeJS.TypedArray | number | null, op: string, path: string): number {
  const a = arg === null ? 0n : typeof arg === "number" ? BigInt(arg) : BigInt(addressOf(arg));
  const rc = libc().ioctl(fd, req, a);
  const e = rc < 0 ? errno() : 0; // first thing after the call (see errno())
  if (rc < 0) throw new SyscallError(op, path, e);
  return rc;
}

function withFd<T>(path: string, flags: number, fn: (fd: number) => T): T {
  const fd = openSync(path, flags);
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** Size of a block device in bytes. */
export function blockDeviceSize(path: string): bigint {
  return withFd(path, constants.O_RDONLY, (fd) => {
    const out = new BigUint64Array(1);
    ioctl(fd, BLKGETSIZE64, out, "BLKGETSIZE64", path);
    return out[0]!;
  });
}

/** Discards [offset, offset+length) — the whole device by default. */
export function discardBlocks(path: string, offset = 0n, length?: bigint): void {
  withFd(path, constants.O_WRONLY, (fd) => {
    const len = length ?? blockDeviceSize(path) - offset;
    ioctl(fd, BLKDISCARD, new BigUint64Array([offset, len]), "BLKDISCARD", path);
  });
}

/**
 * Attaches a file to a free loop device and returns its path. Not autoclear:
 * we hold no fd, so autoclear would detach it at once; pool destroy detaches.
 */
export function attachLoop(file: string): string {
  const index = withFd("/dev/loop-control", constants.O_RDWR, (fd) =>
    ioctl(fd, LOOP_CTL_GET_FREE, null, "LOOP_CTL_GET_FREE", "/dev/loop-control"),
  );
  const dev = `/dev/loop${index}`;
  const fileFd = openSync(file, constants.O_RDWR);
  try {
    withFd(dev, constants.O_RDWR, (fd) => {
      ioctl(fd, LOOP_SET_FD, fileFd, "LOOP_SET_FD", dev);
      const info = new Uint8Array(LOOP_INFO64_SIZE);
      info.set(Buffer.from(file).subarray(0, 63), LO_FILE_NAME_OFFSET);
      try {
        ioctl(fd, LOOP_SET_STATUS64, info, "LOOP_SET_STATUS64", dev);
      } catch (e) {
        libc().ioctl(fd, LOOP_CLR_FD, 0n);
        throw e;
      }
    });
  } finally {
    closeSync(fileFd);
  }
  return dev;
}

/** Detaches a loop device (no-op if it has no backing file). */
export function detachLoop(dev: string): void {
  withFd(dev, constants.O_RDONLY, (fd) => {
    const rc = libc().ioctl(fd, LOOP_CLR_FD, 0n);
    if (rc < 0) {
      const e = errno();
      if (e !== 6) throw new SyscallError("LOOP_CLR_FD", dev, e); // ENXIO: already free
    }
  });
}

/** The backing file of a loop device, or null. */
export function loopBackingFile(dev: string): string | null {
  const m = /^\/dev\/loop(\d+)$/.exec(dev);
  if (!m) return null;
  const p = `/sys/block/loop${m[1]}/loop/backing_file`;
  return existsSync(p) ? readFileSync(p, "utf8").trim() : null;
}

/** Loop devices currently backed by `file`. */
export function loopsForFile(file: string): string[] {
  if (!existsSync("/sys/block")) return [];
  return readdirSync("/sys/block")
    .filter((d) => d.startsWith("loop"))
    .map((d) => `/dev/${d}`)
    .filter((dev) => loopBackingFile(dev) === file);
}

/** "7:0" → "/dev/loop0" via sysfs; paths stay as they are. */
export function devPath(dev: string): string {
  const m = /^(\d+):(\d+)$/.exec(dev);
  if (!m) return dev;
  try {
    return `/dev/${readlinkSync(`/sys/dev/block/${dev}`).split("/").pop()}`;
  } catch {
    return dev;
  }
}
