/**
 * systemd readiness notification (sd_notify) without libsystemd: one datagram
 * to $NOTIFY_SOCKET. node:dgram has no unix datagram sockets, so libc it is.
 */
import { dlopen, FFIType } from "bun:ffi";

const { i32, i64, ptr, u32, u64 } = FFIType;
const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;

let lib: ReturnType<typeof open> | null = null;
function open() {
  return dlopen("libc.so.6", {
    socket: { args: [i32, i32, i32], returns: i32 },
    sendto: { args: [i32, ptr, u64, i32, ptr, u32], returns: i64 },
    close: { args: [i32], returns: i32 },
  }).symbols;
}

/** Encodes struct sockaddr_un for a path or an abstract name ("@name"). */
export function sockaddrUn(path: string): { addr: Buffer; len: number } {
  const name = Buffer.from(path.startsWith("@") ? `\0${path.slice(1)}` : path);
  if (name.length > 107) throw new Error(`NOTIFY_SOCKET path too long: ${path}`);
  const addr = Buffer.alloc(110);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  // abstract names are not NUL-terminated: the length says where they end
  return { addr, len: 2 + name.length + (path.startsWith("@") ? 0 : 1) };
}

/** Sends `state` (e.g. "READY=1") when run under systemd; returns whether it was sent. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const target = env.NOTIFY_SOCKET;
  if (!target) return false;
  lib ??= open();
  const { addr, len } = sockaddrUn(target);
  const fd = lib.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  try {
    const msg = Buffer.from(state);
    return Number(lib.sendto(fd, msg, BigInt(msg.length), MSG_NOSIGNAL, addr, len)) === msg.length;
  } finally {
    lib.close(fd);
  }
}
