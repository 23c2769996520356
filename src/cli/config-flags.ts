/**
 * The flags every subcommand shares: --config, and one flag for each key of
 * the config table that names one (its help and default come from there).
 * Without a config file (none given, none at the default path) the embedded
 * default is used: a file-backed pool under root_path.
 */
import { existsSync } from "node:fs";
import { DEFAULT_CONFIG_PATH, loadConfig, type Config } from "../config/config.ts";
import { embeddedDefault, roomProblem } from "../pool/zero-config.ts";
import { defaultText } from "../config/docs.ts";
import { KEYS, keyName, type KeyEntry } from "../config/keys.ts";
import { type FlagSpec, type Parsed, str } from "./args.ts";
import { CliError } from "./runtime.ts";

const FLAG_KEYS = KEYS.filter((e) => e.flag !== undefined);

/** A flag's default without TOML's quotes. */
const plain = (s: string | null): string | undefined => (s === null ? undefined : s.replace(/^"(.*)"$/, "$1"));

export const CONFIG_FLAGS: Record<string, FlagSpec> = {
  config: {
    help: "config file (TOML; a containerd config.toml with a devmapper section works too)",
    default: `${DEFAULT_CONFIG_PATH}; without one: the embedded default, a file-backed pool under root_path`,
  },
  ...Object.fromEntries(
    FLAG_KEYS.map((e): [string, FlagSpec] => [
      e.flag ?? "",
      { help: `${e.summary.replace(/`/g, "")} (sets ${keyName(e)})`, default: plain(defaultText(e)) },
    ]),
  ),
};

/** The config file the flags name (or the default one when it exists); null: the embedded default. */
export function configFile(p: Parsed): string | null {
  const given = str(p, "config");
  if (given !== undefined) return given;
  return existsSync(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : null;
}

/** Flag values override the file's (or the embedded default's); the file's override the defaults. */
export async function configFromFlags(p: Parsed): Promise<Config> {
  const texts = new Map<KeyEntry, string>();
  for (const e of FLAG_KEYS) {
    const v = str(p, e.flag ?? "");
    if (v !== undefined) texts.set(e, v);
  }
  return loadConfig(str(p, "config") ?? null, {}, texts, embeddedDefault);
}

/**
 * Before making a pool: refuses when the embedded default sized it (no
 * config file, no --data-size) and the file system has too little room.
 */
export function refuseNoRoom(p: Parsed, cfg: Config): void {
  if (configFile(p) !== null || str(p, "data-size") !== undefined || cfg.pool === null) return;
  const why = roomProblem(cfg.pool.dataFile);
  if (why !== null) throw new CliError(why);
}
