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
 *  - messages always end in ": `<where>`", even when <where> is empty.
 * Unicode tables are re2js's, not Go 1.19's (Unicode 13), so \p{...} may
 * differ for code points assigned since.
 */
import { RE2JS, RE2JSSyntaxException } from "re2js";

export class Re2SyntaxError extends Error {
  constructor(code: string, expr: string) {
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

/**
 * Compiles a pattern as Go 1.19's regexp.Compile does (Perl flags), or throws
 * Re2SyntaxError with Go's message. No size limits here: those are the
 * filter's (limits.ts), checked by the parser around this call.
 */
export function compileRe2(pattern: string): Re2 {
  if (!pattern.isWellFormed()) throw new Re2SyntaxError("invalid UTF-8", pattern);
  const angle = firstAngleGroup(pattern);
  if (angle >= 0) {
    // Go 1.19 stops at the `(?<`, unless the text before it already failed
    // (a group still open there is not an error yet).
    try {
      compileOrThrow(pattern.slice(0, angle));
    } catch (e) {
      if (!(e instanceof Re2SyntaxError) || !e.message.includes(MISSING_PAREN)) throw e;
    }
    throw new Re2SyntaxError(INVALID_PERL_OP, "(?<");
  }
  return new Re2(pattern, compileOrThrow(pattern));
}

function compileOrThrow(pattern: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (e) {
    if (e instanceof RE2JSSyntaxException) throw new Re2SyntaxError(e.error, e.input ?? "");
    throw e;
  }
}

/**
 * Offset of the first `(?<` that opens a group (not `(?P<`), or -1: skips
 * escapes, \Q...\E literals and character classes (where `]` right after
 * `[` or `[^` is literal, and `[:name:]` is one item).
 */
function firstAngleGroup(p: string): number {
  let i = 0;
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
    } else if (c === "(" && p.startsWith("(?<", i)) {
      return i;
    } else {
      i++;
    }
  }
  return -1;
}
