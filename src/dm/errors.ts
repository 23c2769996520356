/** A failed libdevmapper task, with the kernel's errno and libdm's own words. */

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  5: "EIO",
  6: "ENXIO",
  12: "ENOMEM",
  13: "EACCES",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  28: "ENOSPC",
  30: "EROFS",
  61: "ENODATA",
  95: "EOPNOTSUPP",
};

const ERRNO_TEXT: Record<number, string> = {
  1: "Operation not permitted",
  2: "No such file or directory",
  5: "Input/output error",
  6: "No such device or address",
  12: "Cannot allocate memory",
  13: "Permission denied",
  16: "Device or resource busy",
  17: "File exists",
  19: "No such device",
  22: "Invalid argument",
  28: "No space left on device",
  30: "Read-only file system",
  61: "No data available",
  95: "Operation not supported",
};

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ENODATA: 61,
  EOPNOTSUPP: 95,
} as const;

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

export class DmError extends Error {
  /** The kernel's errno for the ioctl, 0 when libdm failed before the ioctl. */
  readonly errno: number;
  readonly op: string;
  readonly device: string;
  readonly dmLog: string[];
  constructor(op: string, device: string, errnoIn: number, dmLog: string[], detail?: string) {
    // CREATE is create+load+resume inside libdm; a failed load leaves errno 0
    // after libdm's own clean-up, but its log still names the kernel's error.
    const errno = errnoIn || errnoFromLog(dmLog);
    const cause = errno ? `${ERRNO_TEXT[errno] ?? "error"} (${errnoName(errno)})` : "failed";
    const log = dmLog.length ? `; libdevmapper: ${dmLog.join("; ")}` : "";
    super(`device-mapper ${op} on ${device || "(none)"}: ${detail ? `${detail}: ` : ""}${cause}${log}`);
    this.name = "DmError";
    this.errno = errno;
    this.op = op;
    this.device = device;
    this.dmLog = dmLog;
  }
}

/** What of a DmError survives a thread boundary (structured clone keeps no class). */
export interface DmErrorFields {
  op: string;
  device: string;
  errno: number;
  dmLog: string[];
  message: string;
}

export function dmErrorFields(e: DmError): DmErrorFields {
  return { op: e.op, device: e.device, errno: e.errno, dmLog: e.dmLog, message: e.message };
}

export function reviveDmError(f: DmErrorFields): DmError {
  const e = new DmError(f.op, f.device, f.errno, f.dmLog);
  e.message = f.message;
  return e;
}

export function isErrno(err: unknown, errno: number): boolean {
  return err instanceof DmError && err.errno === errno;
}

function errnoFromLog(log: string[]): number {
  for (const line of log) {
    for (const [n, text] of Object.entries(ERRNO_TEXT)) {
      if (line.endsWith(`failed: ${text}`)) return Number(n);
    }
  }
  return 0;
}
