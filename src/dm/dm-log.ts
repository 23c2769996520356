/**
 * Captures libdevmapper's own log lines so that a failed task can say what
 * libdevmapper (and the kernel, via errno) said.
 *
 * The log hook is variadic: `void fn(int level, const char *file, int line,
 * int dm_errno_or_class, const char *fmt, ...)`. JSCallback cannot declare
 * varargs, but on x86_64 SysV the variadic integer/pointer arguments travel in
 * the same registers/stack slots as fixed ones, so we declare fourteen extra 64-bit
 * slots and format the message ourselves. Floating-point arguments (never used
 * in libdm's error paths) cannot be read this way and print as "?". On other
 * architectures we keep only the format string.
 */
import { CString, JSCallback, FFIType } from "bun:ffi";
import { arch } from "node:os";
import { libdm } from "./libdm.ts";

const { i32, ptr, u64, void: voidT } = FFIType;

/** libdm log levels (_LOG_ERR = 3 … _LOG_DEBUG = 7); higher bits are flags. */
const LOG_LEVEL_MASK = 7;
const LOG_WARN = 4;

const VARARG_SLOTS = 14;
const canReadVarargs = arch() === "x64";

let captured: string[] = [];
let callback: JSCallback | null = null;

/** Formats a printf-style string with integer/pointer arguments (see above). */
export function formatPrintf(fmt: string, args: readonly bigint[], readString: (p: bigint) => string): string {
  let ai = 0;
  const next = (): bigint | undefined => (ai < args.length ? args[ai++] : undefined);
  return fmt.replace(/%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d+))?(hh|h|ll|l|z|j|t|L)?([diouxXcspfgeEG%])/g, (_m, _f, w, p, len, conv: string) => {
    if (conv === "%") return "%";
    if (w === "*") next();
    if (p === "*") next();
    if ("fgeEG".includes(conv)) return "?";
    const a = next();
    if (a === undefined) return "?";
    // C prints nothing for %.0d of zero (libdm uses it to elide major:minor).
    if (p === "0" && a === 0n && "diuxXo".includes(conv)) return "";
    const bits = len === "l" || len === "ll" || len === "z" || len === "j" || len === "t" ? 64 : 32;
    switch (conv) {
      case "s": {
        if (a === 0n) return "(null)";
        const s = readString(a);
        return typeof p === "string" && p !== "*" ? s.slice(0, Number(p)) : s;
      }
      case "c":
        return String.fromCharCode(Number(a & 0xffn));
      case "p":
        return `0x${a.toString(16)}`;
      case "d":
      case "i":
        return BigInt.asIntN(bits, a).toString();
      case "u":
        return BigInt.asUintN(bits, a).toString();
      case "x":
        return BigInt.asUintN(bits, a).toString(16);
      case "X":
        return BigInt.asUintN(bits, a).toString(16).toUpperCase();
      case "o":
        return BigInt.asUintN(bits, a).toString(8);
      default:
        return "?";
    }
  });
}

/** Installs the hook once. Messages of warning level and above are kept. */
export function installDmLog(): void {
  if (callback) return;
  const args = [i32, ptr, i32, i32, ptr, ...Array<typeof u64>(VARARG_SLOTS).fill(u64)];
  callback = new JSCallback(
    (level: number, _file: unknown, _line: number, _errno: number, fmtPtr: unknown, ...rest: bigint[]) => {
      if ((level & LOG_LEVEL_MASK) > LOG_WARN || typeof fmtPtr !== "number" || fmtPtr === 0) return;
      const fmt = new CString(fmtPtr as never).toString();
      const msg = canReadVarargs
        ? formatPrintf(fmt, rest, (p) => new CString(Number(p) as never).toString())
        : fmt;
      if (captured.length < 32) captured.push(msg);
    },
    { args, returns: voidT },
  );
  libdm().dm_log_with_errno_init(callback.ptr);
}

/** Runs fn and returns what libdm logged meanwhile (warnings and errors). */
export function withCapturedLog<T>(fn: () => T): { value: T; log: string[] } {
  captured = [];
  const value = fn();
  const log = captured;
  captured = [];
  return { value, log };
}
