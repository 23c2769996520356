/**
 * thinsnap end-to-end demo: a real containerd 1.6 running containers on a
 * device-mapper thin-pool through thinsnap, from nothing back to nothing.
 *
 *   npm run demo            (tests/e2e/run-demo: here as root on a dm kernel, else in the qemu guest)
 *   bun tests/e2e/demo.ts [--dir DIR] [--pool NAME] [--binary dist/thinsnap] [--keep-logs]
 *
 * Steps (each printed with its start time and duration):
 *   create a file-backed thin-pool (thinsnap pool create), start thinsnap serve,
 *   start containerd with [proxy_plugins.thinsnap], build a 3-layer OCI image
 *   and import it, ctr run ... echo, a container writing a file, remove
 *   container and image, containerd's GC removes the snapshots, the pool is
 *   back to its starting usage (thinsnap pool status, thinsnap check), clean up.
 * Exit status 0 on success, 1 on any failure (after cleaning up).
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { containerdInstalled, startContainerd, type Containerd } from "../kit/containerd.ts";
import { buildImage } from "../kit/oci-image.ts";
import { checkStore, createFilePool, destroyFilePool, poolStatus, type PoolStatusReport } from "../kit/cli.ts";
import { Daemon, inDir, thinsnapCommand } from "../kit/daemon.ts";
import { backendSnapshots } from "../kit/client.ts";
import { waitFor, type RunResult } from "../kit/process.ts";

export interface DemoOptions {
  /** Working directory (pool files, daemons' state and logs). Default /tmp/thinsnap-demo. */
  dir?: string;
  /** thin-pool name. Default "thinsnap-demo". */
  pool?: string;
  /** A thinsnap binary (e.g. dist/thinsnap) instead of `bun src/cli/main.ts`. */
  binary?: string;
  /** Where the demo's lines go (default stdout). */
  print?: (line: string) => void;
  /** Keep the working directory (logs) after the demo. */
  keepLogs?: boolean;
  /** On SIGINT/SIGTERM: clean up (daemons, pool), then exit 130 (the CLI sets this). */
  handleSignals?: boolean;
}

export interface DemoStep {
  title: string;
  ms: number;
  ok: boolean;
}

export interface DemoResult {
  ok: boolean;
  error: string | null;
  steps: DemoStep[];
  totalMs: number;
  /** Output of `ctr run ... echo`. */
  helloOutput: string;
  /** Output of the container that wrote a file. */
  writeOutput: string;
  /** Pool data bytes used at the start, with the image and a container, and at the end. */
  dataUsed: { start: bigint; peak: bigint; end: bigint };
}

const IMAGE = "docker.io/library/thinsnap-demo:latest";
const HELLO = "hello from a container on a thin-pool";

const fmtBytes = (n: bigint): string => {
  const v = Number(n);
  return v >= 1 << 20 ? `${(v / (1 << 20)).toFixed(1)} MiB` : v >= 1024 ? `${(v / 1024).toFixed(1)} KiB` : `${v} B`;
};
/** A word as a shell would need it typed. */
const shellQuote = (a: string): string => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;

/** Runs the whole demo; never throws. */
export async function runDemo(o: DemoOptions = {}): Promise<DemoResult> {
  const dir = o.dir ?? "/tmp/thinsnap-demo";
  const poolName = o.pool ?? "thinsnap-demo";
  const print = o.print ?? ((l: string) => void process.stdout.write(`${l}\n`));
  const t0 = performance.now();
  const stamp = (): string => `[${secs(performance.now() - t0).padStart(6)}]`;
  const indent = (text: string): void => {
    for (const l of text.replace(/\n$/, "").split("\n")) print(`           ${l}`);
  };
  const result: DemoResult = {
    ok: false,
    error: null,
    steps: [],
    totalMs: 0,
    helloOutput: "",
    writeOutput: "",
    dataUsed: { start: 0n, peak: 0n, end: 0n },
  };

  let d: Daemon | null = null;
  let c: Containerd | null = null;
  let poolMade = false;
  const TOTAL = 9;
  let n = 0;

  async function step<T>(title: string, fn: () => Promise<T>): Promise<T> {
    n++;
    print(`${stamp()} step ${n}/${TOTAL}: ${title}`);
    const s = performance.now();
    try {
      const out = await fn();
      const ms = performance.now() - s;
      result.steps.push({ title, ms, ok: true });
      print(`${stamp()}   ok (${secs(ms)})`);
      return out;
    } catch (e) {
      result.steps.push({ title, ms: performance.now() - s, ok: false });
      throw e;
    }
  }

  /** Every thinsnap command and file the demo uses is printed, so an operator can repeat it by hand. */
  const thinsnapBin = (await thinsnapCommand(o.binary)).join(" ");
  const echo = (...args: string[]): void => print(`           $ ${thinsnapBin} ${args.map(shellQuote).join(" ")}`);
  const showFile = (path: string): void => {
    print(`           --- ${path}`);
    indent(readFileSync(path, "utf8"));
    print("           ---");
  };

  async function ctr(...args: string[]): Promise<RunResult> {
    if (!c) throw new Error("containerd is not running");
    print(`           $ ctr ${args.map(shellQuote).join(" ")}`);
    const r = await c.ctr(...args);
    if (r.stdout) indent(r.stdout);
    if (r.stderr) indent(r.stderr);
    if (r.code !== 0) throw new Error(`ctr ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
    return r;
  }

  async function status(what: string): Promise<PoolStatusReport> {
    if (!d) throw new Error("thinsnap is not running");
    echo("pool", "status", "--name", poolName, "--root", d.rootPath, "--json");
    const st = await poolStatus(poolName, d.rootPath, { binary: o.binary });
    print(
      `           pool ${what}: data ${fmtBytes(BigInt(st.data.usedBytes))} used (${st.data.used}/${st.data.total} blocks), ` +
        `active thin devices ${st.activeDevices.length}, snapshots ${JSON.stringify(st.snapshots ?? {})}, ` +
        `devices ${JSON.stringify(st.devicesByState ?? {})}`,
    );
    return st;
  }

  let cleaning: Promise<void> | null = null;
  /** Stops the daemons and destroys the pool; runs once (a signal may start it early). */
  function cleanup(): Promise<void> {
    cleaning ??= (async () => {
      const cleanupErrors: string[] = [];
      const cc = c as Containerd | null;
      if (cc) {
        await cc.removeAllTasks();
        const code = await cc.stop();
        print(`           containerd exited ${code}`);
        if (code !== 0) cleanupErrors.push(`containerd exited ${code}`);
      }
      const dd = d as Daemon | null;
      if (dd) {
        const code = await dd.stop();
        print(`           thinsnap exited ${code}`);
        if (code !== 0) cleanupErrors.push(`thinsnap exited ${code}`);
      }
      if (poolMade) {
        echo("pool", "destroy", "--name", poolName, "--delete-files");
        const r = await destroyFilePool(poolName, { deleteFiles: true, binary: o.binary }).catch((e: Error) => {
          cleanupErrors.push(e.message);
          return null;
        });
        if (r) indent(r.stdout);
      }
      if (!o.keepLogs) rmSync(dir, { recursive: true, force: true });
      else print(`           logs kept in ${dir}`);
      if (cleanupErrors.length) throw new Error(cleanupErrors.join("; "));
    })();
    return cleaning;
  }
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = true;
    print(`${stamp()} ${sig}: interrupted, cleaning up`);
    cleanup().then(
      () => process.exit(130),
      (e: Error) => {
        print(`cleanup: ${e.message}`);
        process.exit(130);
      },
    );
  };
  if (o.handleSignals) for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, onSignal);

  print(`thinsnap end-to-end demo: containerd ${containerdInstalled() ? "1.6 (/usr/bin/containerd)" : "(missing!)"}, ` +
    `thinsnap = ${(await thinsnapCommand(o.binary)).join(" ")}, work dir ${dir}`);
  try {
    if (typeof process.getuid === "function" && process.getuid() !== 0) throw new Error("the demo must run as root");
    if (!existsSync("/dev/mapper/control")) throw new Error("no /dev/mapper/control: this kernel has no device-mapper (use tests/e2e/run-demo)");
    if (!containerdInstalled()) throw new Error("containerd/ctr not installed (apt-get install containerd runc)");
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });

    await step(`create a 1 GiB file-backed thin-pool "${poolName}" (thinsnap pool create)`, async () => {
      echo("pool", "create", "--name", poolName, "--data-file", join(dir, "pool.data"), "--data-size", "1G");
      const p = await createFilePool({ name: poolName, dataFile: join(dir, "pool.data"), dataSize: "1G", binary: o.binary });
      poolMade = true;
      indent(p.output);
    });

    const start = await step("start thinsnap serve (formats the 64 MiB base device)", async () => {
      d = await Daemon.serving({
        ...inDir(join(dir, "thinsnap"), { poolName, baseImageSize: "64MB", logLevel: "debug" }),
        binary: o.binary,
        readyTimeoutMs: 120_000,
      });
      showFile(d.configPath);
      echo("serve", "--config", d.configPath);
      print(`           serving on ${d.address} (pid ${d.pid}, log ${d.logFile})`);
      return status("at start");
    });
    result.dataUsed.start = BigInt(start.data.usedBytes);

    await step("start containerd 1.6 with [proxy_plugins.thinsnap]", async () => {
      c = await startContainerd({ dir: join(dir, "containerd"), proxySnapshotters: { thinsnap: d!.address } });
      print(`           containerd on ${c.address} (pid ${c.pid}):`);
      showFile(c.configPath);
      print(`           $ containerd --config ${c.configPath}`);
      const plugins = await c.ctrOk("plugins", "ls");
      const line = plugins.split("\n").find((l) => /\sthinsnap\s/.test(l));
      if (!line || !/\sok\s*$/.test(line)) throw new Error(`containerd did not load thinsnap:\n${plugins}`);
      indent(line.replace(/\s+/g, " ").trim());
    });

    const img = await step("build a 3-layer OCI image locally and import it (layers unpacked by thinsnap)", async () => {
      const built = buildImage({ out: join(dir, "image.tar"), name: IMAGE, layers: 3 });
      print(`           ${built.path}: ${fmtBytes(BigInt(built.size))}, ${built.layers.length} layers (busybox + 2 small ones), manifest ${built.manifest.digest.slice(0, 19)}...`);
      await ctr("images", "import", "--snapshotter", "thinsnap", built.path);
      await ctr("snapshots", "--snapshotter", "thinsnap", "ls");
      return built;
    });

    await step("ctr run --rm: echo in a container whose root is a thin device", async () => {
      const r = await ctr("run", "--rm", "--snapshotter", "thinsnap", img.name, "demo-hello", "echo", HELLO);
      result.helloOutput = r.stdout;
      if (r.stdout !== `${HELLO}\n`) throw new Error(`unexpected output ${JSON.stringify(r.stdout)}`);
    });

    await step("a container writes a file (its own active snapshot)", async () => {
      const r = await ctr(
        "run", "--snapshotter", "thinsnap", img.name, "demo-write",
        "sh", "-c", "echo data > /f && cat /f && dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null && ls /layers && mount | grep \" / \"",
      );
      result.writeOutput = r.stdout;
      if (!r.stdout.startsWith("data\n")) throw new Error(`unexpected output ${JSON.stringify(r.stdout)}`);
      await ctr("snapshots", "--snapshotter", "thinsnap", "ls");
      await ctr("snapshots", "--snapshotter", "thinsnap", "usage", "demo-write");
      const st = await status("with the image and the stopped container");
      result.dataUsed.peak = BigInt(st.data.usedBytes);
    });

    await step("remove the container and the image", async () => {
      await ctr("containers", "rm", "demo-write");
      await ctr("images", "rm", "--sync", img.name);
      await ctr("snapshots", "--snapshotter", "thinsnap", "ls");
    });

    await step("containerd's GC removes the snapshots from thinsnap; the pool is back to its start", async () => {
      let left = -1;
      const empty = async (): Promise<boolean> => (left = (await backendSnapshots(d!.address)).length) === 0;
      const gone = await waitFor("GC", empty, { timeoutMs: 10_000, intervalMs: 250 }).then(() => true, () => false);
      if (!gone) {
        // containerd 1.6's GC scheduler can drop a deletion event (see Containerd.gc)
        print(`           ${left} snapshot(s) still in thinsnap after 10 s: forcing a containerd GC (ctr leases delete --sync)`);
        await c!.gc();
        await waitFor("GC of all snapshots", empty, { timeoutMs: 30_000, intervalMs: 250 }).catch((e: Error) => {
          throw new Error(`${e.message} (${left} snapshots left in thinsnap)`);
        });
      }
      print("           thinsnap holds 0 snapshots");
      const st = await status("at the end");
      result.dataUsed.end = BigInt(st.data.usedBytes);
      print(`           data used: start ${fmtBytes(result.dataUsed.start)} -> peak ${fmtBytes(result.dataUsed.peak)} -> end ${fmtBytes(result.dataUsed.end)}`);
      if (st.data.used !== start.data.used) throw new Error(`data used ${st.data.used} blocks, started with ${start.data.used}`);
      if (st.activeDevices.length !== 0 || JSON.stringify(st.devicesByState) !== '{"ready":1}') {
        throw new Error(`devices left: ${JSON.stringify(st.activeDevices)} ${JSON.stringify(st.devicesByState)}`);
      }
      echo("check", "--config", d!.configPath);
      const chk = await checkStore(d!.configPath, { binary: o.binary });
      indent(chk.stdout);
      if (chk.code !== 0) throw new Error(`thinsnap check exited ${chk.code}: ${chk.stdout}${chk.stderr}`);
    });
  } catch (e) {
    result.error = e instanceof Error ? e.message : String(e);
    print(`${stamp()} FAILED: ${result.error}`);
    if (d && !interrupted) print(`---- thinsnap log (tail) ----\n${(d as Daemon).logs().split("\n").slice(-40).join("\n")}`);
    if (c && !interrupted) print(`---- containerd log (tail) ----\n${(c as Containerd).logs().split("\n").slice(-40).join("\n")}`);
  }

  // Cleanup runs whatever happened above.
  n = TOTAL - 1;
  await step("clean up: stop containerd and thinsnap, destroy the pool", cleanup).catch((e: Error) => {
    result.error ??= `cleanup: ${e.message}`;
    print(`${stamp()} FAILED: cleanup: ${e.message}`);
  });
  if (o.handleSignals) for (const sig of ["SIGINT", "SIGTERM"] as const) process.off(sig, onSignal);

  result.totalMs = performance.now() - t0;
  result.ok = result.error === null;
  print("");
  print("step timings:");
  for (const s of result.steps) print(`  ${secs(s.ms).padStart(7)}  ${s.ok ? "ok  " : "FAIL"}  ${s.title}`);
  print(`  ${secs(result.totalMs).padStart(7)}  total`);
  print(result.ok ? "demo: OK" : `demo: FAILED: ${result.error}`);
  return result;
}

/** CLI entry: parses flags, runs the demo, returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const o: DemoOptions = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--dir") o.dir = val();
    else if (a === "--pool") o.pool = val();
    else if (a === "--binary") o.binary = val();
    else if (a === "--keep-logs") o.keepLogs = true;
    else if (a === "-h" || a === "--help") {
      process.stdout.write("usage: bun tests/e2e/demo.ts [--dir DIR] [--pool NAME] [--binary PATH] [--keep-logs]\n");
      return 0;
    } else {
      process.stderr.write(`demo: unknown argument ${a}\n`);
      return 2;
    }
  }
  const r = await runDemo({ ...o, handleSignals: true });
  return r.ok ? 0 : 1;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`demo: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(2);
    },
  );
}
