/**
 * The filter language (src/filters) as SQLite: a WHERE fragment over
 * `snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`, with labels in
 * `labels(snapshot_id, key, value)`, so a List reads only the rows that can
 * match. Store.select is its one user; exported for the equivalence tests.
 */
import type { Filter, Selector } from "../filters/parser.ts";
import { regexpFor } from "../filters/match.ts";
import { KINDS } from "../model.ts";

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
