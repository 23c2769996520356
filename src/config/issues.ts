/** Config errors: every problem names the file, line, key and value it is about. */
import { SnapshotterError } from "../errors.ts";

export interface ConfigIssue {
  /** File the problem is in; null when it comes from the overrides. */
  file: string | null;
  /** 1-based line, when known. */
  line: number | null;
  /** 1-based column, for TOML syntax errors. */
  column: number | null;
  /** Key as written in the TOML ("pool_name", "pool.block_size"); null: none. */
  key: string | null;
  /** The offending value, rendered as TOML; null when there is none. */
  value: string | null;
  /** The whole human-readable line: "file:line: key = value: what is wrong". */
  text: string;
}

/** Invalid configuration. The first problem's location is on the error itself. */
export class ConfigError extends SnapshotterError {
  readonly file: string | null;
  readonly line: number | null;
  readonly column: number | null;
  readonly key: string | null;
  readonly issues: readonly ConfigIssue[];
  constructor(issues: readonly ConfigIssue[], options?: { cause?: unknown }) {
    super("invalid_argument", issues.map((i) => i.text).join("\n"), options);
    this.name = "ConfigError";
    const first = issues[0];
    this.file = first?.file ?? null;
    this.line = first?.line ?? null;
    this.column = first?.column ?? null;
    this.key = first?.key ?? null;
    this.issues = issues;
  }
}

export interface Where {
  file: string | null;
  line: number | null;
  column?: number | null;
  /** Where a value without a file came from, as the operator typed it ("--data-size 2Q"). */
  origin?: string;
}

/** showKey false: the message names the key itself (unknown keys). */
export function makeIssue(loc: Where, key: string | null, value: string | null, message: string, showKey = true): ConfigIssue {
  let where = loc.file === null ? (loc.origin ?? "overrides") : loc.file;
  if (loc.file !== null && loc.line !== null) {
    where += `:${loc.line}`;
    if (loc.column !== undefined && loc.column !== null) where += `:${loc.column}`;
  }
  let subject = "";
  if (key !== null && showKey) subject = value !== null ? `${key} = ${value}: ` : `${key}: `;
  return { file: loc.file, line: loc.line, column: loc.column ?? null, key, value, text: `${where}: ${subject}${message}` };
}
