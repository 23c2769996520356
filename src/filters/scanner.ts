/**
 * containerd's filter scanner (filters/scanner.go), as pure logic. Positions
 * are UTF-16 offsets (Go: byte offsets).
 *
 * Rules worth knowing (all from containerd): white space may precede a field,
 * an operator or a value, but not a "," or "." nor end the string; an unquoted
 * value stops at "," or white space; after an operator a "." is a separator,
 * so a regexp starting with "." must be quoted (`name~=".*x"`); inside quotes
 * only Go escapes (\a\b\f\n\r\t\v\\, the quote, octal, \x, \u, \U) are legal,
 * so `/\d/` is an error and is written `"\\d"`.
 */

export const tokenEOF = -1;
export const tokenQuoted = -2;
export const tokenValue = -3;
export const tokenField = -4;
export const tokenSeparator = -5;
export const tokenOperator = -6;
export const tokenIllegal = -7;

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
export function digitVal(r: number): number {
  if (r >= 0x30 && r <= 0x39) return r - 0x30;
  if (r >= 0x61 && r <= 0x66) return r - 0x61 + 10;
  if (r >= 0x41 && r <= 0x46) return r - 0x41 + 10;
  return 16;
}

export class Scanner {
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
