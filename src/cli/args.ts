/** A small, strict flag parser: --flag value, --flag=value, booleans, positionals; -h is --help. */
import { closest } from "../config/document.ts";

/** ` (did you mean "x"?)` when a known word is close, else the list of them. */
export function didYouMean(word: string, known: readonly string[], prefix = ""): string {
  const best = closest(word, known);
  return best !== null ? ` (did you mean "${prefix}${best}"?)` : ` (one of: ${known.map((k) => prefix + k).join(", ")})`;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

export interface FlagSpec {
  /** Takes a value (default) or is a boolean switch. */
  type?: "string" | "boolean";
  help: string;
  default?: string;
}

export interface Parsed {
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parseArgs(argv: string[], spec: Record<string, FlagSpec>): Parsed {
  const flags: Parsed["flags"] = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === "-h" && spec.help !== undefined) {
      flags.help = true;
      continue;
    }
    if (!a.startsWith("--")) {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf("=");
    const name = a.slice(2, eq === -1 ? undefined : eq);
    const s = spec[name];
    if (!s) throw new UsageError(`unknown flag --${name}${didYouMean(name, Object.keys(spec), "--")}`);
    if (s.type === "boolean") {
      if (eq !== -1) {
        const v = a.slice(eq + 1);
        if (v !== "true" && v !== "false") throw new UsageError(`--${name} takes no value (or =true/=false)`);
        flags[name] = v === "true";
      } else flags[name] = true;
      continue;
    }
    const v = eq !== -1 ? a.slice(eq + 1) : argv[++i];
    if (v === undefined) throw new UsageError(`--${name} needs a value`);
    flags[name] = v;
  }
  return { flags, positionals };
}

export function flagHelp(spec: Record<string, FlagSpec>): string {
  const rows = Object.entries(spec).map(([k, s]) => [
    `  --${k}${s.type === "boolean" ? "" : " VALUE"}`,
    `${s.help}${s.default !== undefined ? ` (default ${s.default})` : ""}`,
  ]);
  const w = Math.max(...rows.map((r) => r[0]!.length)) + 2;
  return rows.map(([a, b]) => a!.padEnd(w) + b).join("\n");
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.flags[name];
  return typeof v === "string" ? v : undefined;
}
