/** Group name → gid from /etc/group (no NSS: socket_group is a local group in practice). */
import { readFileSync } from "node:fs";

export function getgrnam(name: string, groupFile = "/etc/group"): number | undefined {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of readFileSync(groupFile, "utf8").split("\n")) {
    const f = line.split(":");
    if (f[0] === name && f[2] !== undefined) return Number(f[2]);
  }
  return undefined;
}
