/** Rows of the host-side Stat profile (bench/host-stat.ts, run by bench/run before the guest boots). */
import type { HostStatResult } from "../host-stat.ts";
import { hostResult, row, targetMax } from "../results.ts";

const DESC: Record<keyof HostStatResult["modes"], string> = {
  h2: "bare node:http2, canned reply",
  connect: "+ Connect (src/rpc/server.ts), canned Stat",
  memory: "+ thinsnap's service layer, in-memory snapshotter",
  "fake-pool": "+ snapshotter and SQLite: thinsnap's Stat path",
};

export function hostStatRows(): void {
  const h = hostResult<HostStatResult>("BENCH_HOST_STAT", "Stat");
  if (h === null) return;
  const m = h.modes;
  for (const [mode, r] of Object.entries(m) as [keyof typeof m, (typeof m)[keyof typeof m]][]) {
    const lat = row(`host-stat-${mode}`, `Stat on the host, sequential, ${DESC[mode]}: latency`, "ms", {
      direct: { n: h.calls, median: r.latency.median, p95: r.latency.p95 },
    });
    row(`host-stat-cpu-${mode}`, `Stat on the host, ${DESC[mode]}: server CPU per call`, "µs", {
      direct: { n: h.calls, median: r.serverCpuUs, p95: r.serverCpuUs },
    });
    if (mode === "fake-pool") {
      targetMax(lat, "direct", 0.1, "ms");
      lat.notes.push(
        `On the host (${h.host.cpu}, ${h.host.cpus} CPUs, Bun ${h.host.bun}; no emulation), a gRPC-protocol client (Connect's gRPC transport, grpc-go's framing) ` +
          `making ${h.calls} sequential Stats, each server in its own process (bench/fake-server.ts). Server CPU per call, step by step: ` +
          `node:http2 ${m.h2.serverCpuUs.toFixed(0)} µs; Connect adds ${(m.connect.serverCpuUs - m.h2.serverCpuUs).toFixed(0)} µs; ` +
          `thinsnap's service layer ${(m.memory.serverCpuUs - m.connect.serverCpuUs).toFixed(0)} µs; snapshotter + SQLite ${(m["fake-pool"].serverCpuUs - m.memory.serverCpuUs).toFixed(0)} µs ` +
          `(in process: snapshotter.stat ${h.inProcessUs.stat.toFixed(1)} µs, of which store.getSnapshot ${h.inProcessUs.getSnapshot.toFixed(1)} µs and store.labels ${h.inProcessUs.labels.toFixed(1)} µs). ` +
          `The client's CPU per call: ${m["fake-pool"].clientCpuUs.toFixed(0)} µs. CPU times are from /proc (10 ms ticks over all the calls).`,
      );
      const prof = (k: keyof typeof m): string => {
        const p = h.profiles?.[k];
        if (!p || p.total === 0) return "not profiled";
        return `${p.total} samples; ${p.top
          .slice(0, 6)
          .map((t) => `${t.fn} (${t.where.replace(/^.*node_modules\//, "").replace(/^.*\/src\//, "src/")}) ${((100 * t.samples) / p.total).toFixed(0)}%`)
          .join(", ")}`;
      };
      if (h.profiles) {
        lat.notes.push(
          `Where the server's samples go (Bun --cpu-prof, ${h.calls} Stats, self samples): thinsnap's Stat path: ${prof("fake-pool")}. ` +
            `Connect with a canned Stat: ${prof("connect")}. Bare node:http2: ${prof("h2")}.`,
        );
      }
    }
  }
}
