/**
 * /proc/self/mountinfo, parsed: the fields thinsnap reads, with the kernel's
 * octal escapes (\040 for a space, …) undone.
 */

export interface MountEntry {
  /** "major:minor" of the mounted device. */
  device: string;
  /** Where it is mounted. */
  point: string;
  /** The mount source (e.g. /dev/mapper/pool-snap-5). */
  source: string;
}

export const MOUNTINFO = "/proc/self/mountinfo";

function unescape(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0 || f.length < sep + 3) continue;
    out.push({ device: f[2]!, point: unescape(f[4]!), source: unescape(f[sep + 2]!) });
  }
  return out;
}
