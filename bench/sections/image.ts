/** `ctr images import` and `ctr run` through containerd, per snapshotter. */
import { spawn } from "node:child_process";
import { buildImage } from "../../tests/kit/oci-image.ts";
import { log, N } from "../plan.ts";
import { cell, row, type Row } from "../results.ts";
import type { Env } from "../sides.ts";
import { now, stats } from "../stats.ts";

export async function imageRows(env: Env): Promise<void> {
  const img = buildImage({ out: `${env.dir}/image.tar`, name: "docker.io/library/thinsnap-bench:latest", layers: N.image.layers });
  const imp: Row["cells"] = {};
  const runr: Row["cells"] = {};
  for (const side of env.sides) {
    if (!side.ctrd) continue;
    const ctr = env.containerd;
    const is: number[] = [];
    const rs: number[] = [];
    for (let r = 0; r < N.image.reps; r++) {
      log(`${side.label}: ctr images import (${N.image.layers} layers) + ctr run, rep ${r + 1}/${N.image.reps}`);
      const t0 = now();
      await ctr.ctrOk("images", "import", "--snapshotter", side.snapshotter, img.path);
      is.push(now() - t0);
      const id = `bench-${side.id}-${r}`;
      const t1 = now();
      const first = await firstOutput(
        ["ctr", "--address", ctr.address, "--namespace", ctr.namespace, "run", "--rm", "--snapshotter", side.snapshotter, img.name, id, "/bin/echo", "ready"],
        "ready",
      );
      rs.push(first - t1);
      await ctr.ctrOk("images", "rm", "--sync", img.name);
      await env.leases.gc();
    }
    imp[side.id] = cell(stats(is));
    runr[side.id] = cell(stats(rs));
  }
  row("import", `ctr images import (${N.image.layers}-layer image, ${(img.size / 2 ** 20).toFixed(1)} MiB tarball)`, "ms", imp);
  row("run", "ctr run --rm … echo: time to first output", "ms", runr);
}

/** Spawns cmd; resolves with now() when `marker` first appears on stdout (and after the process exits). */
export async function firstOutput(cmd: string[], marker: string): Promise<number> {
  const { spawn } = await import("node:child_process");
  return new Promise((resolveP, reject) => {
    const [file, ...args] = cmd;
    const child = spawn(file!, args, { stdio: ["ignore", "pipe", "pipe"] });
    let seen = -1;
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => {
      out += b.toString();
      if (seen < 0 && out.includes(marker)) seen = now();
    });
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    child.on("close", (code) => {
      if (seen < 0) reject(new Error(`${cmd.join(" ")}: exit ${code}, no "${marker}": ${err}${out}`));
      else resolveP(seen);
    });
  });
}
