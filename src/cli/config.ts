/** `thinsnap config example|keys`: documentation generated from the config key table. */
import { exampleToml, keysMarkdown } from "../config/docs.ts";
import { didYouMean, flagHelp, type FlagSpec, type Parsed, UsageError } from "./args.ts";

export const CONFIG_COMMAND_FLAGS: Record<string, FlagSpec> = {
  help: { type: "boolean", help: "show this help" },
};

export const CONFIG_HELP = `Usage:
  thinsnap config example   print a config file documenting every key with its default
                            (this is packaging/config.example.toml)
  thinsnap config keys      print the table of keys (Markdown, as in the README)

Flags:
${flagHelp(CONFIG_COMMAND_FLAGS)}
`;

export function configCommand(sub: string | undefined, _p: Parsed): Promise<number> {
  switch (sub) {
    case "example":
      process.stdout.write(exampleToml());
      return Promise.resolve(0);
    case "keys":
      process.stdout.write(keysMarkdown());
      return Promise.resolve(0);
    default:
      throw new UsageError(
        sub === undefined ? "which one? example or keys" : `unknown subcommand "${sub}"${didYouMean(sub, ["example", "keys"])}`,
      );
  }
}
