/** Benchmark statistics: medians and percentiles of samples, timing. */

export interface Stats {
  n: number;
  median: number;
  p95: number;
  mean: number;
  min: number;
  max: number;
}

/** Nearest-rank percentile of sorted values. */
function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const sum = s.reduce((a, b) => a + b, 0);
  const median = s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { n: s.length, median, p95: pct(s, 95), mean: s.length ? sum / s.length : NaN, min: s[0] ?? NaN, max: s[s.length - 1] ?? NaN };
}

export const now = (): number => performance.now();

/** Runs fn `count` times, one after another; returns each run's duration in ms. */
export async function samples(count: number, fn: (i: number) => unknown): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = now();
    await fn(i);
    out.push(now() - t0);
  }
  return out;
}
