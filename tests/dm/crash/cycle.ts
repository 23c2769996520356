/** One crash cycle: start the daemon (kill armed), check what the last kill left, run the workload until the daemon dies. */
import { readdirSync, readFileSync } from "node:fs";
import { codeName, snapshotsClient } from "../../kit/client.ts";
import { Daemon } from "../../kit/daemon.ts";
import type { CrashRun } from "./run.ts";
import { verifyModel, verifyPool } from "./verify.ts";
import { worker, type Ctx } from "./workload.ts";

export interface Plan {
  kind: string;
  env?: Record<string, string>;
  /** External SIGKILL this long after the daemon is ready (or after spawn if duringStart). */
  killAfterMs?: number;
  duringStart?: boolean;
  asyncRemove: boolean;
  /** Bump base_image_size so that this start makes a new base. */
  newBase?: boolean;
  focus?: Ctx["focus"];
}

/**
 * One cycle: start (with the plan's kill arming), verify the state the last
 * kill left, run the workload until the daemon dies. Returns what killed it.
 */
export async function cycle(st: CrashRun, plan: Plan, workMs: number): Promise<string> {
  st.stats.cycles++;
  st.epochNo++;
  if (plan.newBase) st.baseGen++;
  // Every other cycle with the kernel calls on worker threads (kernel_threads).
  const config = { ...st.cfg, asyncRemove: plan.asyncRemove, baseImageSize: st.baseSize(), kernelThreads: st.epochNo % 2 === 0 ? 4 : 0 };
  let externalTimer: ReturnType<typeof setTimeout> | null = null;
  let killedExternally = false;
  let d: Daemon;
  if (plan.duringStart) {
    // start without waiting: kill at a random moment of start-up
    const starting = Daemon.start({ config, env: plan.env ?? {}, readyTimeoutMs: 120_000 });
    const t0 = performance.now();
    d = await startAndKillAt(st, starting, plan.killAfterMs ?? 0);
    killedExternally = d.exit?.signal === "SIGKILL" && !d.lines.some((l) => l.startsWith("kill-point:"));
    st.stats.op(`start killed after ${Math.round((performance.now() - t0) / 1000)} s`);
  } else {
    const ts = performance.now();
    d = await Daemon.start({ config, env: plan.env ?? {}, readyTimeoutMs: 120_000 });
    st.stats.time("start", ts);
  }
  st.daemon = d;
  if (d.ready) {
    const rep = d.reconcileReport();
    for (const [k, v] of Object.entries(rep ?? {})) st.stats.repairs.set(k, (st.stats.repairs.get(k) ?? 0) + v);
  } else if (d.exit && !plan.duringStart) {
    // a kill point in start-up (base.*) or a start-up failure
    if (!d.lines.some((l) => l.startsWith("kill-point:"))) {
      st.stats.startFailures++;
      st.problem(`daemon exited during start-up (${JSON.stringify(d.exit)}): ${d.lines.slice(-5).join(" | ")}`);
    }
  }
  if (d.ready && d.running) {
    const c = snapshotsClient(st.cfg.address, { timeoutMs: 60_000 });
    // state left by the previous kill (only while nothing is in flight)
    let tv = performance.now();
    await verifyPool(st);
    st.stats.time("check pool", tv);
    tv = performance.now();
    if (d.running) await verifyModel(st, c);
    st.stats.time("check model", tv);
    const ctx: Ctx = { c, d, stop: false, failure: null, verifies: 1, focus: plan.focus };
    if (plan.killAfterMs !== undefined && !plan.duringStart) {
      externalTimer = setTimeout(() => {
        killedExternally = true;
        void d.kill();
      }, plan.killAfterMs);
    }
    const deadline = performance.now() + workMs;
    const tw = performance.now();
    await Promise.all([worker(st, ctx, deadline), worker(st, ctx, deadline), worker(st, ctx, deadline)]);
    st.stats.time("workload", tw);
    const te = performance.now();
    if (ctx.failure && d.running) {
      // Either the daemon is dying right now, or a call failed for real.
      const gone = await Promise.race([d.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
      if (!gone && !killedExternally) {
        st.problem(`${ctx.failure.what} failed while the daemon stayed up: [${codeName(ctx.failure.err.code)}] ${ctx.failure.err.rawMessage}`);
      }
    }
    st.stats.time("wait for exit", te);
  }
  if (externalTimer) clearTimeout(externalTimer);
  let how: string;
  const fired = d.lines.find((l) => l.startsWith("kill-point: SIGKILL at "));
  if (fired) how = `point ${fired.slice("kill-point: SIGKILL at ".length)}`;
  else if (killedExternally) how = plan.duringStart ? "external (during start-up)" : "external";
  else if (!d.running) how = `exited ${JSON.stringify(d.exit)}`;
  else {
    how = "not reached";
    await d.kill();
  }
  await d.exited;
  if (how.startsWith("point") && plan.kind.startsWith("random")) how = `random ${how}`;
  if (how !== "not reached") st.stats.kill(how.replace(/^point /, `point(async=${plan.asyncRemove}) `));
  return how;
}

export async function startAndKillAt(st: CrashRun, starting: Promise<Daemon>, ms: number): Promise<Daemon> {
  // Daemon.start resolves only when ready (or dead); kill from outside by pid meanwhile.
  let pidKilled = false;
  const killer = (async () => {
    await Bun.sleep(ms);
    // the newest thinsnap child of ours: found through /proc (its cmdline names our config)
    for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
        if (cmd.includes(`${st.cfg.rootPath}.toml`) && cmd.includes("serve")) {
          process.kill(Number(pid), "SIGKILL");
          pidKilled = true;
        }
      } catch {
        // raced with its exit
      }
    }
  })();
  const d = await starting;
  await killer;
  if (!pidKilled && d.running) await d.kill(); // it was ready before the delay ran out
  await d.exited;
  return d;
}
