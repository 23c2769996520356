/** bench/cpu-profile.ts: Bun's markdown CPU profile, read for the host Stat profile. */
import { expect, test } from "bun:test";
import { parseCpuProfileMd } from "../../bench/cpu-profile.ts";

const md = `# CPU Profile

| Duration | Samples | Interval | Functions |
|----------|---------|----------|----------|
| 18.19s | 3003 | 1.0ms | 822 |

## Function Details

### \`flush\`
\`[native code]\` | Self: 37.0% (6.74s) | Total: 37.0% (6.74s) | Samples: 1372

**Called by:**
- \`_final\` (1372)

### \`Socket\`
\`node:net\` | Self: 10.6% (1.93s) | Total: 10.6% (1.93s) | Samples: 1

### \`get\`
\`[native code]\` | Self: 9.2% (1.68s) | Total: 9.2% (1.68s) | Samples: 261

### \`(anonymous)\`
\`a.js:3\` | Self: 1% (1s) | Total: 1% (1s) | Samples: 5

### \`(anonymous)\`
\`a.js:3\` | Self: 1% (1s) | Total: 1% (1s) | Samples: 7
`;

test("total samples and functions by self samples, the same function at one place summed", () => {
  const p = parseCpuProfileMd(md, 3);
  expect(p.total).toBe(3003);
  expect(p.top).toEqual([
    { fn: "flush", where: "[native code]", samples: 1372 },
    { fn: "get", where: "[native code]", samples: 261 },
    { fn: "(anonymous)", where: "a.js:3", samples: 12 },
  ]);
});

test("an empty or foreign text gives nothing, not an error", () => {
  expect(parseCpuProfileMd("hello")).toEqual({ total: 0, top: [] });
});
