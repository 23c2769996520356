#!/usr/bin/env bun
/** thinsnap: a containerd snapshotter on a device-mapper thin-pool. */
import { SnapshotterError } from "../errors.ts";
import { BUILD_DATE, REVISION, VERSION } from "../version.ts";
import { parseArgs, UsageError, type FlagSpec } from "./args.ts";
import { check, CHECK_FLAGS, CHECK_HELP } from "./check.ts";
import { CONFIG_COMMAND_FLAGS, CONFIG_HELP, configCommand } from "./config.ts";
import { ls, LS_FLAGS, LS_HELP } from "./ls.ts";
import { INSTALL_FLAGS, INSTALL_HELP, installCommand, UNINSTALL_FLAGS, UNINSTALL_HELP, uninstallCommand } from "./install.ts";
import { POOL_FLAGS, POOL_HELP, poolCommand } from "./pool.ts";
import { CliError } from "./runtime.ts";
import { serve, SERVE_FLAGS, SERVE_HELP } from "./serve.ts";

const HELP = `thinsnap ${VERSION} — containerd snapshotter on a device-mapper thin-pool

Usage:
  thinsnap serve [--config FILE] [flags]
  thinsnap pool create|status|destroy --name NAME [...]
  thinsnap check [--repair]
  thinsnap config example|keys
  thinsnap ls [--kind KIND] [--prefix KEY-PREFIX] [--json]
  thinsnap install|uninstall [--host-root DIR] [--dry-run] [...]
  thinsnap --version

Run "thinsnap COMMAND --help" for a command's flags.
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
    process.stderr.write(`thinsnap: unknown command "${cmd}"\n\n${HELP}`);
    return 2;
  }
  try {
    const sub = c.sub && rest[0] !== undefined && !rest[0].startsWith("--") ? rest.shift() : undefined;
    const p = parseArgs(rest, c.flags);
    if (p.flags.help === true) {
      process.stdout.write(c.help);
      return 0;
    }
    if (!c.sub && p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
    return await c.run(sub, p);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`thinsnap ${cmd}: ${e.message}\n\n${c.help}`);
      return 2;
    }
    if (e instanceof CliError || e instanceof SnapshotterError) {
      process.stderr.write(`thinsnap ${cmd}: ${e.message}\n`);
      return e instanceof CliError ? e.exitCode : 1;
    }
    process.stderr.write(`thinsnap ${cmd}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
