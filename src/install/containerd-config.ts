/**
 * What thinsnap needs in containerd's config.toml, per config version and
 * containerd release, and the in-place edit of an operator's file that adds
 * it and takes it out again (pure: string -> string).
 *
 * The edit never reformats: every line it does not need to touch stays byte
 * for byte. It adds a key to a table the file already has (one line, marked),
 * replaces a key set to another value (the old line kept above it, commented
 * and marked), and appends the tables the file lacks in one marked block at
 * the end. `revertEdit` removes exactly those lines, so
 * revertEdit(applyEdit(x)) === x; the result is re-parsed and checked before
 * it is returned, and a file the edit cannot handle (e.g. a table written as
 * an inline table) is an error that prints the lines to add by hand.
 */
import { parse, TomlError } from "smol-toml";
import type { TomlTable, TomlValue } from "smol-toml";
import { DEFAULT_CONFIG_PATH } from "../config/config.ts";
import { hasPrefix, joinLines, layout, samePath, splitLines, tomlKey, TomlLayoutError } from "./toml-lines.ts";

/** containerd config.toml `version`: 1 (short plugin names), 2 (containerd 1.x), 3 (containerd 2.x). */
export type ConfigVersion = 1 | 2 | 3;

export interface ContainerdVersion {
  major: number;
  minor: number;
  patch: number;
}

/** The snapshotter's name in containerd (`ctr --snapshotter thinsnap`, the proxy plugin's table). */
export const SNAPSHOTTER_NAME = "thinsnap";
/** containerd's own default snapshotter on Linux, which pulls must keep working for. */
export const CONTAINERD_DEFAULT_SNAPSHOTTER = "overlayfs";

/** "containerd github.com/containerd/containerd 1.6.20~ds1 …" or "… /v2 v2.1.4 …" -> 1.6.20 / 2.1.4. */
export function parseContainerdVersion(out: string): ContainerdVersion | null {
  const m = /^\S+\s+\S+\s+v?(\d+)\.(\d+)\.(\d+)/.exec(out.trim());
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) };
}

export const formatVersion = (v: ContainerdVersion): string => `${v.major}.${v.minor}.${v.patch}`;

/** The config version a new file for this containerd is written in. */
export const configVersionFor = (v: ContainerdVersion): 2 | 3 => (v.major >= 2 ? 3 : 2);

const atLeast = (v: ContainerdVersion, major: number, minor: number): boolean =>
  v.major > major || (v.major === major && v.minor >= minor);

export class ContainerdConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ContainerdConfigError";
  }
}

function parseToml(text: string, file: string): TomlTable {
  try {
    return parse(text);
  } catch (e) {
    const where = e instanceof TomlError ? ` (line ${e.line})` : "";
    throw new ContainerdConfigError(`${file} is not valid TOML${where}: ${(e as Error).message.split("\n")[0]}`);
  }
}

/**
 * The file's config version, as containerd reads it: the `version` key; none
 * means 1. null for a file with no settings at all (missing, empty, all
 * comments), whose version the caller picks from the containerd it runs.
 */
export function detectConfigVersion(text: string, file = "config.toml"): ConfigVersion | null {
  const doc = parseToml(text, file);
  if (Object.keys(doc).length === 0) return null;
  const v = doc.version;
  if (v === undefined) return 1;
  if (v === 1 || v === 2 || v === 3) return v;
  throw new ContainerdConfigError(`${file}: version = ${String(v)} is not a containerd config version (1, 2 or 3)`);
}

/** One key thinsnap needs set: `[table] key = "value"`. */
export interface Setting {
  table: string[];
  key: string;
  value: string;
  /** One line for the snippet's comment: why the line is there. */
  why: string;
}

/** One `[[table]]` element thinsnap needs, found by its `snapshotter`. */
export interface ArrayEntry {
  table: string[];
  fields: { platform: string; snapshotter: string };
  why: string;
  /** Added only when the file has no such array yet (the default it replaces). */
  onlyWithNewArray?: boolean;
}

export interface Plan {
  version: ConfigVersion;
  settings: Setting[];
  entries: ArrayEntry[];
}

export interface PlanOptions {
  /** thinsnap's socket (the proxy plugin's address). */
  address: string;
  /** What CRI reports to kubelet as the image filesystem (exports.root): thinsnap's root_path. */
  exportsRoot: string;
  /** OCI platform of the node, e.g. "linux/amd64" (transfer service unpack_config). */
  platform: string;
  /** Make thinsnap CRI's default snapshotter (for every runtime handler without its own). */
  criDefault: boolean;
  /** Runtime handlers (e.g. "kata") that get thinsnap as their snapshotter. */
  runtimeHandlers: string[];
  /** The containerd that reads the file; null when unknown (then: the newest the file version can mean). */
  containerd: ContainerdVersion | null;
}

const TRANSFER = "io.containerd.transfer.v1.local";
/** CRI's plugin table per config version. */
const CRI_V1 = ["plugins", "cri"];
const CRI_V2 = ["plugins", "io.containerd.grpc.v1.cri"];
const CRI_IMAGES_V3 = ["plugins", "io.containerd.cri.v1.images"];
const CRI_RUNTIME_V3 = ["plugins", "io.containerd.cri.v1.runtime"];

/** A runtime handler name as CRI's config and TOML keys accept it. */
const HANDLER = /^[A-Za-z0-9_.-]{1,63}$/;

/** The settings thinsnap needs in a config of `version` read by `o.containerd`. */
export function planFor(version: ConfigVersion, o: PlanOptions): Plan {
  const name = SNAPSHOTTER_NAME;
  const cd = o.containerd;
  for (const h of o.runtimeHandlers) {
    if (!HANDLER.test(h)) throw new ContainerdConfigError(`runtime handler "${h}": use letters, digits, ".", "_" or "-"`);
  }
  const proxy = ["proxy_plugins", name];
  const settings: Setting[] = [
    { table: proxy, key: "type", value: "snapshot", why: "a proxy snapshotter: containerd's Snapshots API on a unix socket" },
    { table: proxy, key: "address", value: o.address, why: `thinsnap's socket (address in ${DEFAULT_CONFIG_PATH})` },
  ];
  const entries: ArrayEntry[] = [];
  if (version >= 2) {
    settings.push({
      table: [...proxy, "exports"],
      key: "root",
      value: o.exportsRoot,
      why: "what CRI (1.7.16+, 2.x) reports to kubelet as the image filesystem: thinsnap's root_path",
    });
  }
  // Pulls through the transfer service (ctr in 1.7+, CRI in 2.1+) unpack only
  // for the snapshotters listed; a list replaces containerd's default one.
  if (version >= 2 && (cd === null || atLeast(cd, 1, 7))) {
    const table = ["plugins", TRANSFER, "unpack_config"];
    entries.push(
      {
        table,
        fields: { platform: o.platform, snapshotter: CONTAINERD_DEFAULT_SNAPSHOTTER },
        why: "the default snapshotter's entry, which a new list would otherwise drop",
        onlyWithNewArray: true,
      },
      { table, fields: { platform: o.platform, snapshotter: name }, why: "pulls through the transfer service may unpack into thinsnap" },
    );
  }
  const why = "CRI's default snapshotter: pods whose runtime handler names none use thinsnap";
  if (version === 1) {
    if (o.runtimeHandlers.length) {
      throw new ContainerdConfigError(
        "a version 1 config has no per-runtime snapshotter: make it version 2 (plugins under their full names) first",
      );
    }
    if (o.criDefault) settings.push({ table: [...CRI_V1, "containerd"], key: "snapshotter", value: name, why });
  } else if (version === 2) {
    if (o.criDefault) settings.push({ table: [...CRI_V2, "containerd"], key: "snapshotter", value: name, why });
    if (o.runtimeHandlers.length && cd !== null && !atLeast(cd, 1, 7)) {
      throw new ContainerdConfigError(
        `containerd ${formatVersion(cd)} has no per-runtime snapshotter (1.7+); use CRI's default snapshotter instead`,
      );
    }
    if (o.runtimeHandlers.length && cd !== null && cd.major >= 2) {
      throw new ContainerdConfigError(
        `containerd ${formatVersion(cd)} reads this version 2 config through a migration that has no per-handler image ` +
          `platforms: migrate it first ("containerd config migrate > config.toml.new", check, move into place)`,
      );
    }
    for (const h of o.runtimeHandlers) {
      settings.push({
        table: [...CRI_V2, "containerd", "runtimes", h],
        key: "snapshotter",
        value: name,
        why: `runtime handler ${h}: its containers' snapshots come from thinsnap (containerd 1.7+)`,
      });
    }
  } else {
    if (o.criDefault) settings.push({ table: CRI_IMAGES_V3, key: "snapshotter", value: name, why });
    for (const h of o.runtimeHandlers) {
      settings.push(
        {
          table: [...CRI_RUNTIME_V3, "containerd", "runtimes", h],
          key: "snapshotter",
          value: name,
          why: `runtime handler ${h}: its containers' snapshots come from thinsnap`,
        },
        {
          table: [...CRI_IMAGES_V3, "runtime_platforms", h],
          key: "snapshotter",
          value: name,
          why: `and its images are pulled into thinsnap (before containerd 2.3 pulls ignore the line above without this one)`,
        },
      );
    }
  }
  return { version, settings, entries };
}

// ---------------------------------------------------------------------------
// Rendering: the snippets and the appended block share it

function renderValue(v: string): string {
  return JSON.stringify(v);
}

/** Tables with their keys, in the plan's order, as fresh TOML (comments say why). */
export function renderTables(settings: readonly Setting[], entries: readonly ArrayEntry[], indent = "  "): string[] {
  const out: string[] = [];
  const groups: { table: string[]; rows: Setting[] }[] = [];
  for (const s of settings) {
    const g = groups.find((x) => samePath(x.table, s.table));
    if (g) g.rows.push(s);
    else groups.push({ table: s.table, rows: [s] });
  }
  const gap = (): void => {
    if (out.length) out.push("");
  };
  for (const g of groups) {
    gap();
    out.push(`[${tomlKey(g.table)}]`);
    for (const s of g.rows) out.push(`${indent}# ${s.why}`, `${indent}${tomlKey([s.key])} = ${renderValue(s.value)}`);
  }
  for (const e of entries) {
    gap();
    out.push(`# ${e.why}`, `[[${tomlKey(e.table)}]]`);
    out.push(`${indent}platform = ${renderValue(e.fields.platform)}`, `${indent}snapshotter = ${renderValue(e.fields.snapshotter)}`);
  }
  return out;
}

// ---------------------------------------------------------------------------
// The edit

const MARK = "# thinsnap-install";
/** Suffix of a line the edit added (removed on revert). */
export const ADDED = `  ${MARK}: added`;
/** Prefix of an operator's line the edit replaced (restored on revert). */
export const WAS = `${MARK}: was: `;
const BEGIN = `${MARK}: begin`;
const END = `${MARK}: end`;
const CREATED = " (file created)";

export interface EditResult {
  text: string;
  /** One line per change, for printing; empty when the file already had everything. */
  changes: string[];
}

function lookup(doc: TomlTable, path: readonly string[]): TomlValue | undefined {
  let v: TomlValue | undefined = doc;
  for (const p of path) {
    if (v === undefined || v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Date) return undefined;
    v = (v as TomlTable)[p];
  }
  return v;
}

function hasEntry(doc: TomlTable, e: ArrayEntry): boolean {
  const arr = lookup(doc, e.table);
  return Array.isArray(arr) && arr.some((x) => typeof x === "object" && x !== null && (x as TomlTable).snapshotter === e.fields.snapshotter);
}

/** Lines to paste by hand when the automatic edit cannot be made. */
export function manualLines(plan: Plan): string {
  return renderTables(plan.settings, plan.entries).join("\n");
}

/**
 * Adds the plan's settings to a containerd config (null: the file does not
 * exist yet). Idempotent: a file that has them all comes back unchanged.
 */
export function applyEdit(original: string | null, plan: Plan, file = "config.toml"): EditResult {
  const text = original ?? "";
  const doc = parseToml(text, file);
  const lines = splitLines(text);
  let lay;
  try {
    lay = layout(lines.text);
  } catch (e) {
    if (e instanceof TomlLayoutError) throw new ContainerdConfigError(`${file}: ${e.message}`);
    throw e;
  }
  const eolStyle = lines.eol.find((x) => x !== "") ?? "\n";
  const n = lines.text.length;
  const before: string[][] = Array.from({ length: n }, () => []);
  const after: string[][] = Array.from({ length: n }, () => []);
  const replace: (string | undefined)[] = new Array(n);
  const block: Setting[] = [];
  const changes: string[] = [];

  for (const s of plan.settings) {
    const full = [...s.table, s.key];
    const cur = lookup(doc, full);
    if (cur === s.value) continue;
    const name = tomlKey(full);
    const kl = lay.keys.find((k) => samePath(k.path, full));
    if (kl) {
      if (kl.endLine !== kl.line) throw new ContainerdConfigError(`${file}:${kl.line + 1}: ${name} spans several lines; set it by hand to ${renderValue(s.value)}`);
      replace[kl.line] = `${kl.keyText}= ${renderValue(s.value)}${ADDED}`;
      changes.push(`set ${name} = ${renderValue(s.value)} (was ${JSON.stringify(cur)}; line ${kl.line + 1} kept as a comment)`);
      continue;
    }
    const h = lay.headers.find((x) => !x.array && samePath(x.path, s.table));
    if (h) {
      const first = lay.keys.find((k) => samePath(k.table, s.table));
      const indent = first ? /^\s*/.exec(lines.text[first.line]!)![0] : `${/^\s*/.exec(lines.text[h.line]!)![0]}  `;
      after[h.line]!.push(`${indent}${tomlKey([s.key])} = ${renderValue(s.value)}${ADDED}`);
      changes.push(`added ${name} = ${renderValue(s.value)} to [${tomlKey(s.table)}] (line ${h.line + 1})`);
      continue;
    }
    // The table exists only through dotted keys of a parent table: add one more dotted key there.
    const dotted = lay.keys.find((k) => hasPrefix(k.path, s.table) && k.path.length > s.table.length && hasPrefix(s.table, k.table));
    if (dotted) {
      const indent = /^\s*/.exec(lines.text[dotted.line]!)![0];
      before[dotted.line]!.push(`${indent}${tomlKey(full.slice(dotted.table.length))} = ${renderValue(s.value)}${ADDED}`);
      changes.push(`added ${name} = ${renderValue(s.value)} (line ${dotted.line + 1})`);
      continue;
    }
    block.push(s);
    changes.push(`added ${name} = ${renderValue(s.value)}`);
  }

  const entries: ArrayEntry[] = [];
  for (const e of plan.entries) {
    const arr = lookup(doc, e.table);
    if (arr !== undefined && !Array.isArray(arr)) {
      throw new ContainerdConfigError(`${file}: ${tomlKey(e.table)} is not an array of tables; add by hand:\n${manualLines(plan)}`);
    }
    if (hasEntry(doc, e) || (arr !== undefined && e.onlyWithNewArray)) continue;
    entries.push(e);
    changes.push(`added [[${tomlKey(e.table)}]] platform = ${renderValue(e.fields.platform)}, snapshotter = ${renderValue(e.fields.snapshotter)}`);
  }

  if (changes.length === 0) return { text, changes };

  const out: { text: string; eol: string }[] = [];
  for (let i = 0; i < n; i++) {
    for (const b of before[i]!) out.push({ text: b, eol: eolStyle });
    const r = replace[i];
    if (r !== undefined) {
      out.push({ text: WAS + lines.text[i]!, eol: eolStyle }, { text: r, eol: lines.eol[i]! });
    } else if (after[i]!.length) {
      // Lines added after the file's last line take over its (missing) final newline.
      out.push({ text: lines.text[i]!, eol: lines.eol[i] || eolStyle });
      after[i]!.forEach((a, j) => out.push({ text: a, eol: j === after[i]!.length - 1 ? lines.eol[i]! : eolStyle }));
    } else {
      out.push({ text: lines.text[i]!, eol: lines.eol[i]! });
    }
  }
  if (block.length || entries.length) {
    const noFinalNewline = out.length > 0 && out[out.length - 1]!.eol === "";
    if (noFinalNewline) out[out.length - 1]!.eol = eolStyle;
    const body: string[] = [];
    const empty = Object.keys(doc).length === 0;
    if (empty) {
      const v = plan.version;
      body.push(`version = ${v}`);
      changes.unshift(`set version = ${v}`);
    }
    body.push(...renderTables(block, entries));
    const all = [`${BEGIN}${original === null ? CREATED : ""}: added by \`thinsnap install\`, removed by \`thinsnap uninstall\``, ...body, END];
    all.forEach((l, j) => out.push({ text: l, eol: j === all.length - 1 && noFinalNewline ? "" : eolStyle }));
  }
  const result = out.map((l) => l.text + l.eol).join("");
  verify(result, text, plan, file);
  return { text: result, changes };
}

function verify(result: string, original: string, plan: Plan, file: string): void {
  const fail = (why: string): never => {
    throw new ContainerdConfigError(`cannot edit ${file} automatically (${why}); add these lines by hand:\n${manualLines(plan)}`);
  };
  let doc: TomlTable;
  try {
    doc = parse(result);
  } catch (e) {
    return fail(`the edit would not be valid TOML: ${(e as Error).message.split("\n")[0]}`);
  }
  for (const s of plan.settings) {
    if (lookup(doc, [...s.table, s.key]) !== s.value) fail(`${tomlKey([...s.table, s.key])} would not be ${renderValue(s.value)}`);
  }
  for (const e of plan.entries) if (!e.onlyWithNewArray && !hasEntry(doc, e)) fail(`no ${tomlKey(e.table)} entry for ${e.fields.snapshotter}`);
  if (revertEdit(result).text !== original) fail("the edit would not revert to the original");
}

export interface RevertResult {
  text: string;
  /** The edit created the file (it did not exist before `thinsnap install`). */
  created: boolean;
  /** Lines removed or restored. */
  changed: number;
}

/** Takes out every line applyEdit added and restores the ones it replaced. */
export function revertEdit(text: string): RevertResult {
  const l = splitLines(text);
  const out: { text: string; eol: string }[] = [];
  let created = false;
  let changed = 0;
  // A removed line that was the file's last (no line ending): the line before it was the last one.
  const dropLast = (eol: string): void => {
    if (eol === "" && out.length) out[out.length - 1]!.eol = "";
  };
  for (let i = 0; i < l.text.length; i++) {
    const s = l.text[i]!;
    if (s.startsWith(BEGIN)) {
      if (s.startsWith(BEGIN + CREATED)) created = true;
      let j = i;
      while (j < l.text.length && l.text[j] !== END) j++;
      if (j === l.text.length) throw new ContainerdConfigError(`line ${i + 1}: "${BEGIN}" without its "${END}" line; remove the block by hand`);
      changed += j - i + 1;
      dropLast(l.eol[j]!);
      i = j;
    } else if (s.startsWith(WAS) && l.text[i + 1]?.endsWith(ADDED)) {
      out.push({ text: s.slice(WAS.length), eol: l.eol[i + 1]! });
      changed += 2;
      i++;
    } else if (s.endsWith(ADDED)) {
      changed++;
      dropLast(l.eol[i]!);
    } else {
      out.push({ text: s, eol: l.eol[i]! });
    }
  }
  return { text: joinLines({ text: out.map((x) => x.text), eol: out.map((x) => x.eol) }), created, changed };
}

/** The runtime handlers the plan names that the file does not configure (a snapshotter alone is no runtime). */
export function unconfiguredHandlers(text: string, version: ConfigVersion, handlers: readonly string[], file = "config.toml"): string[] {
  const doc = parseToml(text, file);
  const base = version === 3 ? [...CRI_RUNTIME_V3, "containerd", "runtimes"] : [...(version === 2 ? CRI_V2 : CRI_V1), "containerd", "runtimes"];
  return handlers.filter((h) => {
    const t = lookup(doc, [...base, h]);
    return t === undefined || typeof t !== "object" || !Object.keys(t).some((k) => k !== "snapshotter");
  });
}

/** <containerd root>/io.containerd.snapshotter.v1.thinsnap: what CRI 1.6 (and 1.7 before 1.7.16) reports to kubelet. */
export const snapshotterDir = (root: string): string => `${root.replace(/\/+$/, "")}/io.containerd.snapshotter.v1.${SNAPSHOTTER_NAME}`;

/** The default of containerd's `root`. */
export const CONTAINERD_DEFAULT_ROOT = "/var/lib/containerd";

/** containerd's `root` (where 1.6 and 1.7 before 1.7.16 report a snapshotter's image filesystem). */
export function containerdRoot(text: string, file = "config.toml"): string {
  const r = parseToml(text, file).root;
  return typeof r === "string" && r !== "" ? r : CONTAINERD_DEFAULT_ROOT;
}
