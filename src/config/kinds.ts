/**
 * Value kinds of config keys: how a TOML value is read (with the error a
 * wrong one gets), and how a value is written back as TOML (example file,
 * messages about overrides).
 */
import type { TomlTable, TomlValue } from "smol-toml";
import { GiB, KiB, MiB, parseSize, PiB, TiB } from "./units.ts";
import type { MinFree } from "./types.ts";

/** Thrown by readers; the caller turns it into a ConfigIssue with the key's location. */
export class ValueError extends Error {}

export interface Kind<T> {
  /** Reads a TOML value; throws ValueError. `line` gives the key's source line (socket_mode needs it). */
  read(v: TomlValue, line: () => string | null): T;
  /** The value as TOML source. */
  literal(v: T): string;
  /** A command-line flag's text as the TOML value it stands for (default: a string). */
  fromFlag?(s: string): TomlValue;
}

export function isTable(v: TomlValue | undefined): v is TomlTable {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Date) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === null || proto === Object.prototype;
}

export function typeName(v: TomlValue): string {
  if (typeof v === "string") return "a string";
  if (typeof v === "bigint") return "an integer";
  if (typeof v === "number") return "a float";
  if (typeof v === "boolean") return "a boolean";
  if (Array.isArray(v)) return "an array";
  if (isTable(v)) return "a table";
  return "a date-time";
}

/** Renders a TOML value for messages (short, TOML-like). */
export function render(v: TomlValue): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint" || typeof v === "number" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `[${v.map(render).join(", ")}]`;
  if (isTable(v)) return `{ ${Object.keys(v).map((k) => `${k} = ${render(v[k] as TomlValue)}`).join(", ")} }`;
  if (v instanceof Date) return v.toISOString(); // TomlDate: TOML's own form
  return String(v);
}

const SIZE_UNITS: readonly (readonly [string, bigint])[] = [
  ["P", PiB],
  ["T", TiB],
  ["G", GiB],
  ["M", MiB],
  ["K", KiB],
];

/** A size as go-units reads it back exactly: "10GB" when a unit divides it, else bytes ("1000"). */
export function sizeText(bytes: bigint): string {
  for (const [unit, n] of SIZE_UNITS) {
    if (bytes > 0n && bytes % n === 0n) return `${bytes / n}${unit}B`;
  }
  return String(bytes);
}

/** A size as TOML: a string ("10GB") when a unit divides it, else an integer of bytes. */
export function sizeLiteral(bytes: bigint): string {
  const text = sizeText(bytes);
  return /^\d+$/.test(text) ? text : `"${text}"`;
}

const integerFlag = (s: string): TomlValue => (/^-?\d+$/.test(s) ? BigInt(s) : s);

export const string: Kind<string> = {
  read(v) {
    if (typeof v !== "string") throw new ValueError(`must be a string, not ${typeName(v)}`);
    return v;
  },
  literal: (v) => JSON.stringify(v),
};

export const boolean: Kind<boolean> = {
  read(v) {
    if (typeof v !== "boolean") throw new ValueError(`must be true or false, not ${typeName(v)}`);
    return v;
  },
  literal: (v) => String(v),
  fromFlag: (s) => (s === "true" ? true : s === "false" ? false : s),
};

export function oneOf<T extends string>(allowed: readonly T[]): Kind<T> {
  return {
    read(v, line) {
      const s = string.read(v, line);
      const found = allowed.find((a) => a === s);
      if (found === undefined) throw new ValueError(`must be one of ${allowed.map((a) => `"${a}"`).join(", ")}`);
      return found;
    },
    literal: (v) => JSON.stringify(v),
  };
}

/** A size: a go-units string ("10GB", "512MiB") or an integer number of bytes. */
export const size: Kind<bigint> = {
  read(v) {
    if (typeof v === "bigint") {
      if (v < 0n) throw new ValueError("must not be negative");
      return v;
    }
    if (typeof v === "string") {
      try {
        return parseSize(v);
      } catch (e) {
        throw new ValueError(`${e instanceof Error ? e.message : String(e)} (examples: "10GB", "512MiB", "64k", 1048576)`);
      }
    }
    if (typeof v === "number") {
      throw new ValueError(`must be an integer number of bytes or a size string such as "1.5GB", not a float`);
    }
    throw new ValueError(`must be a size string such as "10GB" or an integer number of bytes, not ${typeName(v)}`);
  },
  literal: sizeLiteral,
};

/** A size, or "" for none (null). */
export const optionalSize: Kind<bigint | null> = {
  read: (v, line) => (v === "" ? null : size.read(v, line)),
  literal: (v) => (v === null ? '""' : sizeLiteral(v)),
};

/** A non-negative integer. */
export const count: Kind<bigint> = {
  read(v) {
    if (typeof v !== "bigint") throw new ValueError(`must be an integer, not ${typeName(v)}`);
    if (v < 0n) throw new ValueError("must not be negative");
    return v;
  },
  literal: (v) => String(v),
  fromFlag: integerFlag,
};

/** A small non-negative integer (a JS number). */
export const smallCount: Kind<number> = {
  read: (v, line) => Number(count.read(v, line)),
  literal: (v) => String(v),
  fromFlag: integerFlag,
};

/**
 * Permission bits: a string of octal digits ("0660", "660", "0o660"), or a
 * TOML integer written in octal (0o660). Decimal integers are refused: 660
 * would mean 0o1224 and 400 would silently mean 0o620.
 */
export const octalMode: Kind<number> = {
  read(v, line) {
    if (typeof v === "string") {
      const m = /^(?:0o)?([0-7]{1,4})$/.exec(v.trim());
      if (m === null) throw new ValueError(`must be octal permission bits such as "0660"`);
      return parseInt(m[1] ?? "", 8);
    }
    if (typeof v === "bigint") {
      // smol-toml gives the number only: the source text says how it was written.
      const m = /=\s*([-+]?[0-9A-Za-z_]+)/.exec(line() ?? "");
      if (m !== null && !(m[1] ?? "").startsWith("0o")) {
        throw new ValueError(`integers must be written in octal (0o660), or use a string ("0660")`);
      }
      if (v < 0n || v > 0o777n) throw new ValueError("must be permission bits between 0 and 0o777");
      return Number(v);
    }
    throw new ValueError(`must be octal permission bits such as "0660" or 0o660, not ${typeName(v)}`);
  },
  literal: (v) => `"${v.toString(8).padStart(4, "0")}"`,
};

/** A group name or a numeric gid; "" means none (null). */
export const group: Kind<string | null> = {
  read(v, line) {
    if (typeof v === "bigint") {
      if (v < 0n || v > 0xfffffffen) throw new ValueError("must be a group name or a gid (0..4294967294)");
      return v.toString();
    }
    const g = string.read(v, line);
    return g === "" ? null : g;
  },
  literal: (v) => JSON.stringify(v ?? ""),
};

const PERCENT_RE = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/;

/** A size, or a percentage ("10%") of the pool's data size. */
export const sizeOrPercent: Kind<MinFree> = {
  read(v, line) {
    if (typeof v === "string") {
      const m = PERCENT_RE.exec(v);
      if (m !== null) return { bytes: 0n, percent: Number(m[1]) };
    }
    return { bytes: size.read(v, line), percent: null };
  },
  literal: (v) => (v.percent !== null ? `"${v.percent}%"` : sizeLiteral(v.bytes)),
};
