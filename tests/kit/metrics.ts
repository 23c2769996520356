/** A Prometheus text exposition in tests: its samples, and exact values checked as one table. */
import { expect } from "bun:test";
import * as http from "node:http";

/**
 * GET /metrics of a metrics server on TCP (`port`, on 127.0.0.1) or a unix
 * socket (`socketPath`; the guest has no loopback up). No agent: no kept-alive
 * socket to a server an earlier step closed.
 */
export function scrape(target: { port: number } | { socketPath: string }): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    http
      .get({ ...target, host: "127.0.0.1", path: "/metrics", agent: false }, (r) => {
        let body = "";
        r.setEncoding("utf8");
        r.on("data", (c: string) => (body += c));
        r.on("end", () => res({ status: r.statusCode ?? 0, body }));
      })
      .on("error", rej);
  });
}

/** `name{labels} value` lines of an exposition, without comments. */
export function samples(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const l of text.split("\n")) {
    if (l === "" || l.startsWith("#")) continue;
    const i = l.lastIndexOf(" ");
    m.set(l.slice(0, i), Number(l.slice(i + 1)));
  }
  return m;
}

/** The value of one series of an exposition (undefined: not there). */
export function seriesValue(text: string, series: string): number | undefined {
  return samples(text).get(series);
}

/** Asserts each series' exact value (undefined: not there), all in one comparison. */
export function expectSeries(exposition: string | Map<string, number>, want: Record<string, number | undefined>): void {
  const s = typeof exposition === "string" ? samples(exposition) : exposition;
  expect(Object.fromEntries(Object.keys(want).map((k) => [k, s.get(k)]))).toEqual(want);
}
