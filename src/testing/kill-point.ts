/**
 * Test-only crash injection: THINSNAP_TEST_KILL_AT makes the process SIGKILL
 * itself at a named point between kernel and store steps. Inert unless that
 * variable is set when the process starts (one boolean test per point).
 *
 *   THINSNAP_TEST_KILL_AT=prepare.after-create-snap     first time that point is reached
 *   THINSNAP_TEST_KILL_AT=prepare.after-create-snap:3   third time
 *   THINSNAP_TEST_KILL_AT=random:0.02                   at any point, with probability 0.02
 *   THINSNAP_TEST_KILL_AT=list                          print each point reached (stderr)
 */
const spec = process.env.THINSNAP_TEST_KILL_AT ?? "";
const armed = spec !== "";
let counts: Map<string, number> | null = null;

export const KILL_POINTS = [
  "prepare.after-intent",
  "prepare.after-create-snap",
  "prepare.after-activate",
  "prepare.after-ready",
  "commit.after-fsync",
  "commit.after-store",
  "commit.after-deactivate",
  "remove.after-store",
  "remove.after-deactivate",
  "remove.after-delete",
  "base.after-intent",
  "base.while-mounted",
  "base.after-format",
] as const;

/**
 * Inside a grown Prepare (containerd.io/snapshot/max-size above the origin's
 * size; src/snapshotter/grow.ts). after-resize fires on both ways of growing;
 * while-mounted and after-umount only on the online one (xfs, or an ext4 not
 * marked clean). Apart from KILL_POINTS until the crash test's workload makes
 * grown Prepares.
 */
export const GROW_KILL_POINTS = ["grow.while-mounted", "grow.after-resize", "grow.after-umount"] as const;
export type KillPoint = (typeof KILL_POINTS)[number] | (typeof GROW_KILL_POINTS)[number];

export function killPoint(name: KillPoint): void {
  if (!armed) return;
  if (spec === "list") {
    process.stderr.write(`kill-point ${name}\n`);
    return;
  }
  if (spec.startsWith("random:")) {
    if (Math.random() < Number(spec.slice(7))) die(name);
    return;
  }
  const [point, nth] = spec.split(":");
  if (point !== name) return;
  counts ??= new Map();
  const n = (counts.get(name) ?? 0) + 1;
  counts.set(name, n);
  if (n === Number(nth ?? "1")) die(name);
}

function die(name: string): never {
  process.stderr.write(`kill-point: SIGKILL at ${name}\n`);
  process.kill(process.pid, "SIGKILL");
  throw new Error("unreachable");
}
