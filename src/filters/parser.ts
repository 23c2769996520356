/**
 * containerd's filter language for snapshot Walk/List: the parser (a port of
 * containerd v1.6 filters/parser.go) and the compilation of its "~="
 * operands, bounded by limits.ts.
 *
 *   filter    := selector ("," selector)*          -- AND
 *   selector  := fieldpath [operator value]        -- no operator: presence
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z0-9_]+
 *   operator  := "==" | "!=" | "~="
 *   value     := quoted | run of graphic, non-space, non-"," runes
 *   quoted    := "..." (Go escapes); for "~=" also /.../ and |...|
 *
 * Several filter strings are OR'ed; [] and "" match everything. What a
 * filter means for a snapshot is match.ts. Deviations from the reference:
 *  - Go logs and treats an invalid regexp as "no match" (filters/filter.go);
 *    here it is an invalid_argument error at parse time;
 *  - the regexps of one List are bounded (limits.ts): too many, too long or
 *    too large ones are invalid_argument errors that name the limit;
 *  - error positions are UTF-16 offsets (Go: bytes).
 */
import { invalidArgument } from "../errors.ts";
import { MAX_FILTER_PROGRAM, MAX_FILTER_REGEXPS, MAX_REGEXP_LENGTH, MAX_REGEXP_PROGRAM } from "./limits.ts";
import { QuoteSyntaxError, unquote } from "./quote.ts";
import { compileRe2, type Re2, Re2SyntaxError } from "./regexp.ts";
import { runSync, runYielding } from "./run.ts";
import { Scanner, tokenEOF, tokenField, tokenIllegal, tokenOperator, tokenQuoted, tokenSeparator, tokenValue } from "./scanner.ts";

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

class FilterParser {
  private readonly scanner: Scanner;
  /** "~=" operands and their positions, compiled once the syntax is known good. */
  readonly patterns: [pos: number, pattern: string][] = [];
  constructor(private readonly input: string) {
    this.scanner = new Scanner(input);
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
 * Throws invalid_argument on bad syntax, an unusable regexp or a limit.
 */
export function parseFilters(filters: readonly string[]): Filter {
  return runSync(parseSteps(filters));
}

/** parseFilters, letting the event loop run between two regexp compiles (each up to ~45 ms). */
export function parseFiltersAsync(filters: readonly string[]): Promise<Filter> {
  return runYielding(parseSteps(filters));
}

function* parseSteps(filters: readonly string[]): Generator<void, Filter, void> {
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
  // Syntax errors first (as containerd reports them), then the regexps.
  yield* compileRegexps(parsers, regexps);
  return { anyOf, regexps };
}

/** Compiles each distinct "~=" operand once, within the limits, yielding after each compile. */
function* compileRegexps(parsers: readonly FilterParser[], into: Map<string, Re2>): Generator<void, void, void> {
  const first = new Map<string, [FilterParser, number]>();
  for (const p of parsers) for (const [pos, pattern] of p.patterns) if (!first.has(pattern)) first.set(pattern, [p, pos]);
  if (first.size > MAX_FILTER_REGEXPS) {
    throw invalidArgument(
      `filters: ${first.size} distinct regexps (~= operands), more than MAX_FILTER_REGEXPS = ${MAX_FILTER_REGEXPS} per List`,
    );
  }
  let total = 0;
  for (const [pattern, [p, pos]] of first) {
    if (pattern.length > MAX_REGEXP_LENGTH) {
      throw p.mkerr(pos, `invalid regexp: ${pattern.length} characters, longer than ${MAX_REGEXP_LENGTH} (MAX_REGEXP_LENGTH, per pattern)`);
    }
    let re: Re2;
    try {
      re = compileRe2(pattern);
    } catch (e) {
      if (e instanceof Re2SyntaxError) throw p.mkerr(pos, `invalid regexp: ${e.message}`);
      throw e;
    }
    if (re.programSize > MAX_REGEXP_PROGRAM) {
      throw p.mkerr(
        pos,
        `invalid regexp: expression too large: ${re.programSize} instructions, more than ${MAX_REGEXP_PROGRAM} (MAX_REGEXP_PROGRAM, per pattern)`,
      );
    }
    total += re.programSize;
    if (total > MAX_FILTER_PROGRAM) {
      throw invalidArgument(
        `filters: the regexps compile to more than MAX_FILTER_PROGRAM = ${MAX_FILTER_PROGRAM} instructions in all (per List)`,
      );
    }
    into.set(pattern, re);
    yield;
  }
}
