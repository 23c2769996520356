/** The few libc calls we need (ioctl, mount) through bun:ffi, and errno. */
import { dlopen, FFIType, read, type Pointer } from "bun:ffi";

const { i32, u32, u64, ptr } = FFIType;

function open() {
  return dlopen("libc.so.6", {
    // The third argument is an integer or an address: pass both as u64.
    ioctl: { args: [i32, u64, u64], returns: i32 },
    mount: { args: [ptr, ptr, ptr, u64, ptr], returns: i32 },
    umount2: { args: [ptr, i32], returns: i32 },
    flock: { args: [i32, i32], returns: i32 },
    memfd_create: { args: [ptr, u32], returns: i32 },
    __errno_location: { args: [], returns: ptr },
  }).symbols;
}

let lib: ReturnType<typeof open> | null = null;
/** This thread's errno variable (its address is fixed per thread; each worker has its own module). */
let errnoAt: Pointer | null = null;
export function libc(): ReturnType<typeof open> {
  lib ??= open();
  if (errnoAt === null) {
    const p = lib.__errno_location();
    errnoAt = typeof p === "bigint" ? (Number(p) as Pointer) : p;
  }
  return lib;
}

/**
 * errno of the last failed libc call on this thread: a plain memory read, so
 * call it first thing after the failure. Anything in between (building a
 * message, an allocation that triggers GC) may make a syscall that overwrites it.
 */
export function errno(): number {
  return errnoAt ? read.i32(errnoAt, 0) : 0;
}

export class SyscallError extends Error {
  constructor(
    readonly op: string,
    readonly path: string,
    readonly errno: number,
  ) {
    super(`${op} ${path} failed (errno ${errno})`);
    this.name = "SyscallError";
  }
}

const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);

export const MS_RDONLY = 1n;
export const MS_BIND = 4096n;
export const MS_REC = 16384n;
export const MS_REMOUNT = 32n;

export function mount(source: string, target: string, fsType: string, flags = 0n, data = ""): void {
  if (libc().mount(cstr(source), cstr(target), cstr(fsType), flags, cstr(data)) !== 0) {
    const e = errno(); // before the message is built
    throw new SyscallError(`mount -t ${fsType} ${source}`, target, e);
  }
}

export function umount(target: string): void {
  if (libc().umount2(cstr(target), 0) !== 0) throw new SyscallError("umount", target, errno());
}

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/**
 * Takes an exclusive advisory lock on an open file descriptor; false when
 * another process holds it. The lock lives as long as the descriptor.
 */
export function tryLock(fd: number, path: string): boolean {
  if (libc().flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const e = errno();
  if (e === EWOULDBLOCK) return false;
  throw new SyscallError("flock", path, e);
}

const MFD_CLOEXEC = 1;

/** An anonymous in-memory file (memfd_create); its descriptor is not inherited by children. */
export function memfdCreate(name: string): number {
  const fd = libc().memfd_create(cstr(name), MFD_CLOEXEC);
  if (fd < 0) throw new SyscallError("memfd_create", name, errno());
  return fd;
}
