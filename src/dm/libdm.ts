/**
 * Raw bun:ffi symbols of libdevmapper (the dm_task_* API). Nothing here knows
 * about thin pools; src/dm/device-mapper.ts wraps these in typed calls.
 * The library is opened lazily so that a host without libdevmapper can still
 * run `--help`, config checks and unit tests.
 */
import { dlopen, FFIType, suffix } from "bun:ffi";
import { readFileSync } from "node:fs";

const { ptr, i32, u32, u64, u16, void: voidT, cstring } = FFIType;

export const LIBDM_SONAME = "libdevmapper.so.1.02.1";

/** Task types from libdevmapper.h (enum, stable ABI). */
export const DmTaskType = {
  CREATE: 0,
  RELOAD: 1,
  REMOVE: 2,
  SUSPEND: 4,
  RESUME: 5,
  INFO: 6,
  RENAME: 8,
  VERSION: 9,
  STATUS: 10,
  TABLE: 11,
  LIST: 13,
  TARGET_MSG: 17,
} as const;
export type DmTaskType = (typeof DmTaskType)[keyof typeof DmTaskType];

/** udev flags for dm_task_set_cookie (libdevmapper.h DM_UDEV_*). */
export const DM_UDEV_DISABLE_LIBRARY_FALLBACK = 0x0020;

const symbols = {
  dm_task_create: { args: [i32], returns: ptr },
  dm_task_destroy: { args: [ptr], returns: voidT },
  dm_task_set_name: { args: [ptr, ptr], returns: i32 },
  dm_task_set_newname: { args: [ptr, ptr], returns: i32 },
  dm_task_set_sector: { args: [ptr, u64], returns: i32 },
  dm_task_set_message: { args: [ptr, ptr], returns: i32 },
  dm_task_add_target: { args: [ptr, u64, u64, ptr, ptr], returns: i32 },
  dm_task_run: { args: [ptr], returns: i32 },
  dm_task_get_errno: { args: [ptr], returns: i32 },
  dm_task_get_info: { args: [ptr, ptr], returns: i32 },
  dm_task_get_driver_version: { args: [ptr, ptr, u64], returns: i32 },
  dm_task_get_message_response: { args: [ptr], returns: cstring },
  dm_get_next_target: { args: [ptr, ptr, ptr, ptr, ptr, ptr], returns: ptr },
  dm_task_set_cookie: { args: [ptr, ptr, u16], returns: i32 },
  dm_task_retry_remove: { args: [ptr], returns: i32 },
  dm_task_deferred_remove: { args: [ptr], returns: i32 },
  dm_task_no_open_count: { args: [ptr], returns: i32 },
  dm_task_no_flush: { args: [ptr], returns: i32 },
  dm_task_skip_lockfs: { args: [ptr], returns: i32 },
  dm_task_query_inactive_table: { args: [ptr], returns: i32 },
  dm_task_get_names: { args: [ptr], returns: ptr },
  dm_udev_wait: { args: [u32], returns: i32 },
  dm_udev_set_sync_support: { args: [i32], returns: voidT },
  dm_udev_get_sync_support: { args: [], returns: i32 },
  dm_get_library_version: { args: [ptr, u64], returns: i32 },
  dm_log_with_errno_init: { args: [ptr], returns: voidT },
  dm_lib_release: { args: [], returns: voidT },
} as const;

export type LibDm = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

let lib: LibDm | null = null;
let loadError: Error | null = null;
let pathOverride: string | null = null;

/**
 * Loads libdevmapper from this file instead of by name; must come before the
 * first call. A worker thread uses it to get a private instance of the library
 * (see kernel-workers.ts).
 */
export function useLibdmFile(path: string): void {
  if (lib) throw new Error("libdevmapper is already loaded");
  pathOverride = path;
}

/** The file the loaded libdevmapper was mapped from (after libdm()). */
export function loadedLibdmFile(): string {
  libdm();
  const line = readFileSync("/proc/self/maps", "utf8")
    .split("\n")
    .find((l) => l.includes("/libdevmapper.so"));
  const path = line?.slice(line.indexOf("/"));
  if (!path) throw new Error("libdevmapper is loaded but not found in /proc/self/maps");
  return path;
}

/** Opens libdevmapper once; throws a helpful error when it is not installed. */
export function libdm(): LibDm {
  if (lib) return lib;
  if (loadError) throw loadError;
  const candidates = pathOverride ? [pathOverride] : [LIBDM_SONAME, `/lib/x86_64-linux-gnu/${LIBDM_SONAME}`, `libdevmapper.${suffix}`];
  for (const name of candidates) {
    try {
      lib = dlopen(name, symbols).symbols;
      return lib;
    } catch {
      // try the next name
    }
  }
  loadError = new Error(
    `cannot load ${LIBDM_SONAME}: install it (Debian/Ubuntu: apt-get install libdevmapper1.02.1; ` +
      `Fedora: dnf install device-mapper-libs)`,
  );
  throw loadError;
}

/** NUL-terminated copy of a JS string for a `const char *` argument. */
export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

/** A non-null native pointer as bun:ffi hands it back. */
export type NativePtr = NonNullable<ReturnType<LibDm["dm_task_create"]>>;
