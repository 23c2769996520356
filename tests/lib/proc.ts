/** Child processes for the guest tests: commands and mounts that do not block the event loop. */
import { mkdtempSync, rmSync } from "node:fs";

/** Runs a command; resolves to its stdout, throws with its output on a non-zero exit. */
export async function run(cmd: string[]): Promise<string> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const [code, out, err] = await Promise.all([p.exited, new Response(p.stdout).text(), new Response(p.stderr).text()]);
  if (code !== 0) throw new Error(`${cmd.join(" ")}: exit ${code}: ${err}${out}`);
  return out;
}

export interface MountSpec {
  type: string;
  source: string;
  options: string[];
}

/**
 * Mounts on a fresh directory, runs fn, unmounts -- with mount(8) as child
 * processes, so other workers of the test keep running meanwhile.
 */
export async function withMountAsync<T>(m: MountSpec, fn: (dir: string) => T | Promise<T>, prefix = "/tmp/ts-mnt-"): Promise<T> {
  const dir = mkdtempSync(prefix);
  const args = ["mount", "-t", m.type];
  if (m.options.length) args.push("-o", m.options.join(","));
  await run([...args, m.source, dir]);
  try {
    return await fn(dir);
  } finally {
    await run(["umount", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}
