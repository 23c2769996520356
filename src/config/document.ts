/**
 * Reads a TOML document (thinsnap's own, or a containerd config.toml's
 * devmapper section) into a Layer: the values of the keys it sets, and where
 * each was set. Problems with single keys (unknown, wrong type, unreadable)
 * are collected, not thrown, so that every one is reported.
 */
import { parse, TomlError } from "smol-toml";
import type { TomlTable, TomlValue } from "smol-toml";
import { ConfigError, type ConfigIssue, makeIssue } from "./issues.ts";
import { KeyLines } from "./key-lines.ts";
import { isTable, render, typeName, ValueError } from "./kinds.ts";
import { type Entry, keyName, MAIN_KEYS, POOL_KEYS } from "./keys.ts";
import type { MainValues, PoolConfig } from "./types.ts";

/** containerd's plugin URI for its devmapper snapshotter (config version >= 2). */
export const CONTAINERD_PLUGIN_URI = "io.containerd.snapshotter.v1.devmapper";
/** containerd's plugin ID, the section name in a version 1 config. */
export const CONTAINERD_PLUGIN_ID = "devmapper";
/** The table of a pool thinsnap creates itself. */
export const POOL_TABLE = "pool";

export interface Loc {
  file: string | null;
  /** Asked only for a message: finding a line is the costly part (key-lines.ts). */
  line(): number | null;
  /** Rendered value, for messages. */
  value: string | null;
  /** Set by a command-line flag: the flag and value as typed. */
  origin?: string;
}

export interface Layer {
  main: Partial<MainValues>;
  /** undefined: no [pool]; an object: [pool] given (maybe empty). */
  pool: Partial<PoolConfig> | undefined;
  /** Key name ("pool_name", "pool.data_size") -> where it was set. */
  where: Map<string, Loc>;
  /** The file (for issues not tied to a key), null for none. */
  file: string | null;
  /** The (default) file did not exist: defaults were used. */
  missing: boolean;
}

export interface Parsed {
  layer: Layer;
  /** Problems with single keys (unknown keys, wrong types, unparsable values). */
  issues: ConfigIssue[];
}

export function emptyLayer(file: string | null, missing: boolean): Layer {
  return { main: {}, pool: undefined, where: new Map(), file, missing };
}

/** Reads one value into `into`; throws ValueError. */
export function readInto<V, F extends keyof V>(e: Entry<V, F>, v: TomlValue, line: () => string | null, into: Partial<V>): V[F] {
  const value = e.kind.read(v, line);
  into[e.field] = value;
  return value;
}

const MAIN_NAMES = MAIN_KEYS.map((e) => e.key);
const POOL_NAMES = POOL_KEYS.map((e) => e.key);
const CONTAINERD_NAMES = MAIN_KEYS.filter((e) => e.containerd).map((e) => e.key);

function editDistance(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0] ?? 0;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j] ?? 0;
      d[j] = Math.min((d[j] ?? 0) + 1, (d[j - 1] ?? 0) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length] ?? 0;
}

/** The known word closest to `word` (at most 2 edits away), or null. Also the CLI's "did you mean". */
export function closest(word: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const k of known) {
    const dist = editDistance(word.toLowerCase(), k);
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  return best;
}

/** ` (did you mean "x"?)` for a close known key, else the list of known keys. */
function hint(key: string, known: readonly string[]): string {
  const best = closest(key, known);
  return best !== null ? ` (did you mean "${best}"?)` : ` (known: ${known.join(", ")})`;
}

interface Section {
  kind: "thinsnap" | "containerd";
  table: TomlTable;
  prefix: string[];
}

export function sectionLabel(prefix: readonly string[]): string {
  return prefix.map((p) => (/^[A-Za-z0-9_-]+$/.test(p) ? p : JSON.stringify(p))).join(".");
}

/** Top-level keys of a containerd config.toml that thinsnap's own file never has. */
const CONTAINERD_TOP_KEYS = ["version", "proxy_plugins", "grpc", "ttrpc", "state", "disabled_plugins", "required_plugins", "oom_score", "imports", "timeouts", "stream_processors", "cgroup"];

function noSection(loc: { file: string; line: number | null }, has: string): ConfigError {
  const what =
    `looks like a containerd config (it has ${has}) but has no ` +
    `[plugins."${CONTAINERD_PLUGIN_URI}"] or [plugins.${CONTAINERD_PLUGIN_ID}] section: give thinsnap its own ` +
    `config file (thinsnap config example), or a containerd config with that section`;
  return new ConfigError([makeIssue(loc, null, null, what)]);
}

function pickSection(doc: TomlTable, file: string, lines: KeyLines): Section {
  if (!("plugins" in doc)) {
    const foreign = CONTAINERD_TOP_KEYS.filter((k) => k in doc);
    const first = foreign[0];
    if (first !== undefined) throw noSection({ file, line: lines.line([first]) }, foreign.join(", "));
    return { kind: "thinsnap", table: doc, prefix: [] };
  }
  const plugins = doc["plugins"];
  const loc = { file, line: lines.line(["plugins"]) };
  if (!isTable(plugins)) {
    throw new ConfigError([makeIssue(loc, "plugins", null, "must be a table (a containerd config's [plugins])")]);
  }
  const long = plugins[CONTAINERD_PLUGIN_URI];
  const short = plugins[CONTAINERD_PLUGIN_ID];
  const version = doc["version"];
  let name: string;
  if (long !== undefined && short !== undefined) {
    name = typeof version === "bigint" && version >= 2n ? CONTAINERD_PLUGIN_URI : CONTAINERD_PLUGIN_ID;
  } else if (long !== undefined) {
    name = CONTAINERD_PLUGIN_URI;
  } else if (short !== undefined) {
    name = CONTAINERD_PLUGIN_ID;
  } else {
    throw noSection(loc, "[plugins]");
  }
  const prefix = ["plugins", name];
  const table = plugins[name];
  if (!isTable(table)) {
    throw new ConfigError([makeIssue({ file, line: lines.line(prefix) }, sectionLabel(prefix), null, "must be a table")]);
  }
  return { kind: "containerd", table, prefix };
}

function parseToml(text: string, file: string): TomlTable {
  try {
    return parse(text, { integersAsBigInt: true });
  } catch (e) {
    if (!(e instanceof TomlError)) throw e;
    const what = (e.message.split("\n")[0] ?? e.message).replace(/^Invalid TOML document: /, "");
    const loc = { file, line: e.line, column: e.column };
    throw new ConfigError([makeIssue(loc, null, null, `TOML syntax error: ${what}\n${e.codeblock.trimEnd()}`)], { cause: e });
  }
}

export function parseDocument(text: string, file: string): Parsed {
  const doc = parseToml(text, file);
  const lines = new KeyLines(text);
  const section = pickSection(doc, file, lines);
  const layer = emptyLayer(file, false);
  const issues: ConfigIssue[] = [];

  /** Reads key `path` of the section with entry `e` into `into`. */
  const read = <V, F extends keyof V>(e: Entry<V, F>, name: string, path: string[], v: TomlValue, into: Partial<V>): void => {
    const full = section.prefix.concat(path);
    try {
      readInto(e, v, () => lines.lineText(full), into);
      layer.where.set(name, { file, line: () => lines.line(full), value: render(v) });
    } catch (err) {
      if (!(err instanceof ValueError)) throw err;
      issues.push(makeIssue({ file, line: lines.line(full) }, name, render(v), err.message));
    }
  };
  const unknown = (path: string[], name: string, message: string): void => {
    issues.push(makeIssue({ file, line: lines.line(section.prefix.concat(path)) }, name, null, message, false));
  };

  for (const key of Object.keys(section.table)) {
    const v = section.table[key] as TomlValue;
    if (section.kind === "thinsnap" && key === POOL_TABLE) {
      if (!isTable(v)) {
        const loc = { file, line: lines.line([key]) };
        issues.push(makeIssue(loc, key, render(v), `must be a table ([${POOL_TABLE}]), not ${typeName(v)}`));
        continue;
      }
      const pool: Partial<PoolConfig> = {};
      layer.pool = pool;
      layer.where.set(POOL_TABLE, { file, line: () => lines.line([key]), value: null });
      for (const pk of Object.keys(v)) {
        const e = POOL_KEYS.find((x) => x.key === pk);
        if (e === undefined) unknown([key, pk], `${key}.${pk}`, `unknown key "${pk}" in [${POOL_TABLE}]${hint(pk, POOL_NAMES)}`);
        else read(e, keyName(e), [key, pk], v[pk] as TomlValue, pool);
      }
      continue;
    }
    const e = MAIN_KEYS.find((x) => x.key === key);
    if (section.kind === "containerd" && e?.containerd !== true) {
      const label = `[${sectionLabel(section.prefix)}]`;
      unknown(
        [key],
        key,
        e !== undefined || key === POOL_TABLE
          ? `"${key}" is a thinsnap setting, not a containerd devmapper one: put it in thinsnap's own config file ` +
              `or pass it as an override (${label} may only hold ${CONTAINERD_NAMES.join(", ")})`
          : `unknown key "${key}" in ${label}${hint(key, CONTAINERD_NAMES)}`,
      );
    } else if (e === undefined) {
      unknown([key], key, `unknown key "${key}"${hint(key, [...MAIN_NAMES, POOL_TABLE])}`);
    } else {
      read(e, key, [key], v, layer.main);
    }
  }
  return { layer, issues };
}
