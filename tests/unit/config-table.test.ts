/** The config key table and what is derived from it: example file, flags, docs, device-name limit, key lines. */
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../../src/cli/args.ts";
import { CONFIG_FLAGS, configFromFlags } from "../../src/cli/config-flags.ts";
import { ConfigError, DEFAULTS, parseConfig } from "../../src/config/config.ts";
import { exampleToml, keysMarkdown } from "../../src/config/docs.ts";
import { KeyLines } from "../../src/config/key-lines.ts";
import { KEYS, keyName } from "../../src/config/keys.ts";
import { sizeLiteral } from "../../src/config/kinds.ts";
import { GiB, KiB, MiB } from "../../src/config/units.ts";
import { DM_NAME_MAX, MAX_POOL_NAME_BYTES, thinDeviceName, THIN_DEVICE_ROLES } from "../../src/pool/device-names.ts";
import { MAX_THIN_ID } from "../../src/dm/status.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { Store } from "../../src/store/store.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";

const REPO = join(import.meta.dir, "../..");

describe("the key table", () => {
  test("packaging/config.example.toml is what `thinsnap config example` prints", async () => {
    const file = await readFile(join(REPO, "packaging/config.example.toml"), "utf8");
    expect(file).toBe(exampleToml()); // regenerate: bun src/cli/main.ts config example > packaging/config.example.toml
    const r = spawnSync(process.execPath, [join(REPO, "src/cli/main.ts"), "config", "example"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(file);
  });
  test("keys, fields and flags are unique", () => {
    const names = KEYS.map(keyName);
    expect(new Set(names).size).toBe(names.length);
    const fields = KEYS.map((e) => e.field);
    expect(new Set(fields).size).toBe(fields.length);
    const flags = KEYS.flatMap((e) => (e.flag !== undefined ? [e.flag] : []));
    expect(new Set(flags).size).toBe(flags.length);
  });
  test("the keys, in order; the containerd ones are containerd's devmapper keys", () => {
    // containerd's: snapshots/devmapper/config.go (containerd 1.6), the toml tags of Config
    expect(KEYS.map((e) => (e.containerd ? `${keyName(e)} (containerd)` : keyName(e)))).toEqual([
      "pool_name (containerd)",
      "root_path (containerd)",
      "base_image_size (containerd)",
      "max_size_limit",
      "async_remove (containerd)",
      "discard_blocks (containerd)",
      "fs_type (containerd)",
      "fs_options (containerd)",
      "address",
      "socket_mode",
      "socket_group",
      "min_free_space",
      "log_level",
      "log_format",
      "metrics_address",
      "kernel_threads",
      "pool.data_file",
      "pool.meta_file",
      "pool.data_size",
      "pool.meta_size",
      "pool.block_size",
      "pool.low_water_mark",
    ]);
  });
  test("the README table has one row per key, with its default", () => {
    const md = keysMarkdown().trimEnd().split("\n");
    expect(md).toHaveLength(2 + KEYS.length);
    expect(md).toContain(
      '| `base_image_size` | "10GB"; with [pool]: data_size / 4 rounded down to 1 MiB, at most 10 GiB | yes | size of every thin device (go-units: `10GB` = 10 GiB) |',
    );
    expect(md.some((l) => l.startsWith("| `pool_name` | (required) | yes |"))).toBe(true);
    expect(md.some((l) => l.startsWith("| `[pool] meta_size` | 48 bytes per data block") && l.includes("at least 64 MiB"))).toBe(true);
  });
  test("size literals read back exactly", () => {
    for (const n of [0n, 1000n, 512n * KiB, 75n * MiB, 10n * GiB, GiB + 1n]) {
      expect(parseConfig(`pool_name = "p"\nmin_free_space = ${sizeLiteral(n)}`, "x").minFreeSpace).toBe(n);
    }
  });
});

describe("flags of serve and check", () => {
  const flags = async (argv: string[]) => {
    const dir = await mkdtemp(join(tmpdir(), "thinsnap-flags-"));
    try {
      const file = join(dir, "c.toml");
      await writeFile(file, 'pool_name = "p"\nlog_level = "warn"\n');
      return await configFromFlags(parseArgs(["--config", file, ...argv], CONFIG_FLAGS));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  const flagErr = async (argv: string[]): Promise<ConfigError> => {
    try {
      await flags(argv);
    } catch (e) {
      if (e instanceof ConfigError) return e;
      throw e;
    }
    throw new Error("expected a ConfigError");
  };
  test("a flag for each key that names one, help and default from the table", () => {
    expect(Object.keys(CONFIG_FLAGS)).toEqual([
      "config",
      "pool-name",
      "root",
      "address",
      "log-level",
      "log-format",
      "metrics-address",
      "data-file",
      "meta-file",
      "data-size",
      "meta-size",
      "block-size",
      "low-water-mark",
    ]);
    expect(CONFIG_FLAGS["root"]).toEqual({ help: "metadata database directory (sets root_path)", default: DEFAULTS.rootPath });
    expect(CONFIG_FLAGS["log-level"]?.help).toBe("trace, debug, info, warn or error (sets log_level)");
    expect(CONFIG_FLAGS["pool-name"]?.default).toBeUndefined();
  });
  test("flags win over the file", async () => {
    const cfg = await flags(["--log-level", "debug", "--root", "/srv/ts", "--pool-name", "q", "--address", "/run/x.sock"]);
    expect([cfg.logLevel, cfg.rootPath, cfg.poolName, cfg.address, cfg.logFormat]).toEqual(["debug", "/srv/ts", "q", "/run/x.sock", "text"]);
    expect((await flags([])).logLevel).toBe("warn");
  });
  test("bad flag values are read and checked like the file's", async () => {
    let e = await flagErr(["--log-level", "loud"]);
    expect([e.file, e.line, e.key]).toEqual([null, null, "log_level"]);
    expect(e.message).toBe('--log-level loud: must be one of "trace", "debug", "info", "warn", "error"');
    e = await flagErr(["--pool-name", "x".repeat(MAX_POOL_NAME_BYTES + 1)]);
    expect(e.message).toContain(`must be at most ${MAX_POOL_NAME_BYTES} bytes long`);
    e = await flagErr(["--root", "rel"]);
    expect(e.message).toBe("--root rel: must be an absolute path");
  });
});

describe("pool_name and the device names derived from it", () => {
  test("the longest derived name fits the kernel's limit exactly", () => {
    const longest = THIN_DEVICE_ROLES.map((r) => thinDeviceName("a".repeat(MAX_POOL_NAME_BYTES), r, MAX_THIN_ID));
    expect(Math.max(...longest.map((n) => n.length))).toBe(DM_NAME_MAX);
    expect(longest).toContain(`${"a".repeat(MAX_POOL_NAME_BYTES)}-foreign-16777215`);
  });
  test("the snapshotter names its devices as device-names.ts says", async () => {
    const poolName = "p".repeat(MAX_POOL_NAME_BYTES);
    const store = Store.open(":memory:");
    const sn = await ThinSnapshotter.open(
      { ...TEST_OPTIONS, poolName },
      { store, pool: new FakePool(), format: async () => {}, statusTtlMs: 0 },
    );
    await sn.prepare("a", "");
    await sn.commit("c", "a");
    await sn.prepare("b", "c");
    const devices = store.allDevices();
    expect(devices.length).toBeGreaterThanOrEqual(3);
    for (const d of devices) {
      const role = d.role === "snapshot" ? "snap" : d.role;
      expect(THIN_DEVICE_ROLES as readonly string[]).toContain(role);
      expect(d.dmName).toBe(thinDeviceName(poolName, role as (typeof THIN_DEVICE_ROLES)[number], d.thinId));
      expect(d.dmName.length).toBeLessThanOrEqual(DM_NAME_MAX);
    }
    await sn.close();
    store.close();
  });
});

describe("key lines (smol-toml on prefixes)", () => {
  test("a key is on the line its construct starts", () => {
    const k = new KeyLines('a = """\nb = 1\n"""\nc = [\n  1,\n]\n\n[t]\nd = 2\n');
    expect([k.line(["a"]), k.line(["b"]), k.line(["c"]), k.line(["t"]), k.line(["t", "d"])]).toEqual([1, null, 4, 8, 9]);
    expect(k.lineText(["t", "d"])).toBe("d = 2");
  });
  test("socket_mode's source is found after multi-line values", () => {
    const e = configErr('pool_name = "p"\nfs_options = """\nx\n"""\nsocket_mode = 660\n');
    expect([e.line, e.key]).toEqual([5, "socket_mode"]);
    expect(e.message).toContain("octal");
    expect(parseConfig('pool_name = "p"\nfs_options = """\nsocket_mode = 1\n"""\nsocket_mode = 0o640\n', "x").socketMode).toBe(0o640);
  });
});

function configErr(text: string): ConfigError {
  try {
    parseConfig(text, "x");
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("thinsnap pool create checks its sizes before touching anything", () => {
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [join(REPO, "src/cli/main.ts"), "pool", "create", "--name", "t", "--data-file", "/nonexistent/d", ...args], {
      encoding: "utf8",
    });
  const cases: [string[], string][] = [
    [["--block-size", "100k"], "thinsnap pool create: --block-size 100k: must be a multiple of 64 KiB between 64 KiB and 1 GiB"],
    [["--data-size", "1000k"], "--data-size 1000k: must be a non-zero multiple of block_size (64 KiB)"],
    [["--meta-size", "1M"], "--meta-size 1M: must be between 2 MiB and 16 GiB"],
    [["--data-size", "1G", "--low-water-mark", "16384"], "--low-water-mark 16384: must be below the number of data blocks (16384)"],
    [["--data-size", "lots"], "--data-size lots: invalid size: 'lots'"],
    [["--data-size", "2Q"], "--data-size 2Q: invalid size: '2Q'"],
  ];
  for (const [args, want] of cases) {
    test(args.join(" "), () => {
      const r = run(...args);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain(want);
    });
  }
});
