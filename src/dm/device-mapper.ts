/**
 * Typed device-mapper operations over libdevmapper's dm_task API, in process.
 * Every task is destroyed in `finally`; every failure throws a DmError that
 * carries errno and what libdevmapper logged.
 *
 * All calls are synchronous ioctls on the JS thread: a sequence of them in one
 * function cannot be interleaved with another request, which is what lets the
 * pool layer run "suspend origin → create_snap → resume" without a lock.
 */
import { existsSync } from "node:fs";
import { CString, read, type Pointer } from "bun:ffi";
import { cstr, DM_UDEV_DISABLE_LIBRARY_FALLBACK, DmTaskType, libdm, type NativePtr } from "./libdm.ts";
import { installDmLog, withCapturedLog } from "./dm-log.ts";
import { DmError, Errno } from "./errors.ts";
import { parseThinPoolStatus, parseThinStatus, type ThinPoolStatus, type ThinStatus } from "./status.ts";

export interface Target {
  start: bigint;
  length: bigint;
  type: string;
  params: string;
}

export interface DeviceInfo {
  name: string;
  suspended: boolean;
  liveTable: boolean;
  inactiveTable: boolean;
  openCount: number;
  eventNr: number;
  major: number;
  minor: number;
  readOnly: boolean;
  targetCount: number;
  deferredRemove: boolean;
}

export type UdevMode = "udev" | "library";

export interface RemoveOptions {
  /** Let libdevmapper retry a few times on EBUSY (a transient opener like blkid). */
  retry?: boolean;
  /** Ask the kernel to remove the device when its last opener closes it. */
  deferred?: boolean;
}

const DM_INFO_SIZE = 48; // 12 × int32 on x86_64

export class DeviceMapper {
  readonly udev: UdevMode;

  constructor() {
    const lib = libdm();
    installDmLog();
    // Without a running udev (containers, the test guest) libdevmapper must
    // create and remove /dev/mapper nodes itself instead of waiting for udev.
    const udevRunning = process.env.DM_DISABLE_UDEV !== "1" && existsSync("/run/udev/control");
    if (!udevRunning) lib.dm_udev_set_sync_support(0);
    this.udev = udevRunning && lib.dm_udev_get_sync_support() === 1 ? "udev" : "library";
  }

  libraryVersion(): string {
    const buf = Buffer.alloc(64);
    if (!libdm().dm_get_library_version(buf, buf.length)) return "unknown";
    return buf.toString("utf8", 0, buf.indexOf(0));
  }

  /** Kernel driver version; also proves the kernel has device-mapper at all. */
  driverVersion(): string {
    return this.run(DmTaskType.VERSION, "", "version", (t) => {
      const buf = Buffer.alloc(64);
      if (!libdm().dm_task_get_driver_version(t, buf, buf.length)) return "unknown";
      return buf.toString("utf8", 0, buf.indexOf(0));
    });
  }

  /** Device info, or null when no device of that name exists. */
  info(name: string): DeviceInfo | null {
    return this.run(DmTaskType.INFO, name, "info", (t) => readInfo(t, name));
  }

  table(name: string): Target[] {
    return this.run(DmTaskType.TABLE, name, "table", readTargets);
  }

  status(name: string): Target[] {
    return this.run(DmTaskType.STATUS, name, "status", readTargets);
  }

  thinPoolStatus(pool: string): ThinPoolStatus {
    const t = this.status(pool)[0];
    if (!t || t.type !== "thin-pool") throw new DmError("status", pool, 0, [], "not a thin-pool device");
    return parseThinPoolStatus(t.params);
  }

  thinStatus(name: string): ThinStatus {
    const t = this.status(name)[0];
    if (!t || t.type !== "thin") throw new DmError("status", name, 0, [], "not a thin device");
    return parseThinStatus(t.params);
  }

  /** Creates, loads and resumes a device (libdm does all three for CREATE with targets). */
  create(name: string, targets: Target[], opts: { readOnly?: boolean } = {}): void {
    this.run(
      DmTaskType.CREATE,
      name,
      "create",
      () => undefined,
      (t) => {
        addTargets(t, targets, name);
        if (opts.readOnly) throw new DmError("create", name, 0, [], "read-only create is not supported");
      },
      true,
    );
  }

  /** Loads a table into the inactive slot; it goes live on the next resume. */
  reload(name: string, targets: Target[]): void {
    this.run(DmTaskType.RELOAD, name, "reload", () => undefined, (t) => addTargets(t, targets, name));
  }

  /** Suspends IO; by default flushes outstanding IO first (what Commit needs). */
  suspend(name: string, opts: { noFlush?: boolean } = {}): void {
    this.run(DmTaskType.SUSPEND, name, "suspend", () => undefined, (t) => {
      if (opts.noFlush) libdm().dm_task_no_flush(t);
    });
  }

  resume(name: string): void {
    this.run(DmTaskType.RESUME, name, "resume", () => undefined, undefined, true);
  }

  remove(name: string, opts: RemoveOptions = {}): void {
    this.run(
      DmTaskType.REMOVE,
      name,
      "remove",
      () => undefined,
      (t) => {
        if (opts.retry) libdm().dm_task_retry_remove(t);
        if (opts.deferred) libdm().dm_task_deferred_remove(t);
      },
      true,
    );
  }

  rename(name: string, newName: string): void {
    const nn = cstr(newName);
    this.run(DmTaskType.RENAME, name, "rename", () => undefined, (t) => {
      if (!libdm().dm_task_set_newname(t, nn)) throw new DmError("rename", name, 0, [], `bad new name ${newName}`);
    }, true);
  }

  /** Sends a target message (sector 0) and returns the target's response, if any. */
  message(name: string, msg: string): string {
    const m = cstr(msg);
    return this.run(
      DmTaskType.TARGET_MSG,
      name,
      `message "${msg}"`,
      (t) => libdm().dm_task_get_message_response(t)?.toString() ?? "",
      (t) => {
        if (!libdm().dm_task_set_sector(t, 0n) || !libdm().dm_task_set_message(t, m)) {
          throw new DmError("message", name, 0, [], "cannot set message");
        }
      },
    );
  }

  /** Names of all device-mapper devices. */
  list(): string[] {
    return this.run(DmTaskType.LIST, "", "list", (t) => {
      const names: string[] = [];
      const p = libdm().dm_task_get_names(t);
      if (!p) return names;
      // struct dm_names { uint64_t dev; uint32_t next; char name[]; }
      let cur = Number(p);
      if (read.u64(cur as Pointer, 0) === 0n) return names; // empty list
      for (;;) {
        names.push(new CString((cur + 12) as Pointer).toString());
        const next = read.u32(cur as Pointer, 8);
        if (!next) break;
        cur += next;
      }
      return names;
    });
  }

  /** Releases libdm's cached state (open control fd). */
  release(): void {
    libdm().dm_lib_release();
  }

  private run<T>(
    type: DmTaskType,
    name: string,
    op: string,
    result: (task: NativePtr) => T,
    setup?: (task: NativePtr) => void,
    withCookie = false,
  ): T {
    const lib = libdm();
    const task = lib.dm_task_create(type);
    if (!task) {
      throw new DmError(op, name, 0, [], "dm_task_create failed");
    }
    const cookie = new Uint32Array(1);
    let cookieSet = false;
    try {
      const nameBuf = name ? cstr(name) : null;
      if (nameBuf && !lib.dm_task_set_name(task, nameBuf)) {
        throw new DmError(op, name, 0, [], "invalid device name");
      }
      setup?.(task);
      if (withCookie) {
        if (!lib.dm_task_set_cookie(task, cookie, this.udev === "udev" ? DM_UDEV_DISABLE_LIBRARY_FALLBACK : 0)) {
          throw new DmError(op, name, 0, [], "cannot set udev cookie");
        }
        cookieSet = true;
      }
      // The task keeps its ioctl's errno (set in C right after the ioctl, so
      // the log hook's JS cannot clobber it); read it before anything else runs.
      const { value: failedErrno, log } = withCapturedLog(() => (lib.dm_task_run(task) ? null : lib.dm_task_get_errno(task)));
      if (failedErrno !== null) throw new DmError(op, name, failedErrno, log);
      // Wait for udev (or let libdm create/remove nodes) before reporting success.
      if (cookieSet) {
        cookieSet = false;
        lib.dm_udev_wait(cookie[0]!);
      }
      return result(task);
    } finally {
      if (cookieSet) lib.dm_udev_wait(cookie[0]!);
      lib.dm_task_destroy(task);
    }
  }
}

function addTargets(task: NativePtr, targets: Target[], name: string): void {
  for (const t of targets) {
    if (!libdm().dm_task_add_target(task, t.start, t.length, cstr(t.type), cstr(t.params))) {
      throw new DmError("add target", name, 0, [], `${t.type} ${t.params}`);
    }
  }
}

function readInfo(task: NativePtr, name: string): DeviceInfo | null {
  const buf = new Int32Array(DM_INFO_SIZE / 4);
  if (!libdm().dm_task_get_info(task, buf)) throw new DmError("info", name, 0, [], "dm_task_get_info failed");
  if (!buf[0]) return null;
  return {
    name,
    suspended: buf[1] !== 0,
    liveTable: buf[2] !== 0,
    inactiveTable: buf[3] !== 0,
    openCount: buf[4]!,
    eventNr: buf[5]! >>> 0,
    major: buf[6]! >>> 0,
    minor: buf[7]! >>> 0,
    readOnly: buf[8] !== 0,
    targetCount: buf[9]!,
    deferredRemove: buf[10] !== 0,
  };
}

function readTargets(task: NativePtr): Target[] {
  const out: Target[] = [];
  const start = new BigUint64Array(1);
  const length = new BigUint64Array(1);
  const type = new BigUint64Array(1);
  const params = new BigUint64Array(1);
  let next: NativePtr | null = null;
  do {
    next = libdm().dm_get_next_target(task, next, start, length, type, params);
    if (type[0]) {
      out.push({
        start: start[0]!,
        length: length[0]!,
        type: new CString(Number(type[0]) as Pointer).toString(),
        params: params[0] ? new CString(Number(params[0]) as Pointer).toString() : "",
      });
    }
  } while (next);
  return out;
}

export { Errno };
