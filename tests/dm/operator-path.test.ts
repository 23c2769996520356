/**
 * The operator's path, as the README tells it (walkthrough.ts reads the
 * block): build, `thinsnap serve` with no config, containerd with the
 * README's snippet, an image, `ctr run`, `pool status`, `check`, destroy
 * refused while serving, stop, destroy, and starting over. Then what
 * `pool create` prints and writes, destroy refused while a device is
 * mounted (forced too), and the pool/store mismatch naming its fix.
 *
 * Deviations from the README, each forced by the guest: `npm ci` is skipped
 * (no network; node_modules are the checkout's), `npm run build` runs only
 * when dist/thinsnap is missing (npm test builds it first), `ctr images pull`
 * imports a locally built image of that name (no network), `systemctl restart
 * containerd` starts a private containerd with the README's snippet, and
 * /var/lib/thinsnap gets a 5 GiB tmpfs (the guest's root has ~1 GiB free,
 * too little for the embedded default, which refuses below 1 GiB of pool).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parse } from "smol-toml";
import { parseConfig } from "../../src/config/config.ts";
import { containerdInstalled, startContainerd, type Containerd } from "../kit/containerd.ts";
import { buildImage } from "../kit/oci-image.ts";
import { snapshotsClient } from "../kit/client.ts";
import { exitOf, REPO, run, socketAccepts, waitFor, type RunResult } from "../kit/process.ts";
import { dm, inGuest } from "./env.ts";
import { containerdSnippetOf, installSources, walkthroughSteps, WALKTHROUGH_DOC } from "./walkthrough.ts";

const BIN = join(REPO, "dist/thinsnap");
const ROOT = "/var/lib/thinsnap";
const WORK = "/tmp/operator-path";

const SKIP = !dm.available
  ? dm.reason
  : !inGuest
    ? "runs only in the qemu guest (it uses /var/lib/thinsnap, /run/thinsnap and /etc/thinsnap of the machine)"
    : !containerdInstalled()
      ? "containerd or ctr is not installed (apt-get install containerd)"
      : !existsSync("/sys/fs/cgroup/cgroup.controllers")
        ? "no cgroup2 at /sys/fs/cgroup (runc needs it)"
        : null;
if (SKIP !== null) console.warn(`tests/dm/operator-path.test.ts SKIPPED: ${SKIP}`);

const thinsnap = (args: string[]): Promise<RunResult> => run([BIN, ...args], { timeoutMs: 300_000 });
const ok = async (args: string[]): Promise<RunResult> => {
  const r = await thinsnap(args);
  if (r.code !== 0) throw new Error(`thinsnap ${args.join(" ")} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
};

/** `thinsnap serve ARGS` in the background, as in a second terminal. */
class Serve {
  readonly child: ChildProcess;
  readonly exited: Promise<number>;
  out = "";
  constructor(args: string[]) {
    this.child = spawn(BIN, ["serve", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout?.on("data", (b: Buffer) => (this.out += b.toString()));
    this.child.stderr?.on("data", (b: Buffer) => (this.out += b.toString()));
    this.exited = exitOf(this.child);
  }
  async ready(address: string): Promise<void> {
    let code: number | null = null;
    void this.exited.then((c) => (code = c));
    // the "serving" line comes after the signal handlers' set-up: a Ctrl-C before it would kill, not stop
    await waitFor(`thinsnap serve on ${address}`, async () => this.out.includes("msg=serving") && (await socketAccepts(address)), {
      timeoutMs: 300_000,
      intervalMs: 250,
      died: () => (code === null ? null : `exited ${code}:\n${this.out}`),
    });
  }
  /** Ctrl-C in its terminal. */
  async stop(): Promise<number> {
    this.child.kill("SIGINT");
    return this.exited;
  }
}

const serves: Serve[] = [];
let containerd: Containerd | null = null;

afterAll(async () => {
  if (SKIP !== null) return;
  await containerd?.removeAllTasks();
  await containerd?.stop();
  for (const s of serves) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill("SIGKILL");
  for (const s of serves) await s.exited;
  for (const [name, cfg] of [["thinsnap-pool", []], ["tsop2", ["--config", `${WORK}/op2/config.toml`]]] as const) {
    await thinsnap(["pool", "destroy", "--pool-name", name, ...cfg, "--delete-files"]);
  }
  spawnSync("umount", ["-l", `${WORK}/op2/mnt`]);
  spawnSync("umount", [ROOT]);
  rmSync(WORK, { recursive: true, force: true });
}, 300_000);

describe.skipIf(SKIP !== null)("the operator's path", () => {
  test(
    "the README's walk-through, from build to starting over",
    async () => {
      const doc = readFileSync(WALKTHROUGH_DOC, "utf8");
      const steps = walkthroughSteps(doc);
      const snippet = containerdSnippetOf(doc);
      const address = (parse(snippet) as { proxy_plugins: { thinsnap: { address: string } } }).proxy_plugins.thinsnap.address;
      expect(existsSync("/etc/thinsnap/config.toml")).toBe(false); // zero config for real
      mkdirSync(ROOT, { recursive: true });
      expect(spawnSync("mount", ["-t", "tmpfs", "-o", "size=5g,mode=0700", "tmpfs", ROOT]).status).toBe(0);
      mkdirSync(WORK, { recursive: true });
      const log = (s: string): void => console.log(`operator-path: ${s}`);

      let serve: Serve | null = null;
      let stopped = false;
      for (const step of steps) {
        log(JSON.stringify(step));
        switch (step.kind) {
          case "npm-ci":
            log("skipped: the guest has no network; node_modules are the checkout's");
            break;
          case "build":
            if (!existsSync(BIN)) {
              const r = spawnSync(step.command[0] ?? "npm", step.command.slice(1), { cwd: REPO, encoding: "utf8" });
              expect(r.status).toBe(0);
            }
            expect(existsSync(BIN)).toBe(true);
            break;
          case "serve": {
            serve = new Serve(step.args);
            serves.push(serve);
            await serve.ready(address);
            // what it chose is printed: the config to keep and the snippet to use
            const out = serve.out;
            expect(out).toContain("no config file (/etc/thinsnap/config.toml): serving on the embedded default");
            const printed = out.slice(out.indexOf("save this as /etc/thinsnap/config.toml:") + 40, out.indexOf("containerd: the lines for"));
            const cfg = parseConfig(printed, "printed");
            expect(cfg.poolName).toBe("thinsnap-pool");
            expect(cfg.pool?.dataFile).toBe(`${ROOT}/pool/data`);
            expect(cfg.pool?.metaFile).toBe(`${ROOT}/pool/data.meta`);
            expect(cfg.pool?.dataSize).toBe(2n << 30n); // half of the 5 GiB tmpfs, rounded down to 1 GiB
            expect(cfg.baseImageSize).toBe(512n << 20n);
            expect(cfg.address).toBe(address);
            const printedSnippet = out.slice(out.indexOf("[proxy_plugins.thinsnap]")).split("\n\n")[0] ?? "";
            expect(parse(printedSnippet)).toEqual(parse(snippet));
            expect(out).toContain("formatting the base device");
            break;
          }
          case "restart-containerd":
            containerd = await startContainerd({ dir: `${WORK}/containerd`, extraConfig: snippet });
            break;
          case "pull": {
            const img = buildImage({ out: `${WORK}/image.tar`, name: step.ref, layers: 2 });
            const r = await containerd!.ctr("images", "import", "--snapshotter", "thinsnap", img.path);
            expect(r.code).toBe(0);
            break;
          }
          case "ctr": {
            const r = await containerd!.ctr(...step.args);
            if (r.code !== 0) log(r.stderr);
            expect(r.code).toBe(0);
            if (step.args[0] === "run") expect(r.stdout).toBe(`${step.args.slice(step.args.indexOf("echo") + 1).join(" ")}\n`);
            break;
          }
          case "thinsnap": {
            const r = await ok(step.args);
            if (step.args[0] === "pool" && step.args[1] === "status") {
              expect(r.stdout).toContain("thinsnap-pool");
              expect(r.stdout).toMatch(/snapshots\s+.*\d+ committed/); // the store found with no --root
            }
            if (step.args[0] === "check") expect(r.stdout).toContain('ok: store and pool "thinsnap-pool" agree');
            if (step.args[0] === "pool" && step.args[1] === "destroy") {
              expect(stopped).toBe(true);
              expect(r.stdout).toContain('destroyed thin-pool "thinsnap-pool" (files deleted:');
              expect(r.stdout).toMatch(/store moved aside: \/var\/lib\/thinsnap\/metadata\.db -> \/var\/lib\/thinsnap\/metadata\.db\.destroyed-/);
            }
            break;
          }
          case "stop-serve": {
            // not in the README: destroying under a running serve is refused, and changes nothing
            const r = await thinsnap(["pool", "destroy", "--delete-files"]);
            expect(r.code).toBe(1);
            expect(r.stderr).toContain(`thinsnap serve is running on ${address}: stop it before pool destroy`);
            expect(existsSync(`${ROOT}/pool/data`)).toBe(true);
            expect(await serve!.stop()).toBe(0);
            stopped = true;
            break;
          }
        }
      }
      expect(stopped).toBe(true);
      expect(existsSync(`${ROOT}/pool/data`)).toBe(false);

      // starting over: serve makes a new pool and a new store, and they agree
      await containerd?.stop();
      containerd = null;
      const again = new Serve([]);
      serves.push(again);
      await again.ready(address);
      expect(again.out).toContain("created file-backed thin-pool");
      await snapshotsClient(address).prepare({ key: "again", parent: "" });
      expect((await ok(["check"])).stdout).toContain('ok: store and pool "thinsnap-pool" agree');
      expect(await again.stop()).toBe(0);
      await ok(["pool", "destroy", "--delete-files"]);
      expect(readdirSync(ROOT).filter((f) => f.startsWith("metadata.db.destroyed-")).length).toBeGreaterThanOrEqual(2);
      for (const src of installSources(doc)) expect(existsSync(join(REPO, src))).toBe(true);
    },
    1_200_000,
  );

  test(
    "pool create prints TOML on stdout; destroy is refused while a device is mounted, forced too; a mismatched store names its fix",
    async () => {
      const dir = `${WORK}/op2`;
      mkdirSync(`${dir}/mnt`, { recursive: true });
      const common = ["--pool-name", "tsop2", "--root", `${dir}/root`, "--address", `${dir}/ts.sock`];
      const made = await ok(["pool", "create", ...common, "--data-file", `${dir}/data`, "--data-size", "1G", "--write-config", `${dir}/config.toml`]);
      const cfg = parseConfig(made.stdout, "stdout");
      expect(readFileSync(`${dir}/config.toml`, "utf8")).toBe(made.stdout.slice(made.stdout.indexOf("\n") + 1));
      expect([cfg.poolName, cfg.pool?.metaFile, cfg.baseImageSize]).toEqual(["tsop2", `${dir}/data.meta`, 256n << 20n]);
      expect(made.stdout).not.toContain("proxy_plugins");
      expect(made.stderr).toContain('created thin-pool "tsop2"');
      expect(made.stderr).toMatch(/# containerd [0-9.]+: add to \/etc\/containerd\/config.toml/);
      expect(made.stderr).toContain(`address = "${dir}/ts.sock"`);
      const again = await thinsnap(["pool", "create", "--config", `${dir}/config.toml`, "--write-config", `${dir}/config.toml`]);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain("the file exists; use --force");

      const serve = new Serve(["--config", `${dir}/config.toml`]);
      serves.push(serve);
      await serve.ready(`${dir}/ts.sock`);
      const m = (await snapshotsClient(`${dir}/ts.sock`).prepare({ key: "busy", parent: "" })).mounts[0]!;
      expect(await serve.stop()).toBe(0);
      // a second start: the store then expects transaction id 2 (one behind is a crash, not a mismatch)
      const second = new Serve(["--config", `${dir}/config.toml`]);
      serves.push(second);
      await second.ready(`${dir}/ts.sock`);
      expect(await second.stop()).toBe(0);
      expect(spawnSync("mount", ["-t", m.type, m.source, `${dir}/mnt`]).status).toBe(0);
      for (const force of [[], ["--force"]]) {
        const r = await thinsnap(["pool", "destroy", "--config", `${dir}/config.toml`, "--delete-files", ...force]);
        expect(r.code).toBe(1);
        expect(r.stderr).toContain(`(mounted on ${dir}/mnt)`);
        expect(r.stderr).toContain("nothing was removed");
      }
      expect((await ok(["pool", "status", "--config", `${dir}/config.toml`])).stdout).toContain("tsop2");
      expect(spawnSync("umount", [`${dir}/mnt`]).status).toBe(0);
      const gone = await ok(["pool", "destroy", "--config", `${dir}/config.toml`, "--delete-files"]);
      const aside = /-> (\S+)/.exec(gone.stdout)?.[1] ?? "";
      expect(existsSync(aside)).toBe(true);

      // the old store with a new pool: serve refuses and says which file to move
      spawnSync("mv", [aside, `${dir}/root/metadata.db`]);
      await ok(["pool", "create", "--config", `${dir}/config.toml`]);
      const refused = new Serve(["--config", `${dir}/config.toml`]);
      serves.push(refused);
      const timer = setTimeout(() => refused.child.kill("SIGKILL"), 180_000); // served instead of refusing: fail, not hang
      expect(await refused.exited).toBe(1);
      clearTimeout(timer);
      expect(refused.out).toContain("has transaction id 0 but this store expects 2");
      expect(refused.out).toContain(`move the store aside (mv ${dir}/root/metadata.db ${dir}/root/metadata.db.old`);
    },
    900_000,
  );
  test(
    "zero-config serve of a pool already loaded on other devices: no files made, no [pool] printed",
    async () => {
      const dir = `${WORK}/op3`;
      mkdirSync(dir, { recursive: true });
      const loop = (file: string, size: string): string => {
        expect(spawnSync("truncate", ["-s", size, file]).status).toBe(0);
        const r = spawnSync("losetup", ["-f", "--show", file], { encoding: "utf8" });
        expect(r.status).toBe(0);
        return r.stdout.trim();
      };
      const [data, meta] = [loop(`${dir}/data`, "1G"), loop(`${dir}/meta`, "64M")];
      try {
        expect(existsSync("/etc/thinsnap/config.toml")).toBe(false);
        await ok(["pool", "create", "--data-dev", data, "--meta-dev", meta]); // pool_name of the embedded default
        const serve = new Serve([]);
        serves.push(serve);
        await serve.ready("/run/thinsnap/thinsnap.sock");
        expect(serve.out).toContain('serving on the embedded default\'s settings and the thin-pool "thinsnap-pool" already loaded');
        const printed = serve.out.slice(serve.out.indexOf("save this as /etc/thinsnap/config.toml:") + 40, serve.out.indexOf("containerd: the lines for"));
        expect(parseConfig(printed, "printed").pool).toBeNull();
        expect(existsSync(`${ROOT}/pool/data`)).toBe(false);
        await snapshotsClient("/run/thinsnap/thinsnap.sock").prepare({ key: "on-devices", parent: "" });
        expect(await serve.stop()).toBe(0);
        await ok(["pool", "destroy", "--force"]);
      } finally {
        spawnSync("losetup", ["-d", data]);
        spawnSync("losetup", ["-d", meta]);
      }
    },
    600_000,
  );
});
