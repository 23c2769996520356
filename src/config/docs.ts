/**
 * Documentation derived from the key table: packaging/config.example.toml
 * (`thinsnap config example`; a unit test holds the file to it) and the
 * README's key table (`thinsnap config keys`).
 */
import { CONTAINERD_PLUGIN_ID, CONTAINERD_PLUGIN_URI, POOL_TABLE } from "./document.ts";
import { DEFAULT_CONFIG_PATH, defaultValues } from "./config.ts";
import { type Entry, type KeyEntry, keyName, MAIN_KEYS, POOL_KEYS } from "./keys.ts";
import type { MainValues, PoolConfig } from "./types.ts";

/** The pool_name the example file shows. */
export const EXAMPLE_POOL_NAME = "thinsnap-pool";
const DEFAULT_ADDRESS = MAIN_KEYS.find((e) => e.key === "address")?.default ?? "";

const isRequired = (e: KeyEntry): boolean => e.default === undefined && e.derive === undefined;
const comment = (text: string): string => text.split("\n").map((l) => (l === "" ? "#" : `# ${l}`)).join("\n");
const heading = (title: string): string => `# --- ${title} `.padEnd(78, "-");

const literal = <V, F extends keyof V>(e: Entry<V, F>, values: V): string => e.kind.literal(values[e.field]);

/** The value an entry shows: its example, else its (resolved) default. */
function shown<V, F extends keyof V>(e: Entry<V, F>, values: V): string {
  return e.kind.literal(e.example ?? values[e.field]);
}

function block(e: KeyEntry, values: { main: MainValues; pool: PoolConfig }): string {
  const value = e.table === "" ? shown(e, values.main) : shown(e, values.pool);
  const line = `${e.key} = ${value}`;
  return `${comment(e.doc)}\n${isRequired(e) ? line : `# ${line}`}`;
}

export function exampleToml(): string {
  const values = defaultValues(EXAMPLE_POOL_NAME);
  const containerd = MAIN_KEYS.filter((e) => e.containerd);
  const own = MAIN_KEYS.filter((e) => !e.containerd);
  const examples = [...MAIN_KEYS, ...POOL_KEYS].filter((e) => !isRequired(e) && e.example !== undefined).map((e) => e.key);
  const header = `thinsnap configuration: ${DEFAULT_CONFIG_PATH}
(generated from src/config/keys.ts by \`thinsnap config example\`)

thinsnap is a containerd snapshotter on a device-mapper thin-pool, run as a
containerd proxy plugin. Register it in containerd's config.toml:

  [proxy_plugins.thinsnap]
    type = "snapshot"
    address = "${DEFAULT_ADDRESS}"

Every key below except ${MAIN_KEYS.filter(isRequired).map((e) => e.key).join(", ")} shows its default, commented out
(${examples.join(", ")}: an example; ${examples.length > 1 ? "they are" : "it is"} unset by default).
Unknown keys are errors.

Sizes are strings parsed like containerd parses base_image_size (docker
go-units RAMInBytes): binary units, case-insensitive, optional "i" and "b":
"10G" = "10GB" = "10GiB" = 10 * 1024^3 bytes; "512k" = 524288; "8192MB".
A bare integer (no quotes) is a number of bytes.

Instead of this file, thinsnap also reads a containerd config.toml: it then
takes the devmapper keys (the first ${containerd.length} below) from
[plugins."${CONTAINERD_PLUGIN_URI}"] (or [plugins.${CONTAINERD_PLUGIN_ID}]
in a version 1 config) and ignores the rest of that file.`;
  const pool = `Without a [${POOL_TABLE}] table, thinsnap uses an existing thin-pool named pool_name
(created e.g. with dmsetup or LVM). With it, thinsnap creates the pool
pool_name from two sparse files attached to loop devices, like containerd's
docs do with losetup and dmsetup.`;
  const parts = [
    comment(header),
    heading("containerd devmapper keys (same names and meaning as containerd's)"),
    ...containerd.map((e) => block(e, values)),
    heading("thinsnap's own keys"),
    ...own.map((e) => block(e, values)),
    `${heading("optional: a pool thinsnap creates itself")}\n#\n${comment(pool)}`,
    `# [${POOL_TABLE}]`,
    ...POOL_KEYS.map((e) => block(e, values)),
  ];
  return `${parts.join("\n\n")}\n`;
}

/** A key's default as documented (TOML, or the rule of a derived one); null: required. */
export function defaultText(e: KeyEntry): string | null {
  if (isRequired(e)) return null;
  if (e.defaultText !== undefined) return e.defaultText;
  const values = defaultValues(EXAMPLE_POOL_NAME);
  return e.table === "" ? literal(e, values.main) : literal(e, values.pool);
}

/** The README's table of keys (Markdown). */
export function keysMarkdown(): string {
  const cell = (s: string): string => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
  const rows = [...MAIN_KEYS, ...POOL_KEYS].map((e) => {
    const def = defaultText(e) ?? "(required)";
    const name = e.table === "" ? `\`${e.key}\`` : `\`[${e.table}] ${e.key}\``;
    return `| ${name} | ${cell(def.startsWith("(") || e.defaultText !== undefined ? def : `\`${def}\``)} | ${e.containerd ? "yes" : ""} | ${cell(e.summary)}${e.flag !== undefined ? ` (flag \`--${e.flag}\`)` : ""} |`;
  });
  return ["| key | default | containerd | meaning |", "|---|---|---|---|", ...rows].join("\n") + "\n";
}

export { keyName };
