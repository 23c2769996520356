/**
 * A line-level view of a TOML document, for editing an operator's file in
 * place: which line starts which table, and on which line each key of a table
 * is set. Nothing is reformatted; lines keep their own line endings (a file may
 * mix "\n" and "\r\n"). Values are only skipped over (strings, multi-line
 * strings, arrays and inline tables spanning lines), never interpreted:
 * smol-toml parses the document for values.
 */

/** A TOML document as lines, each with its own line ending ("" for a last line without one). */
export interface Lines {
  text: string[];
  eol: string[];
}

export function splitLines(doc: string): Lines {
  const text: string[] = [];
  const eol: string[] = [];
  const re = /\r?\n/g;
  let at = 0;
  for (let m = re.exec(doc); m !== null; m = re.exec(doc)) {
    text.push(doc.slice(at, m.index));
    eol.push(m[0]);
    at = m.index + m[0].length;
  }
  if (at < doc.length) {
    text.push(doc.slice(at));
    eol.push("");
  }
  return { text, eol };
}

export function joinLines(l: Lines): string {
  let s = "";
  for (let i = 0; i < l.text.length; i++) s += l.text[i]! + l.eol[i]!;
  return s;
}

/** A key set on one statement line. `path` is the full path: the table's, then the (dotted) key's. */
export interface KeyLine {
  path: string[];
  /** The table whose section the line is in ([] for the root table). */
  table: string[];
  line: number;
  /** The last line of the value (> line for a multi-line string, array or inline table). */
  endLine: number;
  /** The line's text up to the "=" (indentation and the key as written). */
  keyText: string;
}

/** A `[table]` or `[[array]]` header; the root table is not one. */
export interface Header {
  path: string[];
  array: boolean;
  line: number;
}

export interface TomlLayout {
  headers: Header[];
  keys: KeyLine[];
}

export class TomlLayoutError extends Error {
  constructor(message: string, readonly line: number) {
    super(`line ${line + 1}: ${message}`);
    this.name = "TomlLayoutError";
  }
}

const BARE = /[A-Za-z0-9_-]/;

/** Reads a dotted key at s[i..]; returns its segments and the index after it (blanks skipped). */
function readKey(s: string, i: number, line: number): { path: string[]; end: number } {
  const path: string[] = [];
  for (;;) {
    while (s[i] === " " || s[i] === "\t") i++;
    const c = s[i];
    if (c === '"') {
      let j = i + 1;
      while (j < s.length && s[j] !== '"') j += s[j] === "\\" ? 2 : 1;
      if (j >= s.length) throw new TomlLayoutError("unterminated quoted key", line);
      path.push(JSON.parse(s.slice(i, j + 1)) as string);
      i = j + 1;
    } else if (c === "'") {
      const j = s.indexOf("'", i + 1);
      if (j < 0) throw new TomlLayoutError("unterminated quoted key", line);
      path.push(s.slice(i + 1, j));
      i = j + 1;
    } else {
      let j = i;
      while (j < s.length && BARE.test(s[j]!)) j++;
      if (j === i) throw new TomlLayoutError(`expected a key at column ${i + 1}`, line);
      path.push(s.slice(i, j));
      i = j;
    }
    while (s[i] === " " || s[i] === "\t") i++;
    if (s[i] !== ".") return { path, end: i };
    i++;
  }
}

type State = "value" | "mlBasic" | "mlLiteral";

/**
 * Scans a value from s[i..] (and following lines when it spans them), tracking
 * strings, comments and bracket depth. Returns the line index the value ends on.
 */
function skipValue(lines: string[], n: number, i: number): number {
  let state: State = "value";
  let depth = 0;
  for (;;) {
    const s = lines[n]!;
    while (i < s.length) {
      if (state === "mlBasic") {
        if (s[i] === "\\") i += 2;
        else if (s.startsWith('"""', i)) {
          i += 3;
          while (s[i] === '"') i++; // up to two quotes may close the string's content
          state = "value";
        } else i++;
        continue;
      }
      if (state === "mlLiteral") {
        if (s.startsWith("'''", i)) {
          i += 3;
          while (s[i] === "'") i++;
          state = "value";
        } else i++;
        continue;
      }
      const c = s[i]!;
      if (s.startsWith('"""', i)) {
        state = "mlBasic";
        i += 3;
      } else if (s.startsWith("'''", i)) {
        state = "mlLiteral";
        i += 3;
      } else if (c === '"') {
        let j = i + 1;
        while (j < s.length && s[j] !== '"') j += s[j] === "\\" ? 2 : 1;
        i = j + 1;
      } else if (c === "'") {
        const j = s.indexOf("'", i + 1);
        i = j < 0 ? s.length : j + 1;
      } else if (c === "#") {
        i = s.length;
      } else {
        if (c === "[" || c === "{") depth++;
        else if (c === "]" || c === "}") depth--;
        i++;
      }
    }
    if (state === "value" && depth <= 0) return n;
    n++;
    i = 0;
    if (n >= lines.length) throw new TomlLayoutError("value not closed before the end of the file", n - 1);
  }
}

/** Where the document's tables and keys are. Throws TomlLayoutError on a line it cannot read. */
export function layout(lines: string[]): TomlLayout {
  const headers: Header[] = [];
  const keys: KeyLine[] = [];
  let table: string[] = [];
  for (let n = 0; n < lines.length; n++) {
    const s = lines[n]!;
    const t = s.trimStart();
    if (t === "" || t.startsWith("#")) continue;
    if (t.startsWith("[")) {
      const array = t.startsWith("[[");
      const start = s.length - t.length + (array ? 2 : 1);
      const k = readKey(s, start, n);
      const close = array ? "]]" : "]";
      if (!s.startsWith(close, k.end)) throw new TomlLayoutError(`expected "${close}" after a table name`, n);
      headers.push({ path: k.path, array, line: n });
      table = k.path;
      continue;
    }
    const k = readKey(s, s.length - t.length, n);
    if (s[k.end] !== "=") throw new TomlLayoutError('expected "=" after a key', n);
    const endLine = skipValue(lines, n, k.end + 1);
    keys.push({ path: [...table, ...k.path], table, line: n, endLine, keyText: s.slice(0, k.end) });
    n = endLine;
  }
  return { headers, keys };
}

/** A key or table name as TOML writes it: bare when it can be, else a basic string. */
export function tomlKey(path: readonly string[]): string {
  return path.map((p) => (/^[A-Za-z0-9_-]+$/.test(p) ? p : JSON.stringify(p))).join(".");
}

export const samePath = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && a.every((x, i) => x === b[i]);

export const hasPrefix = (a: readonly string[], prefix: readonly string[]): boolean =>
  a.length >= prefix.length && prefix.every((x, i) => x === a[i]);
