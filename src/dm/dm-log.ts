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
import { CString, JSCallback, FFIType, read, toArrayBuffer, type Pointer } from "bun:ffi";
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

/** Reads the C string at p; with `max`, at most that many bytes (it need not be NUL-terminated). */
export type ReadString = (p: bigint, max: number | undefined) => string;

/** Longest string a %.*s may ask for that we read (a log line, not a buffer dump). */
const MAX_PRECISION_READ = 4096;

const INT_CONVERSIONS = "diouxXc";
/** Conversions whose argument travels in an XMM register, not an integer slot. */
const FLOAT_CONVERSIONS = "fFeEgGaA";

/**
 * Formats a printf-style string with integer/pointer arguments (see above),
 * as C would: flags, width and precision (also `*`, which takes a slot),
 * length modifiers. A conversion we cannot place (`%n`, `%Lf`, anything
 * unknown) may take any number of slots, so formatting stops there and the
 * rest of the format is kept as it is, rather than reading later arguments
 * from the wrong slots.
 */
export function formatPrintf(fmt: string, args: readonly bigint[], readString: ReadString): string {
  let ai = 0;
  const next = (): bigint | undefined => (ai < args.length ? args[ai++] : undefined);
  const spec = /%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d*))?(hh|h|ll|l|q|z|j|t|L)?(.?)/y;
  let out = "";
  let i = 0;
  while (i < fmt.length) {
    const pct = fmt.indexOf("%", i);
    if (pct < 0) {
      out += fmt.slice(i);
      break;
    }
    out += fmt.slice(i, pct);
    spec.lastIndex = pct;
    const m = spec.exec(fmt)!;
    const [whole, flags = "", w, p, len, conv = ""] = m;
    i = pct + whole.length;
    if (conv === "%" && whole === "%%") {
      out += "%";
      continue;
    }
    const known = (conv !== "" && INT_CONVERSIONS.includes(conv)) || conv === "s" || conv === "p" || conv === "m";
    const isFloat = conv !== "" && FLOAT_CONVERSIONS.includes(conv) && len !== "L";
    if (!known && !isFloat) {
      out += fmt.slice(pct); // unknown: stop before it
      break;
    }
    // A `*` width/precision is an int in its own slot; negative precision means none.
    let width = w === undefined ? 0 : w === "*" ? Number(BigInt.asIntN(32, next() ?? 0n)) : Number(w);
    let left = flags.includes("-");
    if (width < 0) {
      left = true;
      width = -width;
    }
    let prec: number | undefined;
    if (p !== undefined) {
      prec = p === "*" ? Number(BigInt.asIntN(32, next() ?? 0n)) : Number(p || "0");
      if (prec < 0) prec = undefined;
    }
    let body: string;
    let zeroPad = flags.includes("0") && !left && prec === undefined;
    if (isFloat) {
      body = "?"; // not in an integer slot: takes none
      zeroPad = false;
    } else if (conv === "m") {
      body = "?"; // glibc's strerror(errno): takes no slot
    } else {
      const a = next();
      if (a === undefined) {
        body = "?";
      } else if (conv === "s") {
        if (a === 0n) body = prec === undefined || prec >= 6 ? "(null)" : "";
        else body = prec === undefined ? readString(a, undefined) : readString(a, Math.min(prec, MAX_PRECISION_READ));
        zeroPad = false;
      } else if (conv === "c") {
        body = String.fromCharCode(Number(a & 0xffn));
        zeroPad = false;
      } else if (conv === "p") {
        body = a === 0n ? "(nil)" : `0x${a.toString(16)}`;
        zeroPad = false;
      } else {
        body = formatInteger(a, conv, len, prec, flags);
      }
    }
    out += pad(body, width, left, zeroPad);
  }
  return out;
}

function formatInteger(a: bigint, conv: string, len: string | undefined, prec: number | undefined, flags: string): string {
  const bits = len === "hh" ? 8 : len === "h" ? 16 : len === undefined ? 32 : 64;
  const signed = conv === "d" || conv === "i";
  const v = signed ? BigInt.asIntN(bits, a) : BigInt.asUintN(bits, a);
  const neg = v < 0n;
  const mag = neg ? -v : v;
  const radix = conv === "o" ? 8 : conv === "x" || conv === "X" ? 16 : 10;
  // C prints no digits for a zero with precision 0 (libdm uses %.0d to elide major:minor).
  let digits = prec === 0 && mag === 0n ? "" : mag.toString(radix);
  if (conv === "X") digits = digits.toUpperCase();
  if (prec !== undefined) digits = digits.padStart(prec, "0");
  const sign = neg ? "-" : signed && flags.includes("+") ? "+" : signed && flags.includes(" ") ? " " : "";
  return sign + digits;
}

function pad(body: string, width: number, left: boolean, zero: boolean): string {
  if (body.length >= width) return body;
  if (left) return body.padEnd(width, " ");
  if (!zero) return body.padStart(width, " ");
  const sign = /^[-+ ]/.test(body) ? body[0]! : "";
  return sign + body.slice(sign.length).padStart(width - sign.length, "0");
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
        ? formatPrintf(fmt, rest, readCString)
        : fmt;
      if (captured.length < 32) captured.push(msg);
    },
    { args, returns: voidT },
  );
  libdm().dm_log_with_errno_init(callback.ptr);
}

/** A C string, or its first `max` bytes up to a NUL (a %.*s argument need not end in one). */
function readCString(p: bigint, max: number | undefined): string {
  const at = Number(p) as Pointer;
  if (max === undefined) return new CString(at).toString();
  let n = 0;
  while (n < max && read.u8(at, n) !== 0) n++;
  return n === 0 ? "" : Buffer.from(toArrayBuffer(at, 0, n)).toString("utf8");
}

/** Runs fn and returns what libdm logged meanwhile (warnings and errors). */
export function withCapturedLog<T>(fn: () => T): { value: T; log: string[] } {
  captured = [];
  const value = fn();
  const log = captured;
  captured = [];
  return { value, log };
}
