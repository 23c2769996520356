/**
 * What a parsed filter means for one snapshot: containerd v1.6
 * filters/filter.go selector.Match over the snapshot adaptor
 * metadata/adaptors.go (adaptSnapshot), as pure logic.
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
 * matchesWithin() is the bounded form the daemon uses: it counts the work in
 * steps (limits.ts), refuses a List over its budget and lets the event loop
 * run each time a slice of work is used.
 */
import { invalidArgument, resourceExhausted } from "../errors.ts";
import { type Info, isKind } from "../model.ts";
import { MATCH_STEPS_SLICE, MAX_MATCH_STEPS, SELECTOR_STEPS } from "./limits.ts";
import type { Filter, Op } from "./parser.ts";
import { compileRe2, type Re2, Re2SyntaxError } from "./regexp.ts";
import { runSync, runYielding } from "./run.ts";

export type FilterTarget = Pick<Info, "name" | "parent" | "kind" | "labels">;

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

/** The compiled operand; a Filter built by hand compiles (and rejects) it on first use. */
export function regexpFor(f: Filter, pattern: string): Re2 {
  let re = f.regexps.get(pattern);
  if (re === undefined) {
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

function compare(op: Exclude<Op, "~=">, operand: string, value: string, present: boolean): boolean {
  switch (op) {
    case "present":
      return present;
    case "==":
      return present && value === operand;
    case "!=":
      return value !== operand; // presence ignored, as in filter.go
  }
}

/** Counts one List's matching work; see limits.ts. */
export class MatchBudget {
  private total = 0;
  private slice = 0;

  /**
   * Charges `steps` for the next evaluation; true when the event loop should
   * run before it. Throws resource_exhausted over a limit.
   */
  charge(steps: number, what: () => string): boolean {
    if (steps > MATCH_STEPS_SLICE) {
      throw resourceExhausted(
        `filters: ${what()} would take ${steps} steps, more than MATCH_STEPS_SLICE = ${MATCH_STEPS_SLICE} per value (regexp instructions × characters): use a smaller regexp`,
      );
    }
    this.total += steps;
    if (this.total > MAX_MATCH_STEPS) {
      throw resourceExhausted(
        `filters: matching this List takes more than MAX_MATCH_STEPS = ${MAX_MATCH_STEPS} steps (regexp instructions × characters scanned): narrow the filters or use smaller regexps`,
      );
    }
    if (this.slice > 0 && this.slice + steps > MATCH_STEPS_SLICE) {
      this.slice = steps;
      return true;
    }
    this.slice += steps;
    return false;
  }
}

function* evaluate(f: Filter, info: FilterTarget, budget: MatchBudget | null): Generator<void, boolean, void> {
  for (const all of f.anyOf) {
    let ok = true;
    for (const sel of all) {
      const [value, present] = field(info, sel.fieldpath);
      if (sel.op === "~=") {
        const re = regexpFor(f, sel.value);
        const steps = re.programSize * (value.length + 1);
        const what = (): string => `matching ${sel.fieldpath.join(".")}~=${JSON.stringify(re.pattern.slice(0, 64))} against ${value.length} characters`;
        if (budget?.charge(steps, what)) yield;
        ok = re.test(value);
      } else {
        if (budget?.charge(SELECTOR_STEPS, () => "a selector")) yield;
        ok = compare(sel.op, sel.value, value, present);
      }
      if (!ok) break;
    }
    if (ok) return true;
  }
  return false;
}

/** Whether the snapshot matches any of the filter's AND-lists (unbounded: for trusted input). */
export function matches(f: Filter, info: FilterTarget): boolean {
  return runSync(evaluate(f, info, null));
}

/** matches() within `budget`, letting the event loop run whenever a slice of it is used. */
export function matchesWithin(f: Filter, info: FilterTarget, budget: MatchBudget): Promise<boolean> {
  return runYielding(evaluate(f, info, budget));
}
