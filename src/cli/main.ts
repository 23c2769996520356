#!/usr/bin/env bun
/** thinsnap: a containerd snapshotter on a device-mapper thin-pool. */
import { ConfigError, DEFAULT_CONFIG_PATH, DEFAULTS } from "../config/config.ts";
import { SnapshotterError } from "../errors.ts";
import { BUILD_DATE, REVISION, VERSION } from "../version.ts";
import { didYouMean, parseArgs, UsageError, type FlagSpec } from "./args.ts";
import { check, CHECK_FLAGS, CHECK_HELP } from "./check.ts";
import { CONFIG_COMMAND_FLAGS, CONFIG_HELP, configCommand } from "./config.ts";
import { ls, LS_FLAGS, LS_HELP } from "./ls.ts";
import { INSTALL_FLAGS, INSTALL_HELP, installCommand, UNINSTALL_FLAGS, UNINSTALL_HELP, uninstallCommand } from "./install.ts";
import { POOL_FLAGS, POOL_HELP, poolCommand } from "./pool.ts";
import { CliError } from "./runtime.ts";
import { serve, SERVE_FLAGS, SERVE_HELP } from "./serve.ts";

const HELP = `thinsnap ${VERSION} — containerd snapshotter on a device-mapper thin-pool

Usage:
  thinsnap serve [--config FILE] [flags]           serve containerd's snapshots API
  thinsnap pool create|status|destroy [flags]      make, show or remove the thin-pool
  thinsnap check [--repair] [flags]                compare the store with the pool
  thinsnap ls [--kind KIND] [--prefix P] [--json]  list snapshots and their devices
  thinsnap install|uninstall [--host-root DIR]     install on a host (containerd config, unit)
  thinsnap config example|keys                     document every config key
  thinsnap --version

Every command reads the same config: --config FILE, else ${DEFAULT_CONFIG_PATH},
else the embedded default (a file-backed pool under ${DEFAULTS.rootPath}), and the
same flags override it. Run "thinsnap COMMAND --help" for a command's flags.
`;

interface Command {
  flags: Record<string, FlagSpec>;
  help: string;
  run: (sub: string | undefined, p: ReturnType<typeof parseArgs>) => Promise<number>;
  sub?: boolean;
}

const COMMANDS: Record<string, Command> = {
  serve: { flags: SERVE_FLAGS, help: SERVE_HELP, run: (_s, p) => serve(p) },
  pool: { flags: POOL_FLAGS, help: POOL_HELP, run: poolCommand, sub: true },
  check: { flags: CHECK_FLAGS, help: CHECK_HELP, run: (_s, p) => check(p) },
  config: { flags: CONFIG_COMMAND_FLAGS, help: CONFIG_HELP, run: configCommand, sub: true },
  ls: { flags: LS_FLAGS, help: LS_HELP, run: (_s, p) => ls(p) },
  install: { flags: INSTALL_FLAGS, help: INSTALL_HELP, run: async (_s, p) => installCommand(p) },
  uninstall: { flags: UNINSTALL_FLAGS, help: UNINSTALL_HELP, run: async (_s, p) => uninstallCommand(p) },
};

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") {
    process.stdout.write(HELP);
    return cmd === undefined ? 2 : 0;
  }
  if (cmd === "--version" || cmd === "version") {
    process.stdout.write(`thinsnap ${VERSION} (revision ${REVISION}, built ${BUILD_DATE})\n`);
    return 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    process.stderr.write(`thinsnap: unknown command "${cmd}"${didYouMean(cmd, Object.keys(COMMANDS))}\n\n${HELP}`);
    return 2;
  }
  const sub = c.sub && rest[0] !== undefined && !rest[0].startsWith("-") ? rest.shift() : undefined;
  const label = sub === undefined ? cmd : `${cmd} ${sub}`;
  try {
    const p = parseArgs(rest, c.flags);
    if (p.flags.help === true) {
      process.stdout.write(c.help);
      return 0;
    }
    if (p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
    return await c.run(sub, p);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`thinsnap ${label}: ${e.message}\n\n${c.help}`);
      return 2;
    }
    if (e instanceof ConfigError && e.issues.every((i) => i.file === null)) {
      // every problem is in a flag the operator typed: a usage error
      process.stderr.write(`thinsnap ${label}: ${e.message}\n(thinsnap ${label} --help lists the flags)\n`);
      return 2;
    }
    if (e instanceof CliError || e instanceof SnapshotterError) {
      process.stderr.write(`thinsnap ${label}: ${e.message}\n`);
      return e instanceof CliError ? e.exitCode : 1;
    }
    process.stderr.write(`thinsnap ${label}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
