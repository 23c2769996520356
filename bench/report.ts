/** BENCHMARKS.md from one run's results: the table, targets, notes, where the time goes, findings. */
import { fmtMs, fmtRatio, table } from "./format.ts";
import type { Machine } from "./machine.ts";
import { GEOMETRY, type Counts, type SideId } from "./plan.ts";
import type { Profile } from "./profile.ts";
import type { Cell, Row, Unit } from "./results.ts";

/** What the report is made from: one run's results, as bench/results.json holds them. */
export interface ReportInput {
  machine: Machine;
  totalMs: number;
  counts: Counts;
  rows: Row[];
  notes: string[];
  phases: Record<string, Record<string, number>>;
  /** KiB; afterKiB is missing in results of older runs. */
  rss: { idleKiB: number; loadKiB: number; hwmKiB: number; afterKiB?: number };
  profile: Profile | null;
}

// ------------------------------------------------------------------ report

export function sideCellText(c: Cell | undefined, unit: Unit): string {
  if (!c) return "–";
  if (unit === "ops/s") return c.median.toFixed(c.median >= 10 ? 1 : 2);
  if (unit === "MiB") return c.median.toFixed(1);
  if (unit === "µs") return `${c.median.toFixed(0)} µs`;
  return c.n > 1 ? `${fmtMs(c.median)} (${fmtMs(c.p95)})` : fmtMs(c.median);
}

export function renderTable(rows: Row[]): string {
  const head = ["operation", "N d/c/r/o/f", "thinsnap direct", "thinsnap via ctrd", "devmapper via ctrd", "overlayfs via ctrd", "ts/ref", "ts/ovl", "floor", "direct/floor", "targets"];
  const body = rows.map((r) => {
    const c = r.cells;
    const ns = (["direct", "ctrd", "ref", "ovl", "floor"] as const).map((s) => (c[s] ? String(c[s]!.n) : "–")).join("/");
    const ratio = c.ctrd && c.ref ? fmtRatio(c.ctrd.median / c.ref.median) : "–";
    const ovl = c.ctrd && c.ovl ? fmtRatio(c.ctrd.median / c.ovl.median) : "–";
    const fl = c.direct && c.floor ? fmtRatio(c.direct.median / c.floor.median) : "–";
    const tg = r.targets.map((t) => `${t.pass ? "PASS" : "MISS"} ${t.text}`).join("; ") || "";
    return [r.label, ns, sideCellText(c.direct, r.unit), sideCellText(c.ctrd, r.unit), sideCellText(c.ref, r.unit), sideCellText(c.ovl, r.unit), ratio, ovl, sideCellText(c.floor, r.unit), fl, tg];
  });
  return table(head, body);
}

/** Per-operation decomposition: direct ≈ gRPC + handler; handler = pool (kernel calls) + store (SQLite) + the rest. */
export function renderProfile(r: Pick<ReportInput, "profile" | "rows" | "counts">): string {
  if (!r.profile) return "(profile not run)";
  const p = r.profile;
  const rows = r.rows;
  const rpcOf: Record<string, string> = {
    "prepare-root": "prepare",
    "prepare-child": "prepare",
    commit: "commit",
    remove: "remove",
    stat: "stat",
    mounts: "stat",
    usage: "stat",
  };
  const floorOf = (id: string): Cell | undefined => rows.find((r) => r.id === id)?.cells.floor;
  const directOf = (id: string): Cell | undefined => rows.find((r) => r.id === id)?.cells.direct;
  const body = Object.entries(p.ops).map(([op, o]) => {
    const top = Object.entries(o.pool)
      .slice(0, 4)
      .map(([m, v]) => `${m}×${Number(v.callsPerOp.toFixed(2))} ${fmtMs(v.msPerOp)}`)
      .join(", ");
    const st = Object.entries(o.store)
      .slice(0, 3)
      .map(([m, v]) => `${m}×${Number(v.callsPerOp.toFixed(2))} ${fmtMs(v.msPerOp)}`)
      .join(", ");
    const rpc = p.rpc[rpcOf[op] ?? "stat"];
    return [
      op,
      directOf(op) ? fmtMs(directOf(op)!.median) : "–",
      rpc ? fmtMs(rpc.median) : "–",
      fmtMs(o.handler.median),
      `${fmtMs(o.poolMs)}: ${top || "none"}`,
      `${fmtMs(o.storeMs)}: ${st || "none"}`,
      fmtMs(o.otherMs),
      floorOf(op) ? fmtMs(floorOf(op)!.median) : "–",
    ];
  });
  const t = table(
    ["op", "direct (table)", "gRPC alone", "handler in process", "pool = kernel calls via src/dm (mean/op)", "store = SQLite (mean/op)", "rest (JS)", "floor"],
    body,
  );
  return `Measured in the same boot (bench/profile.ts): **gRPC alone** is a call through thinsnap's gRPC server (src/rpc, node:http2 +
Connect) and the same Connect client, in separate processes, over an in-memory snapshotter (no store, no pool);
**handler in process** is src/snapshotter called directly on a real pool of the same geometry (N=${r.counts.profile} per op), with its pool and store wrapped in
timers ("name×calls-per-op time-per-op"). The direct column is roughly gRPC alone + handler. The floor is the bare dm calls.
The profile ran once, after the parentless row, not interleaved with the table's samples: with the host's load changing, its absolute
numbers can differ from the table's (compare the shares within a profile row rather than its times with the table's).

${t}
`;
}

/** What the numbers say: ours vs the kernel's, derived from this run's rows and profile. */
export function renderFindings(r: ReportInput): string {
  if (!r.profile) return "";
  const p = r.profile;
  const rows = r.rows;
  const med = (id: string, side: SideId | "floor"): number => rows.find((r) => r.id === id)?.cells[side]?.median ?? NaN;
  const out: string[] = [];
  const ms = fmtMs;
  const grpc = p.rpc.stat?.median ?? NaN;
  const statRef = med("stat", "ref");
  const statCtrd = med("stat", "ctrd");
  out.push(
    `- **The gRPC layer is a large fixed cost of ours.** A call that does no work (Stat: handler ${ms(p.ops.stat?.handler.median ?? NaN)} in process) ` +
      `costs ${ms(med("stat", "direct"))} on thinsnap's socket and ${ms(grpc)} through src/rpc over an in-memory snapshotter. ` +
      `Through containerd the same Stat costs ${ms(statRef)} on the built-in devmapper (client + containerd's grpc-go + bolt) and ${ms(statCtrd)} on ` +
      `thinsnap: the proxy hop into thinsnap's server (node:http2 + Connect under Bun, src/rpc/server.ts) adds ${ms(statCtrd - statRef)} per call.`,
  );
  const h2 = p.rpc["stat-h2"]?.median;
  if (h2 !== undefined) {
    out.push(
      `- **Connect's share.** The same client against bare node:http2 answering a canned reply (no Connect, no handler) takes ${ms(h2)} ` +
        `per Stat, against ${ms(grpc)} through Connect's server over the in-memory snapshotter: Connect's server side (universal request/response, ` +
        `async-iterable pipeline, per-call AbortController) is ≈ ${ms(grpc - h2)} of each call; the rest is the client and HTTP/2 under Bun. ` +
        `The project's design has Connect serve the API, so this is recorded rather than bypassed.`,
    );
  }
  for (const op of ["prepare-child", "commit", "remove"] as const) {
    const o = p.ops[op];
    if (!o) continue;
    const f = med(op, "floor");
    const d = med(op, "direct");
    const rpcName = op === "prepare-child" ? "prepare" : op;
    const g = p.rpc[rpcName]?.median ?? NaN;
    const poolTop = Object.entries(o.pool)
      .slice(0, 3)
      .map(([m, v]) => `${m} ${ms(v.msPerOp)}`)
      .join(", ");
    out.push(
      `- **${op}**: direct ${ms(d)} vs floor ${ms(f)}. In process the handler takes ${ms(o.handler.median)}: kernel calls through src/dm ${ms(o.poolMs)} ` +
        `(${poolTop}), SQLite ${ms(o.storeMs)} (${Object.entries(o.store)
          .slice(0, 2)
          .map(([m, v]) => `${m}×${Number(v.callsPerOp.toFixed(2))} ${ms(v.msPerOp)}`)
          .join(", ")}), the rest ${ms(o.otherMs)}; the gRPC round trip alone is ${ms(g)}. ` +
        `Ours: gRPC + SQLite + rest ≈ ${ms(g + o.storeMs + o.otherMs)}; the kernel's: ≈ ${ms(o.poolMs)} (floor ${ms(f)}).`,
    );
  }
  const rmD = med("remove", "direct");
  const rmC = med("remove", "ctrd");
  const rmR = med("remove", "ref");
  out.push(
    `- **Remove through containerd** is dominated by containerd itself: its Remove only marks the snapshot, and the GC that really removes it ` +
      `(run synchronously here) walks the snapshotter's snapshots. thinsnap: ${ms(rmD)} direct vs ${ms(rmC)} via containerd + GC; ` +
      `reference ${ms(rmR)}. Both via-containerd cells carry the same GC pass, so their ratio understates the snapshotters' difference; ` +
      `direct vs floor is the measure of our own removal.`,
  );
  const pr = med("prepare-root", "ref");
  out.push(
    `- **Parentless Prepare**: the reference runs mkfs.ext4 (lazy_itable_init=0) on a new ${GEOMETRY.baseImageSize} device (${ms(pr)}); thinsnap snapshots its ` +
      `pre-formatted base (${ms(med("prepare-root", "ctrd"))} via containerd, the same work as a child Prepare). The ratio is mkfs's cost over our per-call cost, ` +
      `so it grows with base_image_size and shrinks with our fixed gRPC and SQLite cost.`,
  );
  const tput = rows.find((r) => r.id === "conc-tput");
  const chainRow = rows.find((r) => r.id === "chain");
  if (tput?.cells.direct && chainRow?.cells.direct) {
    // The layer chain row is the same work one layer after another.
    const serial = (r.counts.chain.layers * 1000) / chainRow.cells.direct.median;
    out.push(
      `- **Concurrency.** One chain at a time, thinsnap direct makes ${serial.toFixed(1)} layers/s (layer chain row); 16 chains at once make ` +
        `${tput.cells.direct.median.toFixed(1)} layers/s (${(tput.cells.direct.median / serial).toFixed(1)}×): requests overlap while the client mounts and writes, ` +
        `but thinsnap makes its device-mapper calls one at a time on its JS thread. The reference makes its device-mapper calls inside a write transaction ` +
        `of its bolt store, which admits one writer at a time, so its mutations run one after another.`,
    );
  }
  const kt = (id: string): Cell | undefined => rows.find((r) => r.id === id)?.cells.direct;
  const [c0, c4, t0, t4] = [kt("kt-child-0"), kt("kt-child-4"), kt("kt-conc-0"), kt("kt-conc-4")];
  if (c0 && c4 && t0 && t4) {
    out.push(
      `- **kernel_threads.** With the sleeping device-mapper calls on 4 worker threads instead of the JS thread, a child Prepare took ${ms(c4.median)} ` +
        `against ${ms(c0.median)} (interleaved), and 16 concurrent chains made ${t4.median.toFixed(1)} against ${t0.median.toFixed(1)} layers/s. ` +
        `Under emulation a hop to a thread and back costs a few milliseconds, and with the calls overlapping, the chains' mounts, writes and the pool's ` +
        `metadata commits contend instead; so the default is 0. On real hardware the hop is microseconds: measure there before turning it on.`,
    );
  }
  const lst = rows.find((r) => r.id === "list-small");
  if (lst?.cells.ctrd && lst.cells.ref) {
    out.push(
      `- **List through containerd** (${ms(lst.cells.ctrd.median)} for thinsnap vs ${ms(lst.cells.ref.median)} for the reference over 21 snapshots): containerd 1.6 ` +
        `answers List from its own database but calls the snapshotter's Stat once per snapshot; for a proxy plugin each is a gRPC round trip, so the ` +
        `per-call cost above is paid per snapshot. Direct List is one SQLite query (see the 10,000-snapshot row).`,
    );
  }
  return `Findings (computed from this run):\n\n${out.join("\n")}`;
}

export function report(input: ReportInput): string {
  const { machine, totalMs, rows, notes, phases } = input;
  const rss = { ...input.rss, afterKiB: input.rss.afterKiB ?? 0 };
  const targets = rows.flatMap((r) => r.targets.map((t) => `- ${t.pass ? "PASS" : "MISS"} — ${r.label}: target ${t.text}; measured ${t.detail}.`));
  const rowNotes = rows.flatMap((r) => [
    ...r.notes.map((x) => `- ${r.label}: ${x}`),
    ...Object.entries(r.cells)
      .filter(([, c]) => c?.note)
      .map(([s, c]) => `- ${r.label} (${s}): ${c!.note}`),
  ]);
  const ph = Object.entries(phases).map(
    ([k, v]) => `- ${k}: ${Object.entries(v).map(([a, b]) => `${a} ${fmtMs(b)}`).join(", ")}`,
  );
  return `# Benchmarks

Generated by \`npm run bench\` (bench/run → bench/bench.ts in the qemu guest) on ${machine.date}; the whole run took ${(totalMs / 60000).toFixed(1)} min.

**Emulation.** Everything ran in one boot of a qemu guest under TCG (software CPU emulation, no KVM): guest kernel ${machine.guestKernel},
${machine.guestCpus} vCPUs (${machine.guestCpu}), ${machine.guestMemMiB} MiB; host: ${machine.hostCpu}, ${machine.hostCpus} CPUs, kernel ${machine.hostKernel}, ${machine.qemu}.
The host's load average when the run started was ${machine.hostLoad} (other work on the same host, e.g. other guests, slows
the guest unevenly: every row's samples of all columns, floor included, are interleaved over the row's duration so that they share it).
Absolute times are those of an emulated CPU, many times a real host's, and syscalls/ioctls/process start-up are
slowed more than plain computation. **The claim is the ratios within this one run**, where both snapshotters saw the same guest, kernel and disk.

Software: ${machine.thinsnap}; ${machine.containerd}; ${machine.runc.split("\n")[0]}; dmsetup ${machine.dmsetup}; Bun ${machine.bun}.

Pools: six file-backed thin-pools of the same geometry (data ${GEOMETRY.dataSize}, metadata ${GEOMETRY.metaSize}, block size ${GEOMETRY.blockSize},
skip_block_zeroing, loop devices over sparse files on an ext4 virtio disk), one each for thinsnap direct, thinsnap behind containerd (a second \`thinsnap serve\`:
containerd's GC removes every snapshot of a snapshotter that its own database does not know, so the two columns cannot share one),
containerd's devmapper, the floor, the in-process profile, and a third \`thinsnap serve\` with kernel_threads = 4 (the kernel_threads rows and the direct storm);
base_image_size ${GEOMETRY.baseImageSize}, fs_type ${GEOMETRY.fsType}, async_remove = false, discard_blocks = false on both snapshotters.

Columns:
- **thinsnap direct**: a Connect gRPC client on thinsnap's own socket.
- **thinsnap via ctrd**: the same client on containerd's socket (snapshots service, \`snapshotter: "thinsnap"\`,
  \`containerd-namespace: default\`), containerd → proxy plugin → thinsnap.
- **devmapper via ctrd**: the same, \`snapshotter: "devmapper"\`: containerd ${machine.containerd.split(" ")[2] ?? ""}'s built-in devmapper snapshotter (the reference).
- **overlayfs via ctrd**: containerd's default overlayfs snapshotter, through the same containerd on the same disk (the realistic-image, unpack and storm rows;
  in the unpack replay rows, a plain directory on that disk, which is what its unpack writes to).
- **ts/ovl**: thinsnap via containerd ÷ overlayfs, medians.
- **ts/ref**: thinsnap via containerd ÷ reference, medians (below 1 = thinsnap faster; for throughput, above 1 = thinsnap faster).
- **floor**: the bare device-mapper calls the operation needs, back to back through thinsnap's binding (src/dm), nothing else
  (Prepare/View: message create_snap + create/load/resume; Commit: fsync + remove; Remove: remove + message delete; Usage: thin status).
- **direct/floor**: thinsnap direct ÷ floor.
- Rows whose label says **on the host** (Stat profile, List over 10,000, metrics on/off) were measured by bench/run on the host itself, without
  emulation, before the guest booted, and use the direct column for their one value.
- Cells are "median (p95)"; N per column (direct/ctrd/ref/floor) is in the second column.
- Snapshots made through containerd carry the containerd.io/gc.root label (else containerd's GC would collect them).
  containerd's Remove only marks the snapshot in its own database; its GC removes it from the snapshotter later. The
  "via ctrd" Remove cells are Remove + a synchronous GC (leases Delete with sync), so they include the snapshotter's removal.
- containerd's GC scheduler was set to run only on request (mutation_threshold 10^9), so no GC ran inside another measurement.

## Results

${renderTable(rows)}

Resident memory of \`thinsnap serve\` (VmRSS, the larger of the two daemons): idle ${(rss.idleKiB / 1024).toFixed(1)} MiB (after start-up, before any request);
under the 16-way concurrent load ${(rss.loadKiB / 1024).toFixed(1)} MiB (maximum of samples every 25 ms); VmHWM at the end ${(rss.hwmKiB / 1024).toFixed(1)} MiB;
idle again ${(rss.afterKiB / 1024).toFixed(1)} MiB, 32 s after the last run: what the runtime's heap and allocator grew to under load is
not handed back to the system (on the host, a forced full GC, \`Bun.gc(true)\`, handed back ~10 of ~30 MiB; \`--smol\` made no difference).

## Targets

${targets.join("\n")}

## Notes

${[...rowNotes, ...notes].join("\n")}

## Where the time goes

${renderProfile(input)}

${renderFindings(input)}

Phase sums measured by the benchmark client (layer chains: per chain; concurrent: sums over the 16 chains):
${ph.join("\n")}
`;
}
