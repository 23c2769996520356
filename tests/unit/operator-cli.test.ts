/**
 * The operator's path on the host (no device-mapper needed): one config for
 * every subcommand, the embedded default, help and errors that name what the
 * operator typed, and the pure rules behind the defaults it prints.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "smol-toml";
import { didYouMean, parseArgs } from "../../src/cli/args.ts";
import { CONFIG_FLAGS } from "../../src/cli/config-flags.ts";
import { kernelHint } from "../../src/cli/runtime.ts";
import { ConfigError, type EmbeddedDefault, loadConfig, parseConfig } from "../../src/config/config.ts";
import { DEFAULT_POOL_NAME, KEYS } from "../../src/config/keys.ts";
import { configToml } from "../../src/config/render.ts";
import { hostSnippet } from "../../src/install/snippets.ts";
import { GiB, MiB, TiB } from "../../src/config/units.ts";
import * as geo from "../../src/pool/geometry.ts";
import { holdersOf } from "../../src/pool/provision.ts";
import { embeddedDefault, existingAncestor, freeSpace, roomProblem } from "../../src/pool/zero-config.ts";

const REPO = join(import.meta.dir, "../..");
const cli = (...args: string[]) => spawnSync(process.execPath, [join(REPO, "src/cli/main.ts"), ...args], { encoding: "utf8" });

let dir = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "thinsnap-operator-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("help and errors", () => {
  for (const args of [["serve", "-h"], ["check", "-h"], ["pool", "-h"], ["pool", "status", "-h"], ["pool", "create", "--help"], ["config", "-h"]]) {
    test(`thinsnap ${args.join(" ")} prints the usage`, () => {
      const r = cli(...args);
      expect(r.status).toBe(0);
      expect(r.stdout).toStartWith("Usage:");
    });
  }
  test("a mistyped command or subcommand gets a suggestion", () => {
    let r = cli("sevre");
    expect(r.status).toBe(2);
    expect(r.stderr).toStartWith('thinsnap: unknown command "sevre" (did you mean "serve"?)');
    r = cli("pool", "stauts");
    expect(r.stderr).toStartWith('thinsnap pool stauts: unknown subcommand "stauts" (did you mean "status"?)');
    r = cli("check", "--confg", "x");
    expect(r.stderr).toStartWith('thinsnap check: unknown flag --confg (did you mean "--config"?)');
    expect(didYouMean("zzzz", ["a", "b"])).toBe(" (one of: a, b)");
  });
  test("every subcommand takes the same config flags, and its usage lists every flag", () => {
    for (const cmd of ["serve", "check", "pool"]) {
      const r = cli(cmd, "--help");
      for (const flag of Object.keys(CONFIG_FLAGS)) expect(r.stdout).toContain(`--${flag}`);
    }
    const p = parseArgs(["--config", "x", "--data-size", "2G", "-h"], { ...CONFIG_FLAGS, help: { type: "boolean", help: "" } });
    expect(p.flags).toEqual({ config: "x", "data-size": "2G", help: true });
  });
  test("pool create checks every flag before any device-mapper call, naming the flag as typed", () => {
    const r = cli("pool", "create", "--pool-name", "t", "--data-file", `${dir}/d`, "--data-size", "2Q");
    expect(r.status).toBe(2);
    expect(r.stderr).toStartWith("thinsnap pool create: --data-size 2Q: invalid size: '2Q'");
    expect(r.stderr).not.toContain("device-mapper");
    expect(r.stderr).not.toContain("override");
  });
  test("pool create --write-config refuses to overwrite a file without --force, before touching anything", () => {
    const out = join(dir, "exists.toml");
    writeFileSync(out, "keep me\n");
    const r = cli("pool", "create", "--pool-name", "t", "--data-file", `${dir}/d2`, "--data-size", "1G", "--write-config", out);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`--write-config ${out}: the file exists; use --force to overwrite it`);
    expect(readFileSync(out, "utf8")).toBe("keep me\n");
  });
  test("pool create with a config file that has no [pool] says what to give", () => {
    const cfg = join(dir, "nopool.toml");
    writeFileSync(cfg, 'pool_name = "p"\n');
    const r = cli("pool", "create", "--config", cfg);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${cfg} has no [pool] table: give --data-file (and --data-size), or --data-dev and --meta-dev`);
  });
  test("--name and --pool-name are one flag", () => {
    const r = cli("pool", "status", "--name", "a", "--pool-name", "b");
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--name a and --pool-name b disagree");
  });
  test("a required key names its flag", async () => {
    const cfg = join(dir, "empty.toml");
    writeFileSync(cfg, "");
    const e = await loadConfig(cfg).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).toContain("(set pool_name in the config file or pass --pool-name)");
  });
  test("a containerd config.toml without a devmapper section says exactly that", () => {
    const text = 'version = 2\n[proxy_plugins.thinsnap]\n  type = "snapshot"\n  address = "/run/thinsnap/thinsnap.sock"\n';
    expect(() => parseConfig(text, "/etc/containerd/config.toml")).toThrow(
      '/etc/containerd/config.toml:1: looks like a containerd config (it has version, proxy_plugins) but has no [plugins."io.containerd.snapshotter.v1.devmapper"]',
    );
    expect(() => parseConfig(text, "c")).not.toThrow('unknown key "version"');
  });
  test("the modprobe hint is given once, and only when the kernel has the modules", () => {
    const mods = join(dir, "modules");
    mkdirSync(mods);
    expect(kernelHint("x", join(dir, "absent"))).toContain("has no modules directory");
    writeFileSync(join(mods, "modules.dep"), "kernel/drivers/md/dm-mod.ko:\n");
    expect(kernelHint("x", mods)).toContain("has no dm-mod/dm-thin-pool module");
    writeFileSync(join(mods, "modules.dep"), "kernel/drivers/md/dm-mod.ko:\nkernel/drivers/md/dm-thin-pool.ko: kernel/drivers/md/dm-mod.ko\n");
    expect(kernelHint("x", mods)).toBe("load it with: modprobe dm_thin_pool (it loads dm_mod too)");
  });
});

describe("the embedded default (no config file)", () => {
  const fixed = (size: bigint): EmbeddedDefault & { asked: string[] } => {
    const asked: string[] = [];
    return { asked, dataSize: (f) => (asked.push(f), size) };
  };
  test("a missing default file gives a file-backed pool under root_path, flags override every part", async () => {
    const e = fixed(4n * GiB);
    const cfg = await loadConfig(null, {}, new Map(), e);
    expect(cfg.poolName).toBe(DEFAULT_POOL_NAME);
    expect(cfg.pool).toEqual({
      dataFile: "/var/lib/thinsnap/pool/data",
      metaFile: "/var/lib/thinsnap/pool/data.meta",
      dataSize: 4n * GiB,
      metaSize: geo.defaultMetaSize(4n * GiB, geo.DEFAULT_BLOCK_SIZE),
      blockSize: geo.DEFAULT_BLOCK_SIZE,
      lowWaterMark: geo.defaultLowWaterMark(4n * GiB, geo.DEFAULT_BLOCK_SIZE),
    });
    expect(cfg.baseImageSize).toBe(GiB); // a quarter of the pool, not 10 GiB
    expect(e.asked).toEqual(["/var/lib/thinsnap/pool/data"]);
    const key = (flag: string) => KEYS.find((k) => k.flag === flag)!;
    const flagged = await loadConfig(null, {}, new Map([[key("root"), "/srv/ts"], [key("pool-name"), "mine"]]), e);
    expect([flagged.poolName, flagged.pool?.dataFile, flagged.pool?.metaFile]).toEqual(["mine", "/srv/ts/pool/data", "/srv/ts/pool/data.meta"]);
    const sized = await loadConfig(null, {}, new Map([[key("data-size"), "2G"]]), e);
    expect(sized.pool?.dataSize).toBe(2n * GiB);
  });
  test("a config file, even one without [pool], is used as it is", async () => {
    const cfg = join(dir, "plain.toml");
    writeFileSync(cfg, 'pool_name = "lvm-pool"\n');
    const c = await loadConfig(cfg, {}, new Map(), fixed(GiB));
    expect([c.poolName, c.pool, c.baseImageSize]).toEqual(["lvm-pool", null, 10n * GiB]);
  });
  test("a new data file is sized from the free space; an existing one keeps its size", () => {
    const f = join(dir, "pool", "data");
    const want = geo.dataSizeForFreeSpace(freeSpace(dir));
    expect(embeddedDefault.dataSize(f)).toBe(want ?? geo.MIN_ZERO_CONFIG_DATA_SIZE);
    if (want === null) expect(roomProblem(f)).toContain("would be below 1 GiB");
    else expect(roomProblem(f)).toBeNull();
    mkdirSync(join(dir, "pool"));
    writeFileSync(f, Buffer.alloc(4096));
    expect(embeddedDefault.dataSize(f)).toBe(4096n);
    expect(roomProblem(f)).toBeNull(); // an existing pool is reloaded whatever the free space
    expect(existingAncestor(join(dir, "a", "b", "c"))).toBe(dir);
  });
  test("the data size rule: half the free space, whole GiB, at most 100 GiB, refused below 1 GiB", () => {
    expect(geo.dataSizeForFreeSpace(TiB)).toBe(geo.DEFAULT_DATA_SIZE);
    expect(geo.dataSizeForFreeSpace(9n * GiB + 5n)).toBe(4n * GiB);
    expect(geo.dataSizeForFreeSpace(2n * GiB)).toBe(GiB);
    expect(geo.dataSizeForFreeSpace(2n * GiB - 1n)).toBeNull();
  });
  test("the base image size suits the pool: a quarter, at most 10 GiB", () => {
    expect(geo.baseImageSizeFor(2n * GiB)).toBe(512n * MiB);
    expect(geo.baseImageSizeFor(100n * GiB)).toBe(10n * GiB);
    expect(geo.baseImageSizeFor(GiB + 3n)).toBe(256n * MiB);
    const xfs = parseConfig('pool_name = "p"\nfs_type = "xfs"\n[pool]\ndata_size = "1G"\n', "x");
    expect(xfs.baseImageSize).toBe(300n * MiB); // mkfs.xfs's minimum beats a quarter
    const given = parseConfig('pool_name = "p"\nbase_image_size = "2G"\n[pool]\ndata_size = "1G"\n', "x");
    expect(given.baseImageSize).toBe(2n * GiB);
  });
  test("what serve prints reads back as the same config", () => {
    const cfg = parseConfig('pool_name = "p"\nroot_path = "/r"\n[pool]\ndata_size = "3G"\n', "x");
    const toml = configToml(cfg);
    expect(parseConfig(toml, "printed")).toEqual(cfg);
    const plugin = (parse(hostSnippet({ address: "/run/x.sock", rootPath: "/r" })) as { proxy_plugins: { thinsnap: unknown } }).proxy_plugins.thinsnap;
    expect(plugin).toEqual({ type: "snapshot", address: "/run/x.sock", exports: { root: "/r" } });
  });
});

describe("what holds a thin device", () => {
  test("its mount points from mountinfo, else the open count", () => {
    const mi = join(dir, "mountinfo");
    writeFileSync(mi, "36 25 253:3 / /mnt/a\\040b rw,relatime shared:1 - ext4 /dev/mapper/p-snap-1 rw\n37 25 8:1 / /boot rw - ext4 /dev/sda1 rw\n");
    expect(holdersOf(253, 3, 1, mi)).toEqual(["mounted on /mnt/a b"]);
    expect(holdersOf(253, 9999, 2, mi)).toEqual(["open 2 time(s) (a process has it open)"]);
  });
});
