/**
 * Who may talk to the daemon (issue 7): by default the socket is 0600 in a
 * 0700 directory and the database 0600, so a non-root client (uid 65534 via
 * setpriv) is refused by the kernel; socket_mode/socket_group grant a group,
 * by number or by name; an unknown socket_group stops the start.
 *
 * The unprivileged client is a small node:http2 script run by a copy of bun
 * (the one under node_modules may not be reachable for uid 65534): it sends
 * one gRPC Stat and prints the grpc-status, or the connect error.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dm as env, inGuest } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { snapshotsClient } from "../kit/client.ts";

const POOL = "tsaccess";
const NOBODY = 65534;
const GRANTED_GID = 4242;

const CLIENT = `
const http2 = require("node:http2");
const net = require("node:net");
const sock = process.argv[2];
const s = net.connect(sock);
s.on("error", (e) => { console.log("connect-error " + e.code); process.exit(0); });
s.on("connect", () => {
  const session = http2.connect("http://localhost", { createConnection: () => s });
  session.on("error", (e) => { console.log("session-error " + e.code); process.exit(0); });
  const req = session.request({ ":method": "POST", ":path": "/containerd.services.snapshots.v1.Snapshots/Stat", "content-type": "application/grpc", te: "trailers" });
  let st = "none";
  const pick = (h) => { if (h["grpc-status"] !== undefined) st = h["grpc-status"]; };
  req.on("response", pick); req.on("trailers", pick); req.on("data", () => {});
  req.on("end", () => { console.log("grpc-status " + st); session.close(); process.exit(0); });
  req.on("error", (e) => { console.log("stream-error " + e.code); process.exit(0); });
  req.end(Buffer.from([0, 0, 0, 0, 4, 0x12, 0x02, 0x6e, 0x6f]));
});
`;

describe.skipIf(!env.available)("socket and database permissions", () => {
  let tp: TestPool;
  let dir: string;
  let tools: string;
  const daemons: Daemon[] = [];

  beforeAll(() => {
    tp = createTestPool(POOL, { dataSize: 512 << 20 });
    dir = mkdtempSync("/tmp/tsaccess-");
    chmodSync(dir, 0o755);
    tools = `${dir}/tools`;
    mkdirSync(tools, { mode: 0o755 });
    copyFileSync(process.execPath, `${tools}/bun`);
    chmodSync(`${tools}/bun`, 0o755);
    writeFileSync(`${tools}/client.cjs`, CLIENT, { mode: 0o644 });
  }, 120_000);

  afterAll(async () => {
    for (const d of daemons) await d.kill();
    tp?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  async function start(cfg: DaemonConfig): Promise<Daemon> {
    const d = await Daemon.start({ config: cfg, readyTimeoutMs: 120_000 });
    daemons.push(d);
    return d;
  }

  /** Runs the client as uid 65534 with the given gid (and no supplementary groups). */
  function asNobody(sock: string, gid = NOBODY): string {
    const r = Bun.spawnSync(
      ["setpriv", `--reuid=${NOBODY}`, `--regid=${gid}`, "--clear-groups", `${tools}/bun`, `${tools}/client.cjs`, sock],
      { stdout: "pipe", stderr: "pipe", cwd: tools, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/" } },
    );
    return `${r.stdout.toString().trim()}${r.exitCode === 0 ? "" : ` (exit ${r.exitCode}: ${r.stderr.toString().trim().slice(0, 300)})`}`;
  }

  const mode = (p: string): number => statSync(p).mode & 0o777;

  /** A config whose socket is in `${dir}/<sub>`, a directory made beforehand, 0755 (the admin's, world-searchable). */
  function inOpenDir(sub: string, extra: Partial<DaemonConfig> = {}): DaemonConfig {
    mkdirSync(`${dir}/${sub}`, { mode: 0o755 });
    chmodSync(`${dir}/${sub}`, 0o755);
    return { poolName: POOL, rootPath: `${dir}/root`, address: `${dir}/${sub}/s.sock`, ...extra };
  }

  test(
    "defaults: socket 0600 in a 0700 directory, database 0600; uid 65534 is refused, root is served",
    async () => {
      const cfg: DaemonConfig = { poolName: POOL, rootPath: `${dir}/root`, address: `${dir}/run-default/sub/s.sock` };
      const d = await start(cfg);
      expect(d.ready).toBe(true);
      const modes = {
        socket: mode(cfg.address),
        socketDir: mode(`${dir}/run-default/sub`),
        database: mode(`${cfg.rootPath}/metadata.db`),
        rootDir: mode(cfg.rootPath),
        wal: existsSync(`${cfg.rootPath}/metadata.db-wal`) ? mode(`${cfg.rootPath}/metadata.db-wal`) : null,
        shm: existsSync(`${cfg.rootPath}/metadata.db-shm`) ? mode(`${cfg.rootPath}/metadata.db-shm`) : null,
      };
      console.log("default modes (octal):", Object.fromEntries(Object.entries(modes).map(([k, v]) => [k, v === null ? null : v.toString(8)])));
      expect(modes.socket).toBe(0o600);
      expect(modes.socketDir).toBe(0o700);
      expect(modes.database).toBe(0o600);
      expect(modes.rootDir).toBe(0o700);
      for (const m of [modes.wal, modes.shm]) if (m !== null) expect(m & 0o077).toBe(0);
      expect(statSync(cfg.address).uid).toBe(0);
      expect(asNobody(cfg.address)).toBe("connect-error EACCES");
      // root still gets answers
      const st = await snapshotsClient(cfg.address).stat({ key: "no" }).catch((e: { code: number }) => e.code);
      expect(st).toBe(5); // NotFound
      await d.stop();
    },
    300_000,
  );

  test(
    "an existing world-searchable directory: the 0600 socket itself refuses uid 65534",
    async () => {
      const cfg = inOpenDir("run-open");
      const d = await start(cfg);
      expect(mode(`${dir}/run-open`)).toBe(0o755); // an existing directory is the admin's
      expect(mode(cfg.address)).toBe(0o600);
      expect(asNobody(cfg.address)).toBe("connect-error EACCES");
      await d.stop();
    },
    300_000,
  );

  test(
    "socket_mode 0660 + socket_group (number, then name) grants that group, nobody else",
    async () => {
      const cfg = inOpenDir("run-group", { socketMode: "0660", socketGroup: String(GRANTED_GID) });
      let d = await start(cfg);
      expect(mode(cfg.address)).toBe(0o660);
      expect(statSync(cfg.address).gid).toBe(GRANTED_GID);
      expect(asNobody(cfg.address, GRANTED_GID)).toBe("grpc-status 5"); // served: NotFound for key "no"
      expect(asNobody(cfg.address)).toBe("connect-error EACCES");
      await d.stop();

      // by name: only in the throw-away guest, whose /etc is a tmpfs overlay
      if (inGuest) {
        if (!readFileSync("/etc/group", "utf8").includes("\nthinsnaptest:")) appendFileSync("/etc/group", `thinsnaptest:x:${GRANTED_GID + 1}:\n`);
        d = await start({ ...cfg, socketGroup: "thinsnaptest" });
        expect(statSync(cfg.address).gid).toBe(GRANTED_GID + 1);
        expect(asNobody(cfg.address, GRANTED_GID + 1)).toBe("grpc-status 5");
        expect(asNobody(cfg.address, GRANTED_GID)).toBe("connect-error EACCES");
        await d.stop();
      }

      // an unknown group name: the daemon refuses to start
      d = await start({ ...cfg, socketGroup: "no-such-group-xyz" });
      expect(d.ready).toBe(false);
      expect(d.exit?.code).not.toBe(0);
      expect(d.lines.join("\n")).toContain("no-such-group-xyz");
    },
    300_000,
  );
});
