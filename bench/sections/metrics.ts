/** Rows of metrics on vs off (bench/metrics-overhead.ts, run on the host by bench/run before the guest boots). */
import { fmtMs } from "../format.ts";
import type { MetricsOverhead, OnOff } from "../metrics-overhead.ts";
import { hostResult, row } from "../results.ts";

const OPS: Record<keyof MetricsOverhead["ops"], string> = { stat: "Stat", prepare: "child Prepare" };

export function metricsRows(): void {
  const m = hostResult<MetricsOverhead>("BENCH_METRICS", "Metrics on/off");
  if (m === null) return;
  for (const [op, name] of Object.entries(OPS) as [keyof MetricsOverhead["ops"], string][]) {
    const o: OnOff = m.ops[op];
    for (const mode of ["off", "on"] as const) {
      const s = o[mode];
      const r = row(`metrics-${op}-${mode}`, `${name} on the host, fake pool, metrics ${mode}`, "ms", { direct: { n: s.n, median: s.median, p95: s.p95 } });
      if (mode === "on") {
        const ch = (a: number, b: number): string => `${(((b - a) / a) * 100).toFixed(1)}%`;
        r.notes.push(
          `Host-side, not in the guest (${m.host.cpu}, ${m.host.cpus} CPUs, Bun ${m.host.bun}): two thinsnap servers in one process on the in-memory fake pool ` +
            `(so a kernel call costs microseconds and the metrics' share is as large as it can be), metrics on and off, ${m.rounds} rounds interleaved request by request ` +
            `(bench/metrics-overhead.ts). Metrics on vs off: p50 ${fmtMs(o.off.median)} → ${fmtMs(o.on.median)} (${ch(o.off.median, o.on.median)}), ` +
            `p99 ${fmtMs(o.off.p99)} → ${fmtMs(o.on.p99)} (${ch(o.off.p99, o.on.p99)}).` +
            (op === "stat"
              ? ` The "on" server counted ${m.counted.stat} Stats and ${m.counted.prepare} Prepares; the metrics' own work per request: recording an RPC ` +
                `${m.rpcNs.toFixed(0)} ns, timing a kernel call ${m.timedNs.toFixed(0)} ns.`
              : ""),
        );
      }
    }
  }
}
