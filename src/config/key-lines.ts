/**
 * Where keys are in a TOML text. smol-toml reports no positions, so this asks
 * smol-toml itself: it parses ever longer prefixes of the text, and a key's
 * line is where the construct that first makes it appear starts (prefixes
 * that end inside a multi-line string or array do not parse and are skipped).
 * No TOML syntax is re-implemented here. Work is quadratic in the lines, so
 * it runs only when a line is asked for (an error, or an integer socket_mode's
 * source): a valid config is parsed once.
 */
import { parse } from "smol-toml";
import type { TomlValue } from "smol-toml";
import { isTable } from "./kinds.ts";

const pathId = (path: readonly string[]): string => JSON.stringify(path);

function collect(v: TomlValue, path: string[], out: Set<string>): void {
  if (Array.isArray(v)) {
    for (const x of v) collect(x, path, out); // arrays of tables: keys of any element
    return;
  }
  if (!isTable(v)) return;
  for (const k of Object.keys(v)) {
    const p = [...path, k];
    out.add(pathId(p));
    collect(v[k] as TomlValue, p, out);
  }
}

export class KeyLines {
  private found: Map<string, number> | null = null;
  readonly lines: readonly string[];

  constructor(readonly text: string) {
    this.lines = text.split(/\r?\n/);
  }

  /**
   * 1-based line that defines `path` (table names then key), or opens it as a
   * table; for a table only opened implicitly, the line of its first child.
   * null when the text does not define it.
   */
  line(path: readonly string[]): number | null {
    this.found ??= this.scan();
    return this.found.get(pathId(path)) ?? null;
  }

  /** The source line of `path`, or null. */
  lineText(path: readonly string[]): string | null {
    const n = this.line(path);
    return n === null ? null : (this.lines[n - 1] ?? null);
  }

  private scan(): Map<string, number> {
    const found = new Map<string, number>();
    let lastParsed = 0; // lines in the longest prefix that parsed so far
    for (let n = 1; n <= this.lines.length; n++) {
      let doc: TomlValue;
      try {
        doc = parse(this.lines.slice(0, n).join("\n"), { integersAsBigInt: true });
      } catch {
        continue;
      }
      const keys = new Set<string>();
      collect(doc, [], keys);
      for (const k of keys) if (!found.has(k)) found.set(k, lastParsed + 1);
      lastParsed = n;
    }
    return found;
  }
}

/** One-shot form of KeyLines.line. */
export function findKeyLine(text: string, path: readonly string[]): number | null {
  return new KeyLines(text).line(path);
}
