/**
 * Unquoting of filter literals: containerd's filters/quote.go. Works on bytes
 * like Go; \x and octal escapes can produce bytes that are not UTF-8: those
 * are kept as lone surrogates U+DC80..U+DCFF ("surrogateescape"), so the value
 * never equals any well-formed string, exactly as the Go byte string never
 * equals valid UTF-8.
 */
import { digitVal } from "./scanner.ts";

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

export class QuoteSyntaxError extends Error {}

function unhex(c: number): number {
  const v = digitVal(c);
  return v < 16 ? v : -1;
}

/** quote.go unquote() for "-, /- and |-quoted literals. */
export function unquote(s: string): string {
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
