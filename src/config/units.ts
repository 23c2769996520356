/**
 * Size strings, parsed exactly as containerd parses `base_image_size`:
 * docker/go-units v0.4.0 `RAMInBytes` (binary multipliers, 1k = 1024).
 *
 * Accepted forms (the go-units regexp, verbatim):
 *
 *     ^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$
 *
 * - a decimal number: digits, optionally with a fraction ("32", "32.5");
 * - at most ONE space before the unit ("32 MiB");
 * - an optional unit letter k, m, g, t, p (any case): x1024, x1024^2 ... x1024^5;
 * - an optional "i" and then an optional "b" (any case), which change nothing:
 *   "10G" = "10GB" = "10GiB" = "10gib" = "10Gb" = 10 * 1024^3 bytes.
 *   Note "b" is bytes, never bits, and "GB" is binary here, like containerd.
 *
 * Arithmetic follows Go: the number is parsed as a float64, multiplied by the
 * unit in float64, and truncated toward zero ("32.3" = 32; "1.1k" = 1126).
 *
 * Rejected: "", leading or trailing blanks (" 32"), two spaces, signs ("-32",
 * "+32"), ".5k" (no leading digit), "32bm", "32m b", exponents ("1e3"),
 * unknown units ("32E", "32x"), and "1.2.3" (matches the regexp, then fails
 * strconv.ParseFloat, as in Go).
 *
 * One deliberate deviation: results of 2^63 bytes or more are an error here;
 * Go's int64(float64) conversion gives an undefined value for them.
 */
import { invalidArgument } from "../errors.ts";

export const KiB = 1024n;
export const MiB = 1024n * KiB;
export const GiB = 1024n * MiB;
export const TiB = 1024n * GiB;
export const PiB = 1024n * TiB;
export const EiB = 1024n * PiB;

/** The go-units v0.4.0 size regexp (size.go `sizeRegex`). */
const SIZE_RE = /^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$/;

const BINARY_MAP: Readonly<Record<string, number>> = {
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

const INT64_LIMIT = 2 ** 63;

/**
 * Parses a human-readable size the way go-units RAMInBytes does and returns
 * bytes. Throws an invalid_argument SnapshotterError ("invalid size: '...'").
 */
export function parseSize(s: string): bigint {
  const m = SIZE_RE.exec(s);
  if (m === null) throw invalidArgument(`invalid size: '${s}'`);
  const num = m[1] ?? "";
  // The regexp allows "1.2.3"; Go's strconv.ParseFloat then fails on it.
  if (num.indexOf(".") !== num.lastIndexOf(".")) {
    throw invalidArgument(`invalid size: '${s}': strconv.ParseFloat: parsing "${num}": invalid syntax`);
  }
  let size = Number(num);
  if (!Number.isFinite(size)) {
    throw invalidArgument(`invalid size: '${s}': strconv.ParseFloat: parsing "${num}": value out of range`);
  }
  const unit = (m[3] ?? "").toLowerCase();
  const mul = BINARY_MAP[unit];
  if (mul !== undefined) size *= mul;
  if (size >= INT64_LIMIT) throw invalidArgument(`invalid size: '${s}': larger than 2^63-1 bytes`);
  return BigInt(Math.trunc(size));
}

const UNITS: readonly (readonly [string, bigint])[] = [
  ["EiB", EiB],
  ["PiB", PiB],
  ["TiB", TiB],
  ["GiB", GiB],
  ["MiB", MiB],
  ["KiB", KiB],
];

/**
 * Formats bytes for humans with binary units: "512 B", "64 KiB", "10 GiB",
 * "1.5 GiB". The largest unit that is <= the value is used, and the quotient
 * is truncated (not rounded) to at most two decimals, so 1 TiB - 1 prints
 * "1023.99 GiB", never a misleading "1024 GiB", and 1 GiB + 1 prints "1 GiB".
 * Up to PiB the output is accepted by parseSize (round-trips exactly for
 * exact multiples of the unit shown).
 */
export function formatSize(bytes: bigint): string {
  if (bytes < 0n) return `-${formatSize(-bytes)}`;
  for (const [name, unit] of UNITS) {
    if (bytes < unit) continue;
    const whole = bytes / unit;
    const rest = bytes % unit;
    if (rest === 0n) return `${whole} ${name}`;
    const hundredths = (rest * 100n) / unit;
    if (hundredths === 0n) return `${whole} ${name}`;
    const frac = hundredths.toString().padStart(2, "0").replace(/0+$/, "");
    return `${whole}.${frac} ${name}`;
  }
  return `${bytes} B`;
}
