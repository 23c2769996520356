/**
 * thinsnap configuration: a TOML file shaped after containerd's devmapper
 * snapshotter config (snapshots/devmapper/config.go, containerd 1.6), plus
 * thinsnap's own keys and an optional [pool] table for a loopback-backed
 * thin-pool that thinsnap creates itself. Every key is described once, in
 * keys.ts; this module layers file, overrides and defaults and validates.
 *
 * Two document forms are read: thinsnap's own file, and a containerd
 * config.toml, whose [plugins."io.containerd.snapshotter.v1.devmapper"]
 * (version >= 2) or [plugins.devmapper] (version 1) section is read and the
 * rest ignored (if both are present, `version` picks).
 *
 * Unknown keys are errors. Every error is a ConfigError naming the file, the
 * line, the key and the value.
 */
import { readFile } from "node:fs/promises";
import { emptyLayer, type Layer, type Parsed, parseDocument, POOL_TABLE, readInto } from "./document.ts";
import { ConfigError, type ConfigIssue, makeIssue } from "./issues.ts";
import { ValueError } from "./kinds.ts";
import {
  type AllValues,
  dataFileUnder,
  DEFAULT_POOL_NAME,
  type Entry,
  type KeyContext,
  type KeyEntry,
  keyName,
  MAIN_KEYS,
  POOL_KEYS,
} from "./keys.ts";
import type { Config, ConfigOverrides, MainValues, PoolConfig } from "./types.ts";

export { ConfigError, type ConfigIssue } from "./issues.ts";
export { CONTAINERD_PLUGIN_ID, CONTAINERD_PLUGIN_URI } from "./document.ts";
export * from "./types.ts";

export const DEFAULT_CONFIG_PATH = "/etc/thinsnap/config.toml";

// ---------------------------------------------------------------------------
// Overrides

/** Sets a key's value in the layer, as given by the caller (no file, no line). */
function override<V, F extends keyof V>(layer: Layer, e: Entry<V, F> & { table: string }, value: V[F], into: Partial<V>): void {
  into[e.field] = value;
  layer.where.set(keyName(e), { file: null, line: () => null, value: e.kind.literal(value) });
}

function applyOverrides(layer: Layer, o: ConfigOverrides): void {
  const { minFreeSpace, minFreeSpacePercent, pool, ...rest } = o;
  const main: Partial<MainValues> = { ...rest };
  // min_free_space is one key stored in two fields: bytes or a percentage.
  if (minFreeSpace !== undefined || minFreeSpacePercent !== undefined) {
    main.minFreeSpace = { bytes: minFreeSpace ?? 0n, percent: minFreeSpacePercent ?? null };
  }
  const apply = <V, F extends keyof V>(e: Entry<V, F> & { table: string }, from: Partial<V>, into: Partial<V>): void => {
    const v = from[e.field];
    if (v !== undefined) override(layer, e, v as V[F], into);
  };
  for (const e of MAIN_KEYS) apply(e, main, layer.main);
  if (pool === null) layer.pool = undefined;
  else if (pool !== undefined) {
    const into: Partial<PoolConfig> = layer.pool ?? {};
    layer.pool = into;
    for (const e of POOL_KEYS) apply(e, pool, into);
  }
}

/**
 * Keys given as text (command-line flags: "--log-level debug"), read with
 * their key's kind; a bad one is an issue located at "overrides".
 */
function applyTexts(layer: Layer, texts: ReadonlyMap<KeyEntry, string>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const read = <V, F extends keyof V>(e: Entry<V, F>, text: string, into: Partial<V>): string =>
    e.kind.literal(readInto(e, e.kind.fromFlag?.(text) ?? text, () => null, into));
  for (const [e, text] of texts) {
    const origin = `--${e.flag ?? keyName(e)} ${/^[\w@%+=:,./-]+$/.test(text) ? text : JSON.stringify(text)}`;
    try {
      const shown = e.table === "" ? read(e, text, layer.main) : read(e, text, (layer.pool ??= {}));
      layer.where.set(keyName(e), { file: null, line: () => null, value: shown, origin });
    } catch (err) {
      if (!(err instanceof ValueError)) throw err;
      issues.push(makeIssue({ file: null, line: null, origin }, keyName(e), JSON.stringify(text), err.message, false));
    }
  }
  return issues;
}

// ---------------------------------------------------------------------------
// Defaults and validation

/** Resolves every key of the layer (given, default or derived) and checks each. */
function resolve(layer: Layer): Config {
  const { main, pool } = resolveValues(layer);
  return toConfig(main, pool);
}

function resolveValues(layer: Layer): { main: MainValues; pool: PoolConfig | null } {
  const missing = MAIN_KEYS.find((e) => e.default === undefined && e.derive === undefined && layer.main[e.field] === undefined);
  if (missing !== undefined) {
    const where = layer.file === null ? null : layer.missing ? `${layer.file} (not found)` : layer.file;
    const how = missing.flag !== undefined ? `pass --${missing.flag}` : "pass it as an override";
    const why = `required: ${missing.summary} (set ${missing.key} in the config file or ${how})`;
    throw new ConfigError([{ ...makeIssue({ file: where, line: null }, missing.key, null, why), file: layer.file }]);
  }
  const main: Partial<MainValues> = { ...layer.main };
  const pool: Partial<PoolConfig> | null = layer.pool === undefined ? null : { ...layer.pool };
  const pending = new Set<string>();
  const valueOf = <V, F extends keyof V>(e: Entry<V, F>, into: Partial<V>): V[F] => {
    const have = into[e.field];
    if (have !== undefined) return have as V[F];
    const id = String(e.field);
    if (pending.has(id)) throw new Error(`config: the defaults of ${id} depend on themselves`);
    pending.add(id);
    const v = e.derive !== undefined ? e.derive(ctx) : e.default;
    pending.delete(id);
    if (v === undefined) throw new Error(`config: ${id} has no default`);
    into[e.field] = v;
    return v;
  };
  const ctx: KeyContext = {
    pooled: pool !== null,
    get<K extends keyof AllValues>(field: K): AllValues[K] {
      const m = MAIN_KEYS.find((e) => e.field === field);
      if (m !== undefined) return valueOf(m, main) as AllValues[K];
      const p = POOL_KEYS.find((e) => e.field === field);
      if (p === undefined || pool === null) throw new Error(`config: no value for ${String(field)}`);
      return valueOf(p, pool) as AllValues[K];
    },
    given: (field) => {
      const m = MAIN_KEYS.find((e) => e.field === field);
      if (m !== undefined) return layer.main[m.field] !== undefined;
      const p = POOL_KEYS.find((e) => e.field === field);
      return p !== undefined && layer.pool?.[p.field] !== undefined;
    },
  };

  const issues: ConfigIssue[] = [];
  const check = <V, F extends keyof V>(e: Entry<V, F> & { table: string }, into: Partial<V>): void => {
    const value = valueOf(e, into); // every key gets its value, checked or not
    const problem = e.check?.(value, ctx) ?? null;
    if (problem === null) return;
    const name = keyName(e);
    const w = layer.where.get(name);
    const loc = w !== undefined ? { file: w.file, line: w.line(), origin: w.origin } : { file: layer.file, line: null };
    const why = w === undefined ? `${problem} (default or derived value)` : problem;
    issues.push(makeIssue(loc, name, w?.value ?? null, why, w?.origin === undefined));
  };
  for (const e of MAIN_KEYS) check(e, main);
  if (pool !== null) for (const e of POOL_KEYS) check(e, pool);
  if (issues.length > 0) throw new ConfigError(issues);
  return { main: main as MainValues, pool: pool as PoolConfig | null }; // valueOf filled every key
}

function toConfig(main: MainValues, pool: PoolConfig | null): Config {
  const { minFreeSpace, ...rest } = main;
  return { ...rest, minFreeSpace: minFreeSpace.bytes, minFreeSpacePercent: minFreeSpace.percent, pool };
}

/** The defaults of every key but pool_name (which is required). */
export const DEFAULTS: Readonly<Omit<Config, "poolName">> = Object.freeze(
  (({ poolName: _, ...rest }: Config) => rest)(resolve({ ...emptyLayer(null, false), main: { poolName: "p" } })),
);

/** Defaults of the [pool] keys that do not depend on other keys. */
export const POOL_DEFAULTS: Readonly<Partial<PoolConfig>> = Object.freeze(
  Object.fromEntries(POOL_KEYS.filter((e) => e.default !== undefined).map((e) => [e.field, e.default])),
);

/** Every key's value, per key, with a [pool] table and the given pool_name: what the example file shows. */
export function defaultValues(poolName: string): { main: MainValues; pool: PoolConfig } {
  const { main, pool } = resolveValues({ ...emptyLayer(null, false), main: { poolName }, pool: {} });
  if (pool === null) throw new Error("unreachable: [pool] was given");
  return { main, pool };
}

// ---------------------------------------------------------------------------
// Entry points

/**
 * Resolves and validates; when some keys could not be read, the validation
 * problems of the other keys are reported with them, in line order.
 */
function finish(parsed: Parsed): Config {
  const { layer, issues } = parsed;
  if (issues.length === 0) return resolve(layer);
  const reported = new Set(issues.map((i) => i.key));
  let more: readonly ConfigIssue[] = [];
  const main = { ...layer.main };
  if (main.poolName === undefined && reported.has("pool_name")) main.poolName = "placeholder";
  try {
    resolve({ ...layer, main });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    more = e.issues.filter((i) => !reported.has(i.key));
  }
  const all = [...issues, ...more].sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
  throw new ConfigError(all);
}

/**
 * Parses and validates a configuration document (thinsnap's own or a
 * containerd config.toml). Pure: `file` is used only in messages.
 * Throws ConfigError.
 */
export function parseConfig(text: string, file: string): Config {
  return finish(parseDocument(text, file));
}

/**
 * The embedded default, used when there is no config file at all: a
 * file-backed pool named DEFAULT_POOL_NAME under root_path. Its data size is
 * the one thing not fixed in the key table: the caller answers it for the
 * data file (the size of the file when it exists, else one suited to the
 * free space; see src/pool/zero-config.ts).
 */
export interface EmbeddedDefault {
  dataSize(dataFile: string): bigint;
}

/** Fills what neither file nor flags set with the embedded default. */
function applyEmbedded(layer: Layer, embedded: EmbeddedDefault): void {
  layer.main.poolName ??= DEFAULT_POOL_NAME;
  const pool = (layer.pool ??= {});
  if (pool.dataSize === undefined) {
    const root = layer.main.rootPath ?? DEFAULTS.rootPath;
    pool.dataSize = embedded.dataSize(pool.dataFile ?? dataFileUnder(root));
  }
}

/**
 * Reads the configuration file, applies the overrides on top and validates.
 * path null means DEFAULT_CONFIG_PATH, which may be absent (then defaults
 * are used, and with `embedded` the embedded default); an explicit path that
 * does not exist is an error. `texts` are overrides given as text
 * (command-line flags), read like the file's values. Throws ConfigError.
 */
export async function loadConfig(
  path: string | null,
  overrides: ConfigOverrides = {},
  texts: ReadonlyMap<KeyEntry, string> = new Map(),
  embedded?: EmbeddedDefault,
): Promise<Config> {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string | null = null;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = typeof e === "object" && e !== null && "code" in e ? (e as { code: unknown }).code : undefined;
    if (!(code === "ENOENT" && path === null)) {
      const why =
        code === "ENOENT" ? "config file not found" : `cannot read config file: ${e instanceof Error ? e.message : String(e)}`;
      throw new ConfigError([makeIssue({ file, line: null }, null, null, why)], { cause: e });
    }
  }
  const parsed: Parsed = text !== null ? parseDocument(text, file) : { layer: emptyLayer(file, true), issues: [] };
  applyOverrides(parsed.layer, overrides);
  parsed.issues.push(...applyTexts(parsed.layer, texts));
  if (text === null && embedded !== undefined && parsed.issues.length === 0) applyEmbedded(parsed.layer, embedded);
  return finish(parsed);
}

export { POOL_TABLE };
