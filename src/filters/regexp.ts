/**
 * "~=" operands: Go's regexp (RE2 syntax, linear-time matching) through
 * re2js, a JavaScript port of RE2/J (itself a port of Go's regexp). A JS
 * RegExp would backtrack (`(a+)+$` against a long value blocks the event
 * loop) and reads a different syntax.
 *
 * re2js follows a newer Go than containerd v1.6's Go 1.19 in two places,
 * which are put back here so a filter means what it means to containerd:
 *  - `(?<name>re)` is Go 1.22 syntax; Go 1.19 rejects any `(?<` as
 *    "invalid or unsupported Perl syntax" (lookbehinds included);
 *  - Go accepts a capture name used twice (`(?P<n>a)|(?P<n>b)`), re2js not;
 *  - messages always end in ": `<where>`", even when <where> is empty.
 * Unicode tables are re2js's, not Go 1.19's (Unicode 13), so \p{...} may
 * differ for code points assigned since.
 */
import { RE2JS, RE2JSSyntaxException } from "re2js";

export class Re2SyntaxError extends Error {
  constructor(
    readonly code: string,
    readonly expr: string,
  ) {
    super(`error parsing regexp: ${code}: \`${expr}\``);
    this.name = "Re2SyntaxError";
  }
}

/** A compiled pattern: an unanchored search, as Go's MatchString. */
export class Re2 {
  /** Instructions of the compiled program: the per-character cost bound of a match. */
  readonly programSize: number;

  constructor(
    readonly pattern: string,
    private readonly re: RE2JS,
  ) {
    this.programSize = re.programSize();
  }

  test(value: string): boolean {
    return this.re.test(value);
  }
}

const INVALID_PERL_OP = "invalid or unsupported Perl syntax";
const MISSING_PAREN = "missing closing )";
const UNEXPECTED_PAREN = "unexpected )";
const INVALID_NAMED_CAPTURE = "invalid named capture";
const DUPLICATE_NAME = "duplicate capture group name";

/**
 * Compiles a pattern as Go 1.19's regexp.Compile does (Perl flags), or throws
 * Re2SyntaxError with Go's message. No size limits here: those are the
 * filter's (limits.ts), checked by the parser around this call.
 */
export function compileRe2(pattern: string): Re2 {
  if (!pattern.isWellFormed()) throw new Re2SyntaxError("invalid UTF-8", pattern);
  const angle = firstGroupOpen(pattern, "(?<");
  if (angle >= 0) {
    // Go 1.19 stops at the `(?<`, unless the text before it already failed
    // (a group still open there is not an error yet).
    const before = pattern.slice(0, angle);
    try {
      compileAs(pattern, renameCaptures(before));
    } catch (e) {
      if (!(e instanceof Re2SyntaxError)) throw e;
      // A flag group cut short by the cut (`(?(?<`): Go quotes up to the "(".
      if (e.code === INVALID_PERL_OP && /^\(\?[imsU-]*$/.test(e.expr) && before.endsWith(e.expr)) {
        throw new Re2SyntaxError(e.code, `${e.expr}(`);
      }
      if (e.code !== MISSING_PAREN) throw e;
    }
    throw new Re2SyntaxError(INVALID_PERL_OP, "(?<");
  }
  try {
    return new Re2(pattern, compileAs(pattern, pattern));
  } catch (e) {
    if (!(e instanceof Re2SyntaxError) || e.code !== DUPLICATE_NAME) throw e;
  }
  // Names are never used here: number them apart and compile again.
  return new Re2(pattern, compileAs(pattern, renameCaptures(pattern)));
}

/**
 * Compiles `text`, a rewrite or a prefix of `pattern`. The errors that quote
 * the whole expression (unbalanced parentheses) quote `pattern`.
 */
function compileAs(pattern: string, text: string): RE2JS {
  try {
    return RE2JS.compile(text);
  } catch (e) {
    if (!(e instanceof RE2JSSyntaxException)) throw e;
    const expr = e.input ?? "";
    // A bare `(?P<` at the end is not a named group to Go but unknown flags.
    if (e.error === INVALID_NAMED_CAPTURE && expr === "(?P<") throw new Re2SyntaxError(INVALID_PERL_OP, "(?P");
    const whole = e.error === UNEXPECTED_PAREN || e.error === MISSING_PAREN;
    throw new Re2SyntaxError(e.error, whole && expr === text ? pattern : expr);
  }
}

/** `pattern` with each `(?P<name>` (a valid name) renamed `(?P<name_N>`, N its rank; the rest as is. */
function renameCaptures(pattern: string): string {
  let out = "";
  let from = 0;
  let n = 0;
  for (let at = firstGroupOpen(pattern, "(?P<"); at >= 0; at = firstGroupOpen(pattern, "(?P<", from)) {
    const m = /^\(\?P<([A-Za-z0-9_]+)>/.exec(pattern.slice(at));
    // An invalid name still runs to the next ">" (Go's reading): copied as is.
    const gt = pattern.indexOf(">", at);
    const end = m ? at + m[0].length : gt < 0 ? pattern.length : gt + 1;
    out += pattern.slice(from, at) + (m ? `(?P<${m[1]}_${++n}>` : pattern.slice(at, end));
    from = end;
  }
  return out + pattern.slice(from);
}

/**
 * Offset of the first `open` (`(?<` or `(?P<`) at or after `from` that opens
 * a group, or -1: skips escapes, \Q...\E literals and character classes
 * (where `]` right after `[` or `[^` is literal, and `[:name:]` is one item).
 */
function firstGroupOpen(p: string, open: string, from = 0): number {
  let i = from;
  while (i < p.length) {
    const c = p[i];
    if (c === "\\") {
      if (p[i + 1] === "Q") {
        const end = p.indexOf("\\E", i + 2);
        if (end < 0) return -1;
        i = end + 2;
      } else {
        i += 2;
      }
    } else if (c === "[") {
      i++;
      if (p[i] === "^") i++;
      const first = i;
      while (i < p.length && !(p[i] === "]" && i > first)) {
        if (p[i] === "\\") i += 2;
        else if (p[i] === "[" && p[i + 1] === ":") {
          const end = p.indexOf(":]", i + 2);
          i = end < 0 ? i + 1 : end + 2;
        } else i++;
      }
      i++;
    } else if (c === "(" && p.startsWith(open, i)) {
      return i;
    } else if (c === "(" && p.startsWith("(?P<", i)) {
      // Go takes a capture name up to the next ">", whatever it holds.
      const gt = p.indexOf(">", i);
      if (gt < 0) return -1;
      i = gt + 1;
    } else {
      i++;
    }
  }
  return -1;
}
