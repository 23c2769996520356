/** A unified diff of two texts by lines (for `thinsnap install --dry-run`). */

const MAX_CELLS = 25_000_000;

type Op = { k: " " | "-" | "+"; line: string };

function ops(a: string[], b: string[]): Op[] {
  // Common prefix and suffix first: an install edit touches a few lines of a long file.
  let p = 0;
  while (p < a.length && p < b.length && a[p] === b[p]) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
  const am = a.slice(p, a.length - s);
  const bm = b.slice(p, b.length - s);
  const mid: Op[] = [];
  if ((am.length + 1) * (bm.length + 1) > MAX_CELLS) {
    for (const l of am) mid.push({ k: "-", line: l });
    for (const l of bm) mid.push({ k: "+", line: l });
  } else {
    // LCS table, then walk it.
    const w = bm.length + 1;
    const t = new Uint32Array((am.length + 1) * w);
    for (let i = am.length - 1; i >= 0; i--) {
      for (let j = bm.length - 1; j >= 0; j--) {
        t[i * w + j] = am[i] === bm[j] ? t[(i + 1) * w + j + 1]! + 1 : Math.max(t[(i + 1) * w + j]!, t[i * w + j + 1]!);
      }
    }
    let i = 0;
    let j = 0;
    while (i < am.length || j < bm.length) {
      if (i < am.length && j < bm.length && am[i] === bm[j]) {
        mid.push({ k: " ", line: am[i]! });
        i++;
        j++;
      } else if (i < am.length && (j === bm.length || t[(i + 1) * w + j]! >= t[i * w + j + 1]!)) {
        mid.push({ k: "-", line: am[i++]! }); // deletions first, as diff -u prints them
      } else {
        mid.push({ k: "+", line: bm[j++]! });
      }
    }
  }
  return [...a.slice(0, p).map((line): Op => ({ k: " ", line })), ...mid, ...a.slice(a.length - s).map((line): Op => ({ k: " ", line }))];
}

/** `diff -u`-style text, "" when equal. Line endings are not shown ("\r" is). */
export function unifiedDiff(before: string, after: string, nameBefore: string, nameAfter: string, context = 3): string {
  if (before === after) return "";
  const split = (t: string): string[] => (t === "" ? [] : t.replace(/\n$/, "").split("\n"));
  const all = ops(split(before), split(after));
  const out = [`--- ${nameBefore}`, `+++ ${nameAfter}`];
  let i = 0;
  while (i < all.length) {
    if (all[i]!.k === " ") {
      i++;
      continue;
    }
    const start = Math.max(0, i - context);
    let end = i;
    // Extend the hunk while the next change is within 2*context lines.
    for (;;) {
      while (end < all.length && all[end]!.k !== " ") end++;
      let next = end;
      while (next < all.length && all[next]!.k === " ") next++;
      if (next < all.length && next - end <= 2 * context) end = next;
      else break;
    }
    const stop = Math.min(all.length, end + context);
    const before0 = all.slice(0, start).filter((o) => o.k !== "+").length;
    const after0 = all.slice(0, start).filter((o) => o.k !== "-").length;
    const hunk = all.slice(start, stop);
    const nb = hunk.filter((o) => o.k !== "+").length;
    const na = hunk.filter((o) => o.k !== "-").length;
    out.push(`@@ -${before0 + (nb ? 1 : 0)},${nb} +${after0 + (na ? 1 : 0)},${na} @@`);
    for (const o of hunk) out.push(`${o.k}${o.line}`);
    i = stop;
  }
  return `${out.join("\n")}\n`;
}
