/** Reads Bun's markdown CPU profile (`bun --cpu-prof --cpu-prof-md`): total samples and the functions with the most self samples. */

export interface ProfileTop {
  /** Samples of the whole profile. */
  total: number;
  /** Functions by self samples, most first. */
  top: { fn: string; where: string; samples: number }[];
}

export function parseCpuProfileMd(md: string, count = 12): ProfileTop {
  const head = /^\|\s*[\d.]+m?s\s*\|\s*(\d+)\s*\|/m.exec(md);
  const total = head ? Number(head[1]) : 0;
  const byFn = new Map<string, { fn: string; where: string; samples: number }>();
  const re = /^### `(.+)`\n`([^`]*)` \| Self: [^|]*\| Total: [^|]*\| Samples: (\d+)/gm;
  for (let m = re.exec(md); m; m = re.exec(md)) {
    const k = `${m[1]}@${m[2]}`;
    const prev = byFn.get(k);
    const samples = Number(m[3]);
    if (prev) prev.samples += samples;
    else byFn.set(k, { fn: m[1]!, where: m[2]!, samples });
  }
  const top = [...byFn.values()].sort((a, b) => b.samples - a.samples).slice(0, count);
  return { total, top };
}
