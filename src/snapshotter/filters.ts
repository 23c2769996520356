/**
 * containerd's filter language for snapshot Walk/List, as pure logic (no I/O).
 *
 * A port of containerd v1.6 filters/{scanner,parser,quote,filter}.go and the
 * snapshot adaptor metadata/adaptors.go (adaptSnapshot, checkMap):
 *
 *   filter    := selector ("," selector)*          -- AND
 *   selector  := fieldpath [operator value]        -- no operator: presence
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   operator  := "==" | "!=" | "~="
 *   value     := quoted | run of graphic, non-space, non-"," runes
 *   quoted    := "..." (Go escapes); for "~=" also /.../ and |...|
 *
 * Several filter strings are OR'ed; [] and "" match everything.
 *
 * Semantics taken from the reference, not from intuition:
 *  - "name", "parent" and "kind" are always present (adaptSnapshot returns
 *    true for them even when the parent is ""); extra path parts after them are
 *    ignored ("name.x" is "name"). "labels.<k1>.<k2>" looks up the label whose
 *    key is "<k1>.<k2>" (the parts joined with "."). Any other field is absent.
 *  - "present" = the field is present; "==" = present and equal;
 *    "!=" = value != operand, where an absent field has the value "" (so a
 *    missing label matches `labels.x!=y` but not `labels.x!=""`); "~=" matches
 *    the regexp against the value, "" for absent fields.
 *
 * Regexps. containerd compiles "~=" operands with Go's regexp (RE2 syntax,
 * linear-time matching). A JS RegExp backtracks: `(a+)+$` against a long value
 * would block the event loop, and JS syntax differs from RE2 anyway. So this
 * file carries a small RE2 implementation: a parser that follows Go 1.19's
 * regexp/syntax/parse.go (same accepted syntax, same rejections: no
 * backreferences, no lookarounds, no possessive/stacked repeats, counts up to
 * 1000), and a Pike-VM matcher that runs in O(len(value) * len(program)).
 * JS RegExps are used only to test ONE code point against a character class
 * (Unicode properties, case folding), which cannot backtrack.
 * Deviations from the reference:
 *  - Go logs and treats an invalid regexp as "no match" (filters/filter.go);
 *    here it is an invalid_argument error at parse time.
 *  - Patterns longer than 1024 UTF-16 code units, or compiling to more than
 *    10000 VM instructions (e.g. `[a-z]{1000}` repeated many times), are
 *    rejected to bound the per-row matching cost.
 *  - Unicode tables are the JS engine's, not Go 1.19's (Unicode 13), so
 *    \p{...} may differ for code points assigned since.
 * Compiled regexps are cached per parse (Filter.regexps, keyed by pattern).
 *
 * Scanner rules worth knowing (all from containerd): white space may precede a
 * field, an operator or a value, but not a "," or "." nor end the string; an
 * unquoted value stops at "," or white space; after an operator a "." is a
 * separator, so a regexp starting with "." must be quoted (`name~=".*x"`);
 * /- and |-quoted values exist only for "~="; inside quotes only Go escapes
 * (\a\b\f\n\r\t\v\\, the quote, octal, \x, \u, \U) are legal, so `/\d/` is an
 * error and is written `"\\d"`. Error positions are UTF-16 offsets (Go: bytes).
 */
import { invalidArgument } from "../errors.ts";
import type { Info, Kind } from "./types.ts";

// ---------------------------------------------------------------------------
// AST

export type Op = "present" | "==" | "!=" | "~=";

export interface Selector {
  readonly fieldpath: readonly string[];
  readonly op: Op;
  /** Unquoted operand; "" for "present". */
  readonly value: string;
}

export interface Filter {
  /** OR of AND-lists. An empty AND-list is true; an empty anyOf is false. */
  readonly anyOf: readonly (readonly Selector[])[];
  /** Compiled "~=" operands, keyed by pattern. */
  readonly regexps: ReadonlyMap<string, Re2>;
}

export type FilterTarget = Pick<Info, "name" | "parent" | "kind" | "labels">;

export const MAX_REGEXP_LENGTH = 1024;
export const MAX_REGEXP_PROGRAM = 10000;

// ---------------------------------------------------------------------------
// Scanner: filters/scanner.go. Positions are UTF-16 offsets (Go: byte offsets).

const tokenEOF = -1;
const tokenQuoted = -2;
const tokenValue = -3;
const tokenField = -4;
const tokenSeparator = -5;
const tokenOperator = -6;
const tokenIllegal = -7;

const WHITE_SPACE = /^\p{White_Space}$/u; // == Go unicode.IsSpace
const GRAPHIC = /^[\p{L}\p{M}\p{N}\p{P}\p{S}\p{Zs}]$/u; // == Go unicode.IsGraphic

function isSpace(r: number): boolean {
  return r >= 0 && WHITE_SPACE.test(String.fromCodePoint(r));
}
function isFieldRune(r: number): boolean {
  return r === 0x5f || (r >= 0x41 && r <= 0x5a) || (r >= 0x61 && r <= 0x7a) || (r >= 0x30 && r <= 0x39);
}
function isOperatorRune(r: number): boolean {
  return r === 0x3d || r === 0x21 || r === 0x7e; // = ! ~
}
function isQuoteRune(r: number): boolean {
  return r === 0x2f || r === 0x7c || r === 0x22; // / | "
}
function isSeparatorRune(r: number): boolean {
  return r === 0x2c || r === 0x2e; // , .
}
function isValueRune(r: number): boolean {
  // letter|digit|number|punct are all graphic in Go.
  return r >= 0 && r !== 0x2c && !isSpace(r) && GRAPHIC.test(String.fromCodePoint(r));
}
function digitVal(r: number): number {
  if (r >= 0x30 && r <= 0x39) return r - 0x30;
  if (r >= 0x61 && r <= 0x66) return r - 0x61 + 10;
  if (r >= 0x41 && r <= 0x46) return r - 0x41 + 10;
  return 16;
}

class Scanner {
  pos = 0;
  ppos = 0;
  value = false;
  err = "";
  constructor(readonly input: string) {}

  next(): number {
    if (this.pos >= this.input.length) return tokenEOF;
    this.pos = this.ppos;
    if (this.ppos >= this.input.length) return tokenEOF;
    const r = this.input.codePointAt(this.ppos) ?? 0;
    this.ppos += r > 0xffff ? 2 : 1;
    // Go: utf8.RuneError with width > 0 is "rune error", even a literal U+FFFD.
    // A lone surrogate is the JS analogue of an invalid UTF-8 sequence.
    if (r === 0xfffd || (r >= 0xd800 && r <= 0xdfff)) {
      this.error("rune error");
      return tokenIllegal;
    }
    if (r === 0) {
      this.error("unexpected null");
      return tokenIllegal;
    }
    return r;
  }

  peek(): number {
    const pos = this.pos;
    const ppos = this.ppos;
    const ch = this.next();
    this.pos = pos;
    this.ppos = ppos;
    return ch;
  }

  scan(): [pos: number, tok: number, text: string] {
    let ch = this.next();
    let pos = this.pos;
    for (;;) {
      if (ch === tokenEOF || ch === tokenIllegal) break;
      if (isQuoteRune(ch)) {
        if (!this.scanQuoted(ch)) return [pos, tokenIllegal, this.input.slice(pos, this.ppos)];
        return [pos, tokenQuoted, this.input.slice(pos, this.ppos)];
      }
      if (isSeparatorRune(ch)) {
        this.value = false;
        return [pos, tokenSeparator, this.input.slice(pos, this.ppos)];
      }
      if (isOperatorRune(ch)) {
        this.scanOperator();
        this.value = true;
        return [pos, tokenOperator, this.input.slice(pos, this.ppos)];
      }
      if (isSpace(ch)) {
        ch = this.next();
        pos = this.pos;
        continue;
      }
      if (this.value) {
        this.scanValue();
        this.value = false;
        return [pos, tokenValue, this.input.slice(pos, this.ppos)];
      }
      if (isFieldRune(ch)) {
        this.scanField();
        return [pos, tokenField, this.input.slice(pos, this.ppos)];
      }
      break;
    }
    return [this.pos, ch, ""];
  }

  private scanField(): void {
    while (isFieldRune(this.peek())) this.next();
  }
  private scanOperator(): void {
    while (isOperatorRune(this.peek())) this.next();
  }
  private scanValue(): void {
    while (isValueRune(this.peek())) this.next();
  }

  private scanQuoted(quote: number): boolean {
    let illegal = false;
    let ch = this.next();
    while (ch !== quote) {
      if (ch === 0x0a || ch < 0) {
        this.error("quoted literal not terminated");
        return false;
      }
      if (ch === 0x5c) {
        let legal: boolean;
        [ch, legal] = this.scanEscape(quote);
        if (!legal) illegal = true;
      } else {
        ch = this.next();
      }
    }
    return !illegal;
  }

  private scanEscape(quote: number): [number, boolean] {
    const ch = this.next();
    switch (ch) {
      case 0x61: case 0x62: case 0x66: case 0x6e: case 0x72: case 0x74: case 0x76: case 0x5c: // a b f n r t v \
        return [this.next(), true];
      case 0x30: case 0x31: case 0x32: case 0x33: case 0x34: case 0x35: case 0x36: case 0x37:
        return this.scanDigits(ch, 8, 3);
      case 0x78: // x
        return this.scanDigits(this.next(), 16, 2);
      case 0x75: // u
        return this.scanDigits(this.next(), 16, 4);
      case 0x55: // U
        return this.scanDigits(this.next(), 16, 8);
      default:
        if (ch === quote) return [this.next(), true];
        this.error("illegal escape sequence");
        return [ch, false];
    }
  }

  private scanDigits(ch: number, base: number, n: number): [number, boolean] {
    while (n > 0 && digitVal(ch) < base) {
      ch = this.next();
      n--;
    }
    if (n > 0) {
      this.error("illegal numeric escape sequence");
      return [ch, false];
    }
    return [ch, true];
  }

  private error(msg: string): void {
    if (this.err === "") this.err = msg;
  }
}

// ---------------------------------------------------------------------------
// Unquoting: filters/quote.go. Works on bytes like Go; \x and octal escapes
// can produce bytes that are not UTF-8: those are kept as lone surrogates
// U+DC80..U+DCFF ("surrogateescape"), so the value never equals any
// well-formed string, exactly as the Go byte string never equals valid UTF-8.

function encodeUtf8(cp: number, out: number[]): void {
  if (cp < 0x80) out.push(cp);
  else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
  else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
}

function decodeUtf8Escaped(b: readonly number[]): string {
  let out = "";
  let i = 0;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => {
    const v = b[k];
    return v !== undefined && v >= lo && v <= hi;
  };
  while (i < b.length) {
    const c = b[i] ?? 0;
    let n = 0;
    if (c < 0x80) n = 1;
    else if (c >= 0xc2 && c <= 0xdf) n = cont(i + 1) ? 2 : 0;
    else if (c >= 0xe0 && c <= 0xef) {
      const lo = c === 0xe0 ? 0xa0 : 0x80;
      const hi = c === 0xed ? 0x9f : 0xbf;
      n = cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
    } else if (c >= 0xf0 && c <= 0xf4) {
      const lo = c === 0xf0 ? 0x90 : 0x80;
      const hi = c === 0xf4 ? 0x8f : 0xbf;
      n = cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    }
    if (n === 0) {
      out += String.fromCharCode(0xdc00 + c);
      i++;
      continue;
    }
    let cp = n === 1 ? c : c & (0xff >> (n + 1));
    for (let k = 1; k < n; k++) cp = (cp << 6) | ((b[i + k] ?? 0) & 0x3f);
    out += String.fromCodePoint(cp);
    i += n;
  }
  return out;
}

class QuoteSyntaxError extends Error {}

function unhex(c: number): number {
  const v = digitVal(c);
  return v < 16 ? v : -1;
}

/** quote.go unquote() for "-, /- and |-quoted literals. */
function unquote(s: string): string {
  if (s.length < 2) throw new QuoteSyntaxError("quote syntax error");
  const quote = s.charCodeAt(0);
  if (quote !== s.charCodeAt(s.length - 1)) throw new QuoteSyntaxError("quote syntax error");
  if (quote !== 0x22 && quote !== 0x7c && quote !== 0x2f) throw new QuoteSyntaxError("quote syntax error");
  const body = s.slice(1, -1);
  if (body.includes("\n")) throw new QuoteSyntaxError("quote syntax error");
  if (!body.includes("\\") && !body.includes(String.fromCharCode(quote))) return body;

  const bytes: number[] = [];
  let i = 0;
  const err = (): never => {
    throw new QuoteSyntaxError("quote syntax error");
  };
  while (i < body.length) {
    const c = body.codePointAt(i) ?? 0;
    if (c === quote) err();
    if (c !== 0x5c) {
      encodeUtf8(c, bytes);
      i += c > 0xffff ? 2 : 1;
      continue;
    }
    if (i + 1 >= body.length) err();
    const e = body.charCodeAt(i + 1);
    i += 2;
    switch (e) {
      case 0x61: bytes.push(0x07); break;
      case 0x62: bytes.push(0x08); break;
      case 0x66: bytes.push(0x0c); break;
      case 0x6e: bytes.push(0x0a); break;
      case 0x72: bytes.push(0x0d); break;
      case 0x74: bytes.push(0x09); break;
      case 0x76: bytes.push(0x0b); break;
      case 0x78: case 0x75: case 0x55: { // x u U
        const n = e === 0x78 ? 2 : e === 0x75 ? 4 : 8;
        if (body.length - i < n) err();
        let v = 0;
        for (let j = 0; j < n; j++) {
          const x = unhex(body.charCodeAt(i + j));
          if (x < 0) err();
          v = v * 16 + x;
        }
        i += n;
        if (e === 0x78) {
          bytes.push(v); // a single byte, possibly not UTF-8
          break;
        }
        if (v > 0x10ffff) err();
        // utf8.EncodeRune writes U+FFFD for surrogate halves.
        encodeUtf8(v >= 0xd800 && v <= 0xdfff ? 0xfffd : v, bytes);
        break;
      }
      case 0x30: case 0x31: case 0x32: case 0x33: case 0x34: case 0x35: case 0x36: case 0x37: {
        let v = e - 0x30;
        if (body.length - i < 2) err();
        for (let j = 0; j < 2; j++) {
          const x = body.charCodeAt(i + j) - 0x30;
          if (x < 0 || x > 7) err();
          v = (v << 3) | x;
        }
        i += 2;
        if (v > 255) err();
        bytes.push(v);
        break;
      }
      case 0x5c:
        bytes.push(0x5c);
        break;
      case 0x27: case 0x22: case 0x7c: case 0x2f: // ' " | /
        if (e !== quote) err();
        bytes.push(e);
        break;
      default:
        err();
    }
  }
  return decodeUtf8Escaped(bytes);
}

// ---------------------------------------------------------------------------
// Parser: filters/parser.go

class FilterParser {
  private readonly scanner: Scanner;
  /** "~=" operands and their positions, compiled once the syntax is known good. */
  readonly patterns: [pos: number, pattern: string][] = [];
  constructor(private readonly input: string) {
    this.scanner = new Scanner(input);
  }

  /** Compiles the "~=" operands into the per-parse cache. */
  compilePatterns(regexps: Map<string, Re2>): void {
    for (const [pos, pattern] of this.patterns) {
      if (regexps.has(pattern)) continue;
      try {
        regexps.set(pattern, compileRe2(pattern));
      } catch (e) {
        if (e instanceof Re2SyntaxError) throw this.mkerr(pos, `invalid regexp: ${e.message}`);
        throw e;
      }
    }
  }

  mkerr(pos: number, msg: string): Error {
    const input = this.input;
    let where: string;
    if (pos < input.length) {
      const cp = input.codePointAt(pos) ?? 0;
      const end = pos + (cp > 0xffff ? 2 : 1);
      where = `[${input.slice(0, pos)} >|${input.slice(pos, end)}|< ${input.slice(end)}]`;
    } else {
      where = `[${input}]`;
    }
    return invalidArgument(`filters: parse error: ${where}: ${msg}`);
  }

  parse(): Selector[] {
    const sel = this.selector();
    const ss = [sel];
    for (;;) {
      const tok = this.scanner.peek();
      if (tok === 0x2c) {
        const [pos, t] = this.scanner.scan();
        if (t !== tokenSeparator) throw this.mkerr(pos, "expected a separator");
        ss.push(this.selector());
      } else if (tok === tokenEOF) {
        break;
      } else {
        throw this.mkerr(this.scanner.ppos, `unexpected input: ${tokString(tok)}`);
      }
    }
    return ss;
  }

  private selector(): Selector {
    const fieldpath = this.fieldpath();
    const next = this.scanner.peek();
    if (next === 0x2c || next === tokenEOF) return { fieldpath, op: "present", value: "" };
    const op = this.operator();
    const [valuePos, value] = this.value(op === "~=");
    if (op === "~=") this.patterns.push([valuePos, value]);
    return { fieldpath, op, value };
  }

  private fieldpath(): string[] {
    const fs = [this.field()];
    while (this.scanner.peek() === 0x2e) {
      const [pos, tok] = this.scanner.scan();
      if (tok !== tokenSeparator) throw this.mkerr(pos, "expected a field separator (`.`)");
      fs.push(this.field());
    }
    return fs;
  }

  private field(): string {
    const [pos, tok, s] = this.scanner.scan();
    if (tok === tokenField) return s;
    if (tok === tokenQuoted) return this.unquote(pos, s, false);
    if (tok === tokenIllegal) throw this.mkerr(pos, this.scanner.err);
    throw this.mkerr(pos, "expected field or quoted");
  }

  private operator(): Op {
    const [pos, tok, s] = this.scanner.scan();
    if (tok === tokenOperator) {
      if (s === "==" || s === "!=" || s === "~=") return s;
      throw this.mkerr(pos, `unsupported operator ${JSON.stringify(s)}`);
    }
    if (tok === tokenIllegal) throw this.mkerr(pos, this.scanner.err);
    throw this.mkerr(pos, 'expected an operator ("=="|"!="|"~=")');
  }

  private value(allowAltQuotes: boolean): [number, string] {
    const [pos, tok, s] = this.scanner.scan();
    if (tok === tokenValue || tok === tokenField) return [pos, s];
    if (tok === tokenQuoted) return [pos, this.unquote(pos, s, allowAltQuotes)];
    if (tok === tokenIllegal) throw this.mkerr(pos, this.scanner.err);
    throw this.mkerr(pos, "expected value or quoted");
  }

  private unquote(pos: number, s: string, allowAlts: boolean): string {
    if (!allowAlts && s[0] !== "'" && s[0] !== '"') throw this.mkerr(pos, "invalid quote encountered");
    try {
      return unquote(s);
    } catch (e) {
      if (e instanceof QuoteSyntaxError) throw this.mkerr(pos, `unquoting failed: ${e.message}`);
      throw e;
    }
  }
}

/** Go: string(rune(tok)); a negative token prints as U+FFFD. */
function tokString(tok: number): string {
  return tok < 0 ? "\ufffd" : String.fromCodePoint(tok);
}

/**
 * Parses filter strings (containerd filters.ParseAll): each string is an
 * AND-list of selectors, the strings are OR'ed; [] and "" match everything.
 * Throws invalid_argument on bad syntax or an unusable regexp.
 */
export function parseFilters(filters: readonly string[]): Filter {
  const regexps = new Map<string, Re2>();
  if (filters.length === 0) return { anyOf: [[]], regexps };
  const anyOf: Selector[][] = [];
  const parsers: FilterParser[] = [];
  for (const s of filters) {
    if (s === "") {
      anyOf.push([]);
      continue;
    }
    const p = new FilterParser(s);
    anyOf.push(p.parse());
    parsers.push(p);
  }
  // Syntax errors first (as containerd reports them), then unusable regexps.
  for (const p of parsers) p.compilePatterns(regexps);
  return { anyOf, regexps };
}

// ---------------------------------------------------------------------------
// Matching: filters/filter.go selector.Match + metadata/adaptors.go adaptSnapshot

const KINDS: readonly Kind[] = ["active", "view", "committed"];

function isKind(k: string): k is Kind {
  return (KINDS as readonly string[]).includes(k);
}

/** adaptSnapshot's Field(): [value, present]. */
function field(info: FilterTarget, fieldpath: readonly string[]): [string, boolean] {
  switch (fieldpath[0]) {
    case "kind":
      return isKind(info.kind) ? [info.kind, true] : ["", false];
    case "name":
      return [info.name, true];
    case "parent":
      return [info.parent, true];
    case "labels": {
      const labels = info.labels;
      const key = fieldpath.slice(1).join(".");
      if (labels !== undefined && labels !== null && Object.hasOwn(labels, key)) {
        const v = labels[key];
        return [typeof v === "string" ? v : "", true];
      }
      return ["", false];
    }
    default:
      return ["", false];
  }
}

function regexpFor(f: Filter, pattern: string): Re2 {
  let re = f.regexps.get(pattern);
  if (re === undefined) {
    // A Filter built by hand: compile (and reject) like the parser would.
    try {
      re = compileRe2(pattern);
    } catch (e) {
      if (e instanceof Re2SyntaxError) throw invalidArgument(`filters: invalid regexp: ${e.message}`);
      throw e;
    }
    if (f.regexps instanceof Map) f.regexps.set(pattern, re);
  }
  return re;
}

function selectorMatches(f: Filter, sel: Selector, info: FilterTarget): boolean {
  const [value, present] = field(info, sel.fieldpath);
  switch (sel.op) {
    case "present":
      return present;
    case "==":
      return present && value === sel.value;
    case "!=":
      return value !== sel.value; // presence ignored, as in filter.go
    case "~=":
      return regexpFor(f, sel.value).test(value);
  }
}

export function matches(f: Filter, info: FilterTarget): boolean {
  return f.anyOf.some((all) => all.every((sel) => selectorMatches(f, sel, info)));
}

// ---------------------------------------------------------------------------
// SQL (SQLite) translation

/** Above this many selectors the WHERE is just `1` (SQLite expression depth / parameter limits). */
export const MAX_SQL_SELECTORS = 256;

interface SqlPart {
  sql: string;
  params: string[];
  exact: boolean;
}

const TRUE: SqlPart = { sql: "1", params: [], exact: true };
const FALSE: SqlPart = { sql: "0", params: [], exact: true };
const labelExists = (extra: string): string =>
  `EXISTS (SELECT 1 FROM labels l WHERE l.snapshot_id = s.id AND l.key = ?${extra})`;

function selectorSql(f: Filter, sel: Selector): SqlPart {
  const head = sel.fieldpath[0];
  const v = sel.value;
  // Stored strings are well-formed; a value holding non-UTF-8 bytes equals none.
  const wellFormed = v.isWellFormed();
  const column = head === "name" ? "s.name" : head === "parent" ? "COALESCE(p.name,'')" : head === "kind" ? "s.kind" : null;

  if (column !== null) {
    switch (sel.op) {
      case "present":
        return TRUE;
      case "==":
        return wellFormed ? { sql: `${column} = ?`, params: [v], exact: true } : FALSE;
      case "!=":
        return wellFormed ? { sql: `${column} <> ?`, params: [v], exact: true } : TRUE;
      case "~=": {
        const re = regexpFor(f, v);
        if (head === "kind") {
          const kinds = KINDS.filter((k) => re.test(k));
          if (kinds.length === 0) return FALSE;
          return { sql: `s.kind IN (${kinds.map(() => "?").join(",")})`, params: [...kinds], exact: true };
        }
        // An empty value cannot match: the column must be non-empty.
        if (head === "parent" && !re.test("")) return { sql: `${column} <> ''`, params: [], exact: false };
        return { sql: "1", params: [], exact: false };
      }
    }
  }

  if (head === "labels") {
    const key = sel.fieldpath.slice(1).join(".");
    if (!key.isWellFormed()) {
      // No such label can be stored: the field is absent, value "".
      return constantSql(f, sel);
    }
    switch (sel.op) {
      case "present":
        return { sql: labelExists(""), params: [key], exact: true };
      case "==":
        if (!wellFormed) return FALSE;
        return { sql: labelExists(" AND l.value = ?"), params: [key, v], exact: true };
      case "!=":
        if (!wellFormed) return TRUE;
        if (v === "") return { sql: labelExists(" AND l.value <> ''"), params: [key], exact: true };
        return { sql: `NOT ${labelExists(" AND l.value = ?")}`, params: [key, v], exact: true };
      case "~=": {
        const re = regexpFor(f, v);
        if (!re.test("")) return { sql: labelExists(""), params: [key], exact: false };
        return { sql: "1", params: [], exact: false };
      }
    }
  }

  return constantSql(f, sel);
}

/** A selector over an absent field (value ""): its result does not depend on the row. */
function constantSql(f: Filter, sel: Selector): SqlPart {
  switch (sel.op) {
    case "present":
    case "==":
      return FALSE;
    case "!=":
      return sel.value !== "" ? TRUE : FALSE;
    case "~=":
      return regexpFor(f, sel.value).test("") ? TRUE : FALSE;
  }
}

/**
 * A WHERE fragment over `snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`
 * with labels in `labels(snapshot_id, key, value)`. Positional `?` params, in
 * textual order. exact=false means the fragment selects a superset (regexps
 * cannot be evaluated in SQLite, and filters with more than MAX_SQL_SELECTORS
 * selectors become `1`): the caller must re-check each row with matches().
 * Assumes s.name and s.kind are NOT NULL with BINARY collation, s.kind is one
 * of the three kinds, and no label row has an empty value. `!=` reproduces
 * containerd: a missing label counts as "", so `labels.k!=v` is
 * NOT EXISTS(k = v) and `labels.k!=""` is EXISTS(k with a non-empty value).
 */
export function toSql(f: Filter): { where: string; params: string[]; exact: boolean } {
  const total = f.anyOf.reduce((n, all) => n + all.length, 0);
  if (total > MAX_SQL_SELECTORS) return { where: "1", params: [], exact: false };

  const ors: SqlPart[] = [];
  for (const all of f.anyOf) {
    const ands: SqlPart[] = [];
    let isFalse = false;
    for (const sel of all) {
      const part = selectorSql(f, sel);
      if (part.sql === "0") {
        isFalse = true;
        break;
      }
      ands.push(part);
    }
    if (isFalse) continue; // the whole conjunction is constant false
    const exact = ands.every((p) => p.exact);
    const nonTrivial = ands.filter((p) => p.sql !== "1");
    if (nonTrivial.length === 0) {
      if (exact) return { where: "1", params: [], exact: true }; // one conjunction is always true
      ors.push({ sql: "1", params: [], exact: false });
      continue;
    }
    ors.push({
      sql: nonTrivial.length === 1 ? (nonTrivial[0]?.sql ?? "1") : nonTrivial.map((p) => `(${p.sql})`).join(" AND "),
      params: nonTrivial.flatMap((p) => p.params),
      exact,
    });
  }
  if (ors.length === 0) return { where: "0", params: [], exact: true };
  const exact = ors.every((p) => p.exact);
  if (ors.some((p) => p.sql === "1")) return { where: "1", params: [], exact };
  if (ors.length === 1) {
    const only = ors[0] ?? FALSE;
    return { where: `(${only.sql})`, params: only.params, exact };
  }
  return {
    where: `(${ors.map((p) => `(${p.sql})`).join(" OR ")})`,
    params: ors.flatMap((p) => p.params),
    exact,
  };
}

// ---------------------------------------------------------------------------
// RE2 (Go regexp/syntax, Perl flags) parser + Pike VM

export class Re2SyntaxError extends Error {
  constructor(code: string, expr: string) {
    super(`error parsing regexp: ${code}: \`${expr}\``);
    this.name = "Re2SyntaxError";
  }
}

/** One-code-point test; JS RegExps here only ever see a single code point. */
class CharSet {
  private readonly ascii = new Int8Array(128); // 0 unknown, 1 yes, 2 no
  private readonly memo = new Map<number, boolean>();
  constructor(
    private readonly pos: RegExp | null,
    private readonly negs: readonly RegExp[],
    private readonly negate: boolean,
  ) {}

  test(cp: number): boolean {
    if (cp < 128) {
      const m = this.ascii[cp];
      if (m !== 0) return m === 1;
    } else {
      const m = this.memo.get(cp);
      if (m !== undefined) return m;
    }
    const s = String.fromCodePoint(cp);
    let r = this.pos !== null && this.pos.test(s);
    if (!r) r = this.negs.some((re) => !re.test(s));
    r = r !== this.negate;
    if (cp < 128) this.ascii[cp] = r ? 1 : 2;
    else if (this.memo.size < 4096) this.memo.set(cp, r);
    return r;
  }
}

const hexCp = (c: number): string => `\\u{${c.toString(16)}}`;
const rangesBody = (rs: readonly (readonly [number, number])[]): string =>
  rs.map(([lo, hi]) => (lo === hi ? hexCp(lo) : `${hexCp(lo)}-${hexCp(hi)}`)).join("");

/** Accumulates one RE2 character class; built into a CharSet. */
class ClassBuilder {
  pos = "";
  negs: string[] = [];
  constructor(readonly fold: boolean) {}
  addRange(lo: number, hi: number): void {
    this.pos += lo === hi ? hexCp(lo) : `${hexCp(lo)}-${hexCp(hi)}`;
  }
  /** A group such as \d, [:^alpha:], \P{Greek}: Go folds it and then negates. */
  addGroup(body: string, negated: boolean): void {
    if (negated) this.negs.push(body);
    else this.pos += body;
  }
  build(negate: boolean): CharSet {
    const flags = this.fold ? "iu" : "u";
    const mk = (body: string): RegExp => new RegExp(`^[${body}]$`, flags);
    return new CharSet(this.pos === "" ? null : mk(this.pos), this.negs.map(mk), negate);
  }
}

type R = readonly (readonly [number, number])[];
const PERL_GROUPS: Record<string, readonly [boolean, R]> = {
  d: [false, [[0x30, 0x39]]],
  D: [true, [[0x30, 0x39]]],
  s: [false, [[0x09, 0x0a], [0x0c, 0x0d], [0x20, 0x20]]],
  S: [true, [[0x09, 0x0a], [0x0c, 0x0d], [0x20, 0x20]]],
  w: [false, [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]],
  W: [true, [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]],
};
const POSIX_GROUPS: Record<string, R> = {
  alnum: [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]],
  alpha: [[0x41, 0x5a], [0x61, 0x7a]],
  ascii: [[0x00, 0x7f]],
  blank: [[0x09, 0x09], [0x20, 0x20]],
  cntrl: [[0x00, 0x1f], [0x7f, 0x7f]],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]],
  space: [[0x09, 0x0d], [0x20, 0x20]],
  upper: [[0x41, 0x5a]],
  word: [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]],
  xdigit: [[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]],
};
/** Go unicode.Categories keys. */
const GO_CATEGORIES = new Set([
  "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl", "No",
  "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
]);
/** Go 1.19 unicode.Scripts keys (JS would also accept aliases such as "Grek"). */
const GO_SCRIPTS = new Set([
  "Adlam", "Ahom", "Anatolian_Hieroglyphs", "Arabic", "Armenian", "Avestan", "Balinese", "Bamum", "Bassa_Vah",
  "Batak", "Bengali", "Bhaiksuki", "Bopomofo", "Brahmi", "Braille", "Buginese", "Buhid", "Canadian_Aboriginal",
  "Carian", "Caucasian_Albanian", "Chakma", "Cham", "Cherokee", "Chorasmian", "Common", "Coptic", "Cuneiform",
  "Cypriot", "Cyrillic", "Deseret", "Devanagari", "Dives_Akuru", "Dogra", "Duployan", "Egyptian_Hieroglyphs",
  "Elbasan", "Elymaic", "Ethiopic", "Georgian", "Glagolitic", "Gothic", "Grantha", "Greek", "Gujarati",
  "Gunjala_Gondi", "Gurmukhi", "Han", "Hangul", "Hanifi_Rohingya", "Hanunoo", "Hatran", "Hebrew", "Hiragana",
  "Imperial_Aramaic", "Inherited", "Inscriptional_Pahlavi", "Inscriptional_Parthian", "Javanese", "Kaithi",
  "Kannada", "Katakana", "Kayah_Li", "Kharoshthi", "Khitan_Small_Script", "Khmer", "Khojki", "Khudawadi", "Lao",
  "Latin", "Lepcha", "Limbu", "Linear_A", "Linear_B", "Lisu", "Lycian", "Lydian", "Mahajani", "Makasar", "Malayalam",
  "Mandaic", "Manichaean", "Marchen", "Masaram_Gondi", "Medefaidrin", "Meetei_Mayek", "Mende_Kikakui",
  "Meroitic_Cursive", "Meroitic_Hieroglyphs", "Miao", "Modi", "Mongolian", "Mro", "Multani", "Myanmar", "Nabataean",
  "Nandinagari", "New_Tai_Lue", "Newa", "Nko", "Nushu", "Nyiakeng_Puachue_Hmong", "Ogham", "Ol_Chiki",
  "Old_Hungarian", "Old_Italic", "Old_North_Arabian", "Old_Permic", "Old_Persian", "Old_Sogdian",
  "Old_South_Arabian", "Old_Turkic", "Oriya", "Osage", "Osmanya", "Pahawh_Hmong", "Palmyrene", "Pau_Cin_Hau",
  "Phags_Pa", "Phoenician", "Psalter_Pahlavi", "Rejang", "Runic", "Samaritan", "Saurashtra", "Sharada", "Shavian",
  "Siddham", "SignWriting", "Sinhala", "Sogdian", "Sora_Sompeng", "Soyombo", "Sundanese", "Syloti_Nagri", "Syriac",
  "Tagalog", "Tagbanwa", "Tai_Le", "Tai_Tham", "Tai_Viet", "Takri", "Tamil", "Tangut", "Telugu", "Thaana", "Thai",
  "Tibetan", "Tifinagh", "Tirhuta", "Ugaritic", "Vai", "Wancho", "Warang_Citi", "Yezidi", "Yi", "Zanabazar_Square",
]);

/** JS class body for Go's unicodeTable(name), or null if Go does not know it. */
function unicodeBody(name: string): string | null {
  if (name === "Any") return `${hexCp(0)}-${hexCp(0x10ffff)}`;
  // Go's "C" is Cc|Cf|Co|Cs (no unassigned code points).
  if (name === "C") return "\\p{Cc}\\p{Cf}\\p{Co}\\p{Cs}";
  if (GO_CATEGORIES.has(name)) return `\\p{${name}}`;
  if (GO_SCRIPTS.has(name)) return `\\p{Script=${name}}`;
  return null;
}

type Assert = "bol" | "eol" | "bot" | "eot" | "wb" | "nwb";

type Node =
  | { readonly t: "empty" }
  | { readonly t: "char"; readonly set: CharSet | "any" | "notnl" | number }
  | { readonly t: "assert"; readonly a: Assert }
  | { readonly t: "cat"; readonly subs: readonly Node[] }
  | { readonly t: "alt"; readonly subs: readonly Node[] }
  | { readonly t: "rep"; readonly sub: Node; readonly min: number; readonly max: number; readonly counted: boolean };

interface Flags {
  fold: boolean;
  dotNL: boolean;
  oneLine: boolean;
}

const isAlnum = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

/** Go repeatIsValid(re, n). */
function repeatIsValid(re: Node, n: number): boolean {
  if (re.t === "rep" && re.counted) {
    let m = re.max;
    if (m === 0) return true;
    if (m < 0) m = re.min;
    if (m > n) return false;
    if (m > 0) n = Math.floor(n / m);
  }
  switch (re.t) {
    case "cat":
    case "alt":
      return re.subs.every((s) => repeatIsValid(s, n));
    case "rep":
      return repeatIsValid(re.sub, n);
    default:
      return true;
  }
}

class Re2Parser {
  private i = 0;
  private flags: Flags = { fold: false, dotNL: false, oneLine: true };
  private readonly s: string;
  constructor(s: string) {
    this.s = s;
  }

  private err(code: string, expr: string): never {
    throw new Re2SyntaxError(code, expr);
  }
  private cpAt(i: number): number {
    return i < this.s.length ? (this.s.codePointAt(i) ?? -1) : -1;
  }
  private static width(c: number): number {
    return c > 0xffff ? 2 : 1;
  }

  parse(): Node {
    const re = this.alternation(0);
    if (this.i < this.s.length) {
      // Only a ')' stops alternation() early at depth 0.
      this.err("unexpected )", this.s);
    }
    return re;
  }

  /** Parses up to an unmatched ')' (depth > 0) or the end. */
  private alternation(depth: number): Node {
    const alts: Node[] = [this.concat(depth)];
    while (this.i < this.s.length && this.s[this.i] === "|") {
      this.i++;
      alts.push(this.concat(depth));
    }
    return alts.length === 1 ? (alts[0] ?? { t: "empty" }) : { t: "alt", subs: alts };
  }

  private concat(depth: number): Node {
    const items: Node[] = [];
    let lastRepeat = -1; // start index of the previous token if it was a repeat operator
    const s = this.s;
    while (this.i < s.length) {
      const c = s[this.i];
      if (c === "|") break;
      if (c === ")") {
        if (depth === 0) this.err("unexpected )", s);
        break;
      }
      let repeat = -1;
      const start = this.i;
      switch (c) {
        case "(":
          this.group(depth, items);
          break;
        case "^":
          items.push({ t: "assert", a: this.flags.oneLine ? "bot" : "bol" });
          this.i++;
          break;
        case "$":
          items.push({ t: "assert", a: this.flags.oneLine ? "eot" : "eol" });
          this.i++;
          break;
        case ".":
          items.push({ t: "char", set: this.flags.dotNL ? "any" : "notnl" });
          this.i++;
          break;
        case "[":
          items.push({ t: "char", set: this.charClass() });
          break;
        case "*":
        case "+":
        case "?": {
          this.i++;
          const [min, max] = c === "*" ? [0, -1] : c === "+" ? [1, -1] : [0, 1];
          this.repeat(items, min, max, false, start, lastRepeat);
          repeat = start;
          break;
        }
        case "{": {
          const r = this.parseRepeat();
          if (r === null) {
            items.push(this.literal(0x7b));
            this.i++;
            break;
          }
          const [min, max, end] = r;
          this.i = end;
          if (min < 0 || min > 1000 || max > 1000 || (max >= 0 && min > max)) {
            this.err("invalid repeat count", s.slice(start, end));
          }
          this.repeat(items, min, max, true, start, lastRepeat);
          repeat = start;
          break;
        }
        case "\\":
          this.backslash(items);
          break;
        default: {
          const cp = this.cpAt(this.i);
          items.push(this.literal(cp));
          this.i += Re2Parser.width(cp);
        }
      }
      lastRepeat = repeat;
    }
    if (items.length === 0) return { t: "empty" };
    return items.length === 1 ? (items[0] ?? { t: "empty" }) : { t: "cat", subs: items };
  }

  private repeat(items: Node[], min: number, max: number, counted: boolean, start: number, lastRepeat: number): void {
    if (this.s[this.i] === "?") this.i++; // non-greedy: irrelevant for a yes/no match
    if (lastRepeat >= 0) this.err("invalid nested repetition operator", this.s.slice(lastRepeat, this.i));
    const sub = items.pop();
    if (sub === undefined) this.err("missing argument to repetition operator", this.s.slice(start, this.i));
    const re: Node = { t: "rep", sub, min, max, counted };
    items.push(re);
    if (counted && (min >= 2 || max >= 2) && !repeatIsValid(re, 1000)) {
      this.err("invalid repeat count", this.s.slice(start, this.i));
    }
  }

  /** Go parseRepeat: {n}, {n,}, {n,m}; null when not of that form (then '{' is literal). */
  private parseRepeat(): [number, number, number] | null {
    let i = this.i + 1;
    const int = (): number | null => {
      const m = /^[0-9]+/.exec(this.s.slice(i));
      if (m === null) return null;
      const d = m[0];
      if (d.length >= 2 && d[0] === "0") return null;
      i += d.length;
      return d.length > 8 ? -1 : Number(d);
    };
    let min = int();
    if (min === null) return null;
    let max = min;
    if (i >= this.s.length) return null;
    if (this.s[i] === ",") {
      i++;
      if (i >= this.s.length) return null;
      if (this.s[i] === "}") max = -1;
      else {
        const m = int();
        if (m === null) return null;
        max = m;
        if (max < 0) min = -1;
      }
    }
    if (this.s[i] !== "}") return null;
    return [min, max, i + 1];
  }

  private literal(cp: number): Node {
    if (!this.flags.fold) return { t: "char", set: cp };
    const b = new ClassBuilder(true);
    b.addRange(cp, cp);
    return { t: "char", set: b.build(false) };
  }

  private group(depth: number, items: Node[]): void {
    const s = this.s;
    const start = this.i;
    const saved = this.flags;
    if (s[this.i + 1] === "?") {
      // (?P<name>re)
      if (s.length - this.i > 4 && s[this.i + 2] === "P" && s[this.i + 3] === "<") {
        const end = s.indexOf(">", this.i);
        if (end < 0) this.err("invalid named capture", s.slice(start));
        const name = s.slice(this.i + 4, end);
        if (name === "" || ![...name].every((ch) => ch === "_" || isAlnum(ch.codePointAt(0) ?? 0))) {
          this.err("invalid named capture", s.slice(start, end + 1));
        }
        this.i = end + 1;
        items.push(this.groupBody(depth, saved));
        return;
      }
      // Flags: (?flags) or (?flags:re)
      let j = this.i + 2;
      const flags: Flags = { ...this.flags };
      let sign = 1;
      let sawFlag = false;
      while (j < s.length) {
        const c = s[j];
        j++;
        switch (c) {
          case "i":
            flags.fold = sign > 0;
            sawFlag = true;
            continue;
          case "m":
            flags.oneLine = sign < 0;
            sawFlag = true;
            continue;
          case "s":
            flags.dotNL = sign > 0;
            sawFlag = true;
            continue;
          case "U": // non-greedy by default: irrelevant for a yes/no match
            sawFlag = true;
            continue;
          case "-":
            if (sign < 0) break;
            sign = -1;
            sawFlag = false;
            continue;
          case ":":
          case ")":
            if (sign < 0 && !sawFlag) break;
            this.i = j;
            if (c === ":") {
              this.flags = flags;
              items.push(this.groupBody(depth, saved));
            } else {
              this.flags = flags; // until the end of the enclosing group
            }
            return;
        }
        break;
      }
      this.err("invalid or unsupported Perl syntax", s.slice(start, j));
    }
    this.i++;
    items.push(this.groupBody(depth, saved));
  }

  private groupBody(depth: number, saved: Flags): Node {
    const re = this.alternation(depth + 1);
    if (this.i >= this.s.length) this.err("missing closing )", this.s);
    this.i++; // ')'
    this.flags = saved;
    return re;
  }

  private backslash(items: Node[]): void {
    const s = this.s;
    const c1 = s[this.i + 1];
    switch (c1) {
      case "A":
        items.push({ t: "assert", a: "bot" });
        this.i += 2;
        return;
      case "b":
        items.push({ t: "assert", a: "wb" });
        this.i += 2;
        return;
      case "B":
        items.push({ t: "assert", a: "nwb" });
        this.i += 2;
        return;
      case "C":
        this.err("invalid escape sequence", "\\C");
        return;
      case "Q": {
        let end = s.indexOf("\\E", this.i + 2);
        const lit = end < 0 ? s.slice(this.i + 2) : s.slice(this.i + 2, end);
        for (const ch of lit) items.push(this.literal(ch.codePointAt(0) ?? 0));
        if (end < 0) end = s.length;
        else end += 2;
        this.i = end;
        return;
      }
      case "z":
        items.push({ t: "assert", a: "eot" });
        this.i += 2;
        return;
    }
    if (c1 === "p" || c1 === "P" || (c1 !== undefined && c1 in PERL_GROUPS)) {
      const b = new ClassBuilder(this.flags.fold);
      if (this.unicodeClass(b) || this.perlClass(b)) {
        items.push({ t: "char", set: b.build(false) });
        return;
      }
    }
    items.push(this.literal(this.escape()));
  }

  /** Go parseEscape at this.i (a backslash); returns the code point. */
  private escape(): number {
    const s = this.s;
    const start = this.i;
    this.i++;
    if (this.i >= s.length) this.err("trailing backslash at end of expression", "");
    const c = this.cpAt(this.i);
    this.i += Re2Parser.width(c);
    const bad = (): never => this.err("invalid escape sequence", s.slice(start, this.i));
    if (c >= 0x31 && c <= 0x37) {
      const n = this.cpAt(this.i);
      if (n < 0x30 || n > 0x37) bad(); // backreference: not supported
    }
    if (c >= 0x30 && c <= 0x37) {
      let r = c - 0x30;
      for (let k = 1; k < 3; k++) {
        const n = this.cpAt(this.i);
        if (n < 0x30 || n > 0x37) break;
        r = r * 8 + n - 0x30;
        this.i++;
      }
      return r;
    }
    switch (c) {
      case 0x78: { // x
        if (this.i >= s.length) bad();
        const h = this.cpAt(this.i);
        this.i += Re2Parser.width(h);
        if (h === 0x7b) {
          let nhex = 0;
          let r = 0;
          for (;;) {
            if (this.i >= s.length) bad();
            const d = this.cpAt(this.i);
            this.i += Re2Parser.width(d);
            if (d === 0x7d) break;
            const v = d < 0x80 ? unhex(d) : -1;
            if (v < 0) bad();
            r = r * 16 + v;
            if (r > 0x10ffff) bad();
            nhex++;
          }
          if (nhex === 0) bad();
          return r;
        }
        const x = h < 0x80 ? unhex(h) : -1;
        const l = this.cpAt(this.i);
        if (l >= 0) this.i += Re2Parser.width(l);
        const y = l >= 0 && l < 0x80 ? unhex(l) : -1;
        if (x < 0 || y < 0) bad();
        return x * 16 + y;
      }
      case 0x61: return 0x07;
      case 0x66: return 0x0c;
      case 0x6e: return 0x0a;
      case 0x72: return 0x0d;
      case 0x74: return 0x09;
      case 0x76: return 0x0b;
    }
    if (c < 0x80 && !isAlnum(c)) return c; // escaped punctuation is itself
    return bad();
  }

  /** \d \D \s \S \w \W at this.i. */
  private perlClass(b: ClassBuilder): boolean {
    if (this.s[this.i] !== "\\") return false;
    const g = PERL_GROUPS[this.s[this.i + 1] ?? ""];
    if (g === undefined) return false;
    b.addGroup(rangesBody(g[1]), g[0]);
    this.i += 2;
    return true;
  }

  /** \pN, \p{Name}, \PN, \P{^Name} at this.i. */
  private unicodeClass(b: ClassBuilder): boolean {
    const s = this.s;
    if (s[this.i] !== "\\" || (s[this.i + 1] !== "p" && s[this.i + 1] !== "P")) return false;
    let neg = s[this.i + 1] === "P";
    const start = this.i;
    const c = this.cpAt(this.i + 2);
    let name: string;
    let end: number;
    if (c !== 0x7b) {
      end = this.i + 2 + (c < 0 ? 0 : Re2Parser.width(c));
      name = s.slice(this.i + 2, end);
    } else {
      const close = s.indexOf("}", this.i);
      if (close < 0) this.err("invalid character class range", s.slice(start));
      end = close + 1;
      name = s.slice(this.i + 3, close);
    }
    if (name.startsWith("^")) {
      neg = !neg;
      name = name.slice(1);
    }
    const body = unicodeBody(name);
    if (body === null) this.err("invalid character class range", s.slice(start, end));
    b.addGroup(body, neg);
    this.i = end;
    return true;
  }

  /** Go parseClass at this.i ('['). */
  private charClass(): CharSet {
    const s = this.s;
    const start = this.i;
    this.i++;
    let negate = false;
    if (s[this.i] === "^") {
      negate = true;
      this.i++;
    }
    const b = new ClassBuilder(this.flags.fold);
    let first = true;
    while (this.i >= s.length || s[this.i] !== "]" || first) {
      first = false;
      // POSIX [:alnum:]
      if (s.length - this.i > 2 && s[this.i] === "[" && s[this.i + 1] === ":") {
        const close = s.indexOf(":]", this.i + 2);
        if (close >= 0) {
          const full = s.slice(this.i, close + 2);
          let name = s.slice(this.i + 2, close);
          const neg = name.startsWith("^");
          if (neg) name = name.slice(1);
          const g = POSIX_GROUPS[name];
          if (g === undefined || !Object.hasOwn(POSIX_GROUPS, name)) this.err("invalid character class range", full);
          b.addGroup(rangesBody(g), neg);
          this.i = close + 2;
          continue;
        }
      }
      if (this.unicodeClass(b) || this.perlClass(b)) continue;
      const rngStart = this.i;
      const lo = this.classChar(start);
      let hi = lo;
      if (s.length - this.i >= 2 && s[this.i] === "-" && s[this.i + 1] !== "]") {
        this.i++;
        hi = this.classChar(start);
        if (hi < lo) this.err("invalid character class range", s.slice(rngStart, this.i));
      }
      b.addRange(lo, hi);
    }
    this.i++; // ']'
    return b.build(negate);
  }

  private classChar(classStart: number): number {
    if (this.i >= this.s.length) this.err("missing closing ]", this.s.slice(classStart));
    if (this.s[this.i] === "\\") return this.escape();
    const c = this.cpAt(this.i);
    this.i += Re2Parser.width(c);
    return c;
  }
}

// Compiled program: parallel typed arrays, one entry per instruction.

const I_CHAR = 0; // arg = code point
const I_ANY = 1;
const I_NOTNL = 2;
const I_SET = 3; // arg = index into sets
const I_SPLIT = 4; // arg, arg2 = targets
const I_JMP = 5; // arg = target
const I_ASSERT = 6; // arg = A_*
const I_MATCH = 7;

const A_BOT = 0;
const A_EOT = 1;
const A_BOL = 2;
const A_EOL = 3;
const A_WB = 4;
const A_NWB = 5;
const ASSERTS: Record<Assert, number> = { bot: A_BOT, eot: A_EOT, bol: A_BOL, eol: A_EOL, wb: A_WB, nwb: A_NWB };

/** Upper bound of the instruction count (stops early past limit). */
function progSize(n: Node, limit: number): number {
  switch (n.t) {
    case "empty":
      return 0;
    case "char":
    case "assert":
      return 1;
    case "cat":
    case "alt": {
      let t = 0;
      for (const s of n.subs) {
        t += progSize(s, limit) + (n.t === "alt" ? 2 : 0);
        if (t > limit) return t;
      }
      return t;
    }
    case "rep": {
      const sub = progSize(n.sub, limit);
      const copies = n.max < 0 ? Math.max(n.min, 1) : n.max;
      return copies * (sub + 1) + 2;
    }
  }
}

class Compiler {
  op: number[] = [];
  arg: number[] = [];
  arg2: number[] = [];
  sets: CharSet[] = [];

  private emit(op: number, arg = 0, arg2 = 0): number {
    this.op.push(op);
    this.arg.push(arg);
    this.arg2.push(arg2);
    return this.op.length - 1;
  }
  private get pc(): number {
    return this.op.length;
  }

  compile(n: Node): void {
    switch (n.t) {
      case "empty":
        return;
      case "char": {
        const set = n.set;
        if (typeof set === "number") this.emit(I_CHAR, set);
        else if (set === "any") this.emit(I_ANY);
        else if (set === "notnl") this.emit(I_NOTNL);
        else {
          this.sets.push(set);
          this.emit(I_SET, this.sets.length - 1);
        }
        return;
      }
      case "assert":
        this.emit(I_ASSERT, ASSERTS[n.a]);
        return;
      case "cat":
        for (const s of n.subs) this.compile(s);
        return;
      case "alt": {
        // split L1, L2; L1: a; jmp end; L2: split ...; last; end:
        const jumps: number[] = [];
        const last = n.subs.length - 1;
        n.subs.forEach((s, k) => {
          if (k === last) {
            this.compile(s);
            return;
          }
          const split = this.emit(I_SPLIT, 0, 0);
          this.arg[split] = this.pc;
          this.compile(s);
          jumps.push(this.emit(I_JMP));
          this.arg2[split] = this.pc;
        });
        for (const j of jumps) this.arg[j] = this.pc;
        return;
      }
      case "rep": {
        const { sub, min, max } = n;
        if (max < 0) {
          if (min === 0) {
            // L: split body, end; body; jmp L; end:
            const l = this.emit(I_SPLIT);
            this.arg[l] = this.pc;
            this.compile(sub);
            this.emit(I_JMP, l);
            this.arg2[l] = this.pc;
            return;
          }
          for (let k = 0; k < min - 1; k++) this.compile(sub);
          const l = this.pc;
          this.compile(sub);
          this.emit(I_SPLIT, l, this.pc + 1);
          return;
        }
        for (let k = 0; k < min; k++) this.compile(sub);
        // x{0,k}: split body, end; body; split body, end; body; ... end:
        const splits: number[] = [];
        for (let k = min; k < max; k++) {
          const sp = this.emit(I_SPLIT);
          this.arg[sp] = this.pc;
          splits.push(sp);
          this.compile(sub);
        }
        for (const sp of splits) this.arg2[sp] = this.pc;
        return;
      }
    }
  }
}

const isWordCp = (c: number): boolean => c === 0x5f || isAlnum(c);

/**
 * A compiled RE2 regexp. test() is an unanchored search (Go MatchString) by a
 * Pike VM: every instruction is visited at most once per input position, so
 * the cost is O(len(input) * program size) whatever the pattern.
 */
export class Re2 {
  private readonly op: Uint8Array;
  private readonly arg: Int32Array;
  private readonly arg2: Int32Array;
  private readonly sets: readonly CharSet[];
  private readonly mark: Uint32Array;
  private readonly stack: Int32Array;
  private gen = 0;

  constructor(
    readonly source: string,
    c: Compiler,
  ) {
    this.op = Uint8Array.from(c.op);
    this.arg = Int32Array.from(c.arg);
    this.arg2 = Int32Array.from(c.arg2);
    this.sets = c.sets;
    this.mark = new Uint32Array(c.op.length);
    this.stack = new Int32Array(c.op.length);
  }

  /** Number of VM instructions. */
  get programSize(): number {
    return this.op.length;
  }

  test(input: string): boolean {
    const cps: number[] = [];
    for (let i = 0; i < input.length; ) {
      const c = input.codePointAt(i) ?? 0;
      cps.push(c);
      i += c > 0xffff ? 2 : 1;
    }
    const n = cps.length;
    const size = this.op.length;
    let clist = new Int32Array(size);
    let nlist = new Int32Array(size);
    const { op, arg, sets } = this;

    this.bump();
    let ccount = this.add(clist, 0, 0, cps, 0);
    if (ccount < 0) return true;
    for (let i = 0; i < n; i++) {
      const c = cps[i] ?? 0;
      this.bump();
      let ncount = 0;
      for (let k = 0; k < ccount; k++) {
        const pc = clist[k] ?? 0;
        const a = arg[pc] ?? 0;
        let ok: boolean;
        switch (op[pc]) {
          case I_CHAR:
            ok = a === c;
            break;
          case I_ANY:
            ok = true;
            break;
          case I_NOTNL:
            ok = c !== 0x0a;
            break;
          default:
            ok = sets[a]?.test(c) ?? false;
        }
        if (!ok) continue;
        ncount = this.add(nlist, ncount, pc + 1, cps, i + 1);
        if (ncount < 0) return true;
      }
      // Unanchored search: a new thread starts at every position.
      ncount = this.add(nlist, ncount, 0, cps, i + 1);
      if (ncount < 0) return true;
      const t = clist;
      clist = nlist;
      nlist = t;
      ccount = ncount;
    }
    return false;
  }

  /**
   * Adds the epsilon-closure of pc0 at input position pos to list; returns the
   * new count, or -1 when the closure reaches the match instruction.
   */
  private add(list: Int32Array, count: number, pc0: number, cps: readonly number[], pos: number): number {
    const { op, arg, arg2, mark, stack } = this;
    const gen = this.gen;
    if (mark[pc0] === gen) return count;
    mark[pc0] = gen;
    let sp = 0;
    stack[sp++] = pc0;
    while (sp > 0) {
      const pc = stack[--sp] ?? 0;
      let next1 = -1;
      let next2 = -1;
      switch (op[pc]) {
        case I_MATCH:
          return -1;
        case I_JMP:
          next1 = arg[pc] ?? 0;
          break;
        case I_SPLIT:
          next1 = arg2[pc] ?? 0; // pushed first, popped last
          next2 = arg[pc] ?? 0;
          break;
        case I_ASSERT: {
          const n = cps.length;
          const prev = pos > 0 ? (cps[pos - 1] ?? -1) : -1;
          const next = pos < n ? (cps[pos] ?? -1) : -1;
          let ok: boolean;
          switch (arg[pc]) {
            case A_BOT:
              ok = pos === 0;
              break;
            case A_EOT:
              ok = pos === n;
              break;
            case A_BOL:
              ok = pos === 0 || prev === 0x0a;
              break;
            case A_EOL:
              ok = pos === n || next === 0x0a;
              break;
            case A_WB:
              ok = isWordCp(prev) !== isWordCp(next);
              break;
            default:
              ok = isWordCp(prev) === isWordCp(next);
          }
          if (ok) next1 = pc + 1;
          break;
        }
        default: // a character instruction
          list[count++] = pc;
          continue;
      }
      if (next1 >= 0 && mark[next1] !== gen) {
        mark[next1] = gen;
        stack[sp++] = next1;
      }
      if (next2 >= 0 && mark[next2] !== gen) {
        mark[next2] = gen;
        stack[sp++] = next2;
      }
    }
    return count;
  }

  private bump(): void {
    this.gen++;
    if (this.gen === 0xffffffff) {
      this.mark.fill(0);
      this.gen = 1;
    }
  }
}

/**
 * Compiles an RE2 pattern (Go regexp.Compile syntax). Throws Re2SyntaxError
 * for patterns Go rejects, and for patterns over MAX_REGEXP_LENGTH or whose
 * program would exceed MAX_REGEXP_PROGRAM instructions.
 */
export function compileRe2(pattern: string): Re2 {
  if (pattern.length > MAX_REGEXP_LENGTH) {
    throw new Re2SyntaxError(`expression longer than ${MAX_REGEXP_LENGTH} characters`, `${pattern.slice(0, 32)}...`);
  }
  if (!pattern.isWellFormed()) throw new Re2SyntaxError("invalid UTF-8", pattern);
  const ast = new Re2Parser(pattern).parse();
  if (progSize(ast, MAX_REGEXP_PROGRAM) > MAX_REGEXP_PROGRAM) {
    throw new Re2SyntaxError("expression too large", pattern.length > 64 ? `${pattern.slice(0, 64)}...` : pattern);
  }
  const c = new Compiler();
  c.compile(ast);
  c.op.push(I_MATCH);
  c.arg.push(0);
  c.arg2.push(0);
  return new Re2(pattern, c);
}
