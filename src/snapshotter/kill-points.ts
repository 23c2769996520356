/**
 * Named points between kernel and store steps where a crash test can make the
 * process SIGKILL itself (tests/dm/crash.test.ts). In production killPoint is
 * a no-op: the hook is armed only when THINSNAP_TEST_KILL_AT is set when the
 * process starts, and then chosen once, so an unarmed call costs one call.
 *
 *   THINSNAP_TEST_KILL_AT=prepare.after-create-snap     first time that point is reached
 *   THINSNAP_TEST_KILL_AT=prepare.after-create-snap:3   third time
 *   THINSNAP_TEST_KILL_AT=random:0.02                   at any point, with probability 0.02
 *   THINSNAP_TEST_KILL_AT=list                          print each point reached (stderr)
 */
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

/** The hook for a THINSNAP_TEST_KILL_AT value; null for "" (unarmed). */
export function killHook(spec: string): ((name: KillPoint) => void) | null {
  if (spec === "") return null;
  if (spec === "list") return (name) => void process.stderr.write(`kill-point ${name}\n`);
  if (spec.startsWith("random:")) {
    const p = Number(spec.slice(7));
    return (name) => {
      if (Math.random() < p) die(name);
    };
  }
  const [point, nth] = spec.split(":");
  const at = Number(nth ?? "1");
  let count = 0;
  return (name) => {
    if (name === point && ++count === at) die(name);
  };
}

const hook = killHook(process.env.THINSNAP_TEST_KILL_AT ?? "");

export const killPoint: (name: KillPoint) => void = hook ?? (() => {});

function die(name: string): never {
  process.stderr.write(`kill-point: SIGKILL at ${name}\n`);
  process.kill(process.pid, "SIGKILL");
  throw new Error("unreachable");
}
