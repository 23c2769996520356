/**
 * The bounds on the work one List's filters can cause. A List's regexps are
 * compiled and matched on the event loop, so these keep any one List from
 * holding it (and other requests) for long, and from using much memory.
 *
 * Work is counted in "steps": a regexp match costs its program size times the
 * characters it scans (the bound of RE2's NFA; 6 to 50 ns a step measured on
 * an x86 host, the high end while re2js builds DFA states); any other
 * selector costs SELECTOR_STEPS.
 *
 * Static limits (on the request itself) are InvalidArgument; the work limit,
 * which depends on the stored data too, is ResourceExhausted.
 */

/** Distinct "~=" patterns per List: each compiled pattern may keep up to 8 MiB of DFA cache (re2js). */
export const MAX_FILTER_REGEXPS = 16;

/** Characters (UTF-16 code units) of one "~=" pattern: bounds its compile time (~45 ms at most). */
export const MAX_REGEXP_LENGTH = 1024;

/** Instructions of one compiled pattern (`a{1000}` is 1002, a 1024-character literal 1026): bounds its memory. */
export const MAX_REGEXP_PROGRAM = 2048;

/** Instructions of all of a List's compiled patterns together: bounds compile time and memory per List. */
export const MAX_FILTER_PROGRAM = 8192;

/**
 * Steps between two yields to the event loop while a List matches: ~13 ms at
 * the slowest step measured (~50 ns: re2js building DFA states on a first
 * match), so a request arriving meanwhile waits a few such slices at most. A
 * single match cannot be split, so this is also the most one value may cost:
 * a regexp of n instructions matches values of up to 2^18/n characters (64
 * instructions: any label, which is at most 4096 bytes); a costlier match is
 * refused rather than hold other requests up.
 */
export const MATCH_STEPS_SLICE = 2 ** 18;

/** Steps one List may spend matching in all (a few seconds of CPU at worst, other requests served meanwhile). */
export const MAX_MATCH_STEPS = 2 ** 28;

/** What evaluating a selector that is not a regexp (a label lookup and a compare: 60-100 ns measured) counts, in steps. */
export const SELECTOR_STEPS = 16;
