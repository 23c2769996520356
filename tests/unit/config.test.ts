import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Config,
  ConfigError,
  DEFAULT_CONFIG_PATH,
  DEFAULTS,
  loadConfig,
  parseConfig,
  POOL_DEFAULTS,
} from "../../src/config/config.ts";
import { findKeyLine } from "../../src/config/key-lines.ts";
import { MAIN_KEYS, POOL_KEYS } from "../../src/config/keys.ts";
import { defaultLowWaterMark, defaultMetaSize, KERNEL_META_MAX } from "../../src/pool/geometry.ts";
import { MAX_POOL_NAME_BYTES } from "../../src/pool/device-names.ts";
import { formatSize, GiB, KiB, MiB, parseSize, PiB, TiB } from "../../src/config/units.ts";
import { isCode, SnapshotterError } from "../../src/errors.ts";

const FILE = "/etc/thinsnap/test.toml";

/** Runs fn, expects a ConfigError, returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError, got none");
}

const parseErr = (text: string): ConfigError => configError(() => parseConfig(text, FILE));
const withPool = (rest: string): Config => parseConfig(`pool_name = "p"\n${rest}`, FILE);
const withPoolErr = (rest: string): ConfigError => parseErr(`pool_name = "p"\n${rest}`);

/** The error is about `key` on line `line`, and its message contains each of `parts`. */
function expectKeyError(e: ConfigError, key: string, line: number, ...parts: string[]): void {
  expect(e.key).toBe(key);
  expect(e.line).toBe(line);
  for (const p of parts) expect(e.message).toContain(p);
}

// ---------------------------------------------------------------------------

describe("parseSize (go-units RAMInBytes)", () => {
  // go-units size_test.go TestRAMInBytes, case for case.
  const goCases: [string, bigint][] = [
    ["32", 32n],
    ["32b", 32n],
    ["32B", 32n],
    ["32k", 32n * KiB],
    ["32K", 32n * KiB],
    ["32kb", 32n * KiB],
    ["32Kb", 32n * KiB],
    ["32Kib", 32n * KiB],
    ["32KIB", 32n * KiB],
    ["32Mb", 32n * MiB],
    ["32Gb", 32n * GiB],
    ["32Tb", 32n * TiB],
    ["32Pb", 32n * PiB],
    ["32PB", 32n * PiB],
    ["32P", 32n * PiB],
    ["32.3", 32n],
    ["32.3 mb", BigInt(Math.trunc(32.3 * 1024 * 1024))],
  ];
  for (const [s, want] of goCases) {
    test(`go-units: ${JSON.stringify(s)} = ${want}`, () => expect(parseSize(s)).toBe(want));
  }
  for (const s of ["", "hello", "-32", " 32 ", "32m b", "32bm"]) {
    test(`go-units rejects ${JSON.stringify(s)}`, () => expect(() => parseSize(s)).toThrow("invalid size"));
  }

  const more: [string, bigint][] = [
    ["10GB", 10n * GiB],
    ["10gb", 10n * GiB],
    ["10GiB", 10n * GiB],
    ["10G", 10n * GiB],
    ["8192MB", 8192n * MiB],
    ["512k", 512n * KiB],
    ["32 MiB", 32n * MiB],
    ["32 B", 32n],
    ["32 ", 32n], // the regexp's optional space with no unit
    ["32i", 32n], // "i" without a unit letter is allowed and ignored
    ["32ib", 32n],
    ["1.5G", 3n * 512n * MiB],
    ["1.1k", 1126n], // float64 then truncated, like Go
    ["0", 0n],
    ["007", 7n],
    ["8P", 8n * PiB],
    ["9007199254740993", 9007199254740992n], // float64 rounding, like strconv.ParseFloat
  ];
  for (const [s, want] of more) {
    test(`${JSON.stringify(s)} = ${want}`, () => expect(parseSize(s)).toBe(want));
  }
  for (const s of [".3k", "3.k", "1e3", "32E", "32x", "32  k", "+32", "1.2.3", "1.2.3k", "32kk", "32kbb", "k", "１２", "32\n"]) {
    test(`rejects ${JSON.stringify(s)}`, () => expect(() => parseSize(s)).toThrow("invalid size"));
  }
  test("rejects 2^63 bytes and more", () => {
    expect(() => parseSize("8192P")).toThrow("2^63");
    expect(() => parseSize("9".repeat(400))).toThrow("invalid size");
  });
  test("errors are invalid_argument SnapshotterErrors", () => {
    try {
      parseSize("nope");
      throw new Error("unreachable");
    } catch (e) {
      expect(e).toBeInstanceOf(SnapshotterError);
      expect(isCode(e, "invalid_argument")).toBe(true);
      expect((e as Error).message).toBe("invalid size: 'nope'");
    }
  });
});

describe("formatSize", () => {
  const cases: [bigint, string][] = [
    [0n, "0 B"],
    [512n, "512 B"],
    [1023n, "1023 B"],
    [1024n, "1 KiB"],
    [64n * KiB, "64 KiB"],
    [1536n, "1.5 KiB"],
    [10n * GiB, "10 GiB"],
    [3n * 512n * MiB, "1.5 GiB"],
    [TiB - 1n, "1023.99 GiB"],
    [GiB + 1n, "1 GiB"],
    [GiB + GiB / 100n + 1n, "1.01 GiB"],
    [2n * PiB, "2 PiB"],
    [1024n * PiB, "1 EiB"],
    [-2048n, "-2 KiB"],
  ];
  for (const [n, want] of cases) test(`${n} -> ${want}`, () => expect(formatSize(n)).toBe(want));
  test("exact multiples round-trip through parseSize", () => {
    for (const n of [0n, 1n, 512n, 4n * KiB, 75n * MiB, 10n * GiB, 3n * TiB, 5n * PiB]) {
      expect(parseSize(formatSize(n))).toBe(n);
    }
  });
});

// ---------------------------------------------------------------------------

describe("defaults", () => {
  test("DEFAULTS", () => {
    expect(DEFAULTS).toEqual({
      rootPath: "/var/lib/thinsnap",
      baseImageSize: 10n * GiB,
      asyncRemove: false,
      discardBlocks: false,
      fsType: "ext4",
      fsOptions: "",
      address: "/run/thinsnap/thinsnap.sock",
      socketMode: 0o600,
      socketGroup: null,
      minFreeSpace: 0n,
      minFreeSpacePercent: 10,
      logLevel: "info",
      logFormat: "text",
      kernelThreads: 0,
      maxSizeLimit: null,
      metricsAddress: "",
      pool: null,
    });
    expect(Object.isFrozen(DEFAULTS)).toBe(true);
    expect(POOL_DEFAULTS).toEqual({ dataSize: 100n * GiB, blockSize: 64n * KiB });
    expect(DEFAULT_CONFIG_PATH).toBe("/etc/thinsnap/config.toml");
  });
  test("a document with only pool_name gets every default", () => {
    expect(parseConfig('pool_name = "thinpool"\n', FILE)).toEqual({ ...DEFAULTS, poolName: "thinpool" });
  });
  test("comments, blank lines and CRLF are fine", () => {
    expect(parseConfig('# c\r\n\r\npool_name = "p" # trailing\r\n', FILE).poolName).toBe("p");
  });
  test("pool_name is required", () => {
    for (const text of ["", "# nothing\n", 'root_path = "/x"\n']) {
      const e = parseErr(text);
      expect(e.key).toBe("pool_name");
      expect(e.file).toBe(FILE);
      expect(e.line).toBeNull();
      expect(e.message).toContain("pool_name");
      expect(e.message).toContain("required");
      expect(e.message.startsWith(`${FILE}: `)).toBe(true);
    }
  });
});

describe("every key", () => {
  test("a full thinsnap document", () => {
    const cfg = parseConfig(
      `
pool_name = "containerd-pool"
root_path = "/srv/thinsnap"
base_image_size = "8192MB"
async_remove = true
discard_blocks = true
fs_type = "xfs"
fs_options = "-m crc=1"
address = "/run/x/thinsnap.sock"
socket_mode = "0660"
socket_group = "containerd"
min_free_space = "20GB"
log_level = "debug"
log_format = "json"
kernel_threads = 8

[pool]
data_file = "/srv/pool/data.img"
meta_file = "/srv/pool/meta.img"
data_size = "200GB"
meta_size = "1GB"
block_size = "128k"
low_water_mark = 1000
`,
      FILE,
    );
    expect(cfg).toEqual({
      poolName: "containerd-pool",
      rootPath: "/srv/thinsnap",
      baseImageSize: 8n * GiB,
      asyncRemove: true,
      discardBlocks: true,
      fsType: "xfs",
      fsOptions: "-m crc=1",
      address: "/run/x/thinsnap.sock",
      socketMode: 0o660,
      socketGroup: "containerd",
      minFreeSpace: 20n * GiB,
      minFreeSpacePercent: null,
      logLevel: "debug",
      logFormat: "json",
      kernelThreads: 8,
      maxSizeLimit: null,
      metricsAddress: "",
      pool: {
        dataFile: "/srv/pool/data.img",
        metaFile: "/srv/pool/meta.img",
        dataSize: 200n * GiB,
        metaSize: GiB,
        blockSize: 128n * KiB,
        lowWaterMark: 1000n,
      },
    });
  });

  test("sizes: strings or integer bytes", () => {
    expect(withPool('base_image_size = "512MiB"').baseImageSize).toBe(512n * MiB);
    expect(withPool("base_image_size = 1073741824").baseImageSize).toBe(GiB);
    expect(withPool('base_image_size = "128Mb"').baseImageSize).toBe(128n * MiB); // containerd's own test
  });

  test("fs_type values", () => {
    for (const t of ["ext4", "xfs", "ext2"] as const) expect(withPool(`fs_type = "${t}"`).fsType).toBe(t);
  });
  test("log_level and log_format values", () => {
    for (const l of ["trace", "debug", "info", "warn", "error"] as const) {
      expect(withPool(`log_level = "${l}"`).logLevel).toBe(l);
    }
    for (const f of ["text", "json"] as const) expect(withPool(`log_format = "${f}"`).logFormat).toBe(f);
  });
  test("socket_mode forms", () => {
    expect(withPool('socket_mode = "0660"').socketMode).toBe(0o660);
    expect(withPool('socket_mode = "660"').socketMode).toBe(0o660);
    expect(withPool('socket_mode = "0o644"').socketMode).toBe(0o644);
    expect(withPool('socket_mode = "0"').socketMode).toBe(0);
    expect(withPool("socket_mode = 0o660").socketMode).toBe(0o660);
    expect(withPool("socket_mode = 0o600 # owner only").socketMode).toBe(0o600);
  });
  test("socket_group forms", () => {
    expect(withPool('socket_group = "docker"').socketGroup).toBe("docker");
    expect(withPool("socket_group = 998").socketGroup).toBe("998");
    expect(withPool('socket_group = "998"').socketGroup).toBe("998");
    expect(withPool('socket_group = ""').socketGroup).toBeNull();
  });
  test("min_free_space forms", () => {
    let c = withPool('min_free_space = "10%"');
    expect([c.minFreeSpace, c.minFreeSpacePercent]).toEqual([0n, 10]);
    c = withPool('min_free_space = "2.5 %"');
    expect([c.minFreeSpace, c.minFreeSpacePercent]).toEqual([0n, 2.5]);
    c = withPool('min_free_space = "0%"');
    expect([c.minFreeSpace, c.minFreeSpacePercent]).toEqual([0n, 0]);
    c = withPool('min_free_space = "20GB"');
    expect([c.minFreeSpace, c.minFreeSpacePercent]).toEqual([20n * GiB, null]);
    c = withPool("min_free_space = 1048576");
    expect([c.minFreeSpace, c.minFreeSpacePercent]).toEqual([MiB, null]);
    c = withPool("min_free_space = 0");
    expect([c.minFreeSpace, c.minFreeSpacePercent]).toEqual([0n, null]);
  });
  test("pool_name edge cases that are valid", () => {
    expect(withPool("").poolName).toBe("p");
    // the longest name whose thin devices (<pool>-foreign-16777215) fit the kernel's 127 bytes
    expect(MAX_POOL_NAME_BYTES).toBe(127 - "-foreign-16777215".length);
    expect(parseConfig(`pool_name = "${"a".repeat(MAX_POOL_NAME_BYTES)}"`, FILE).poolName).toHaveLength(110);
    expect(parseConfig('pool_name = "vg0-thin_pool.1"', FILE).poolName).toBe("vg0-thin_pool.1");
  });
  test("xfs accepts 300 MiB base images", () => {
    expect(withPool('fs_type = "xfs"\nbase_image_size = "300MB"').baseImageSize).toBe(300n * MiB);
  });
});

// ---------------------------------------------------------------------------

describe("errors name key, value, file and line", () => {
  test("unknown key", () => {
    const e = parseErr('pool_name = "p"\n\n# comment\npol_name = "q"\n');
    expect(e).toBeInstanceOf(SnapshotterError);
    expect(e.code).toBe("invalid_argument");
    expect(e.name).toBe("ConfigError");
    expect(e.file).toBe(FILE);
    expect(e.line).toBe(4);
    expect(e.key).toBe("pol_name");
    expect(e.message).toBe(`${FILE}:4: unknown key "pol_name" (did you mean "pool_name"?)`);
  });
  test("unknown key without a close match lists the known keys", () => {
    const e = withPoolErr("colour = 1");
    expect(e.line).toBe(2);
    expect(e.message).toContain('unknown key "colour"');
    expect(e.message).toContain("known: pool_name, root_path");
  });
  test("unknown table", () => {
    expectKeyError(withPoolErr("\n[storage]\nx = 1\n"), "storage", 3, `${FILE}:3: unknown key "storage"`);
  });
  test("unknown key in [pool]", () => {
    const e = withPoolErr("[pool]\ndata_sise = \"1G\"\n");
    expect(e.key).toBe("pool.data_sise");
    expect(e.line).toBe(3);
    expect(e.message).toBe(`${FILE}:3: unknown key "data_sise" in [pool] (did you mean "data_size"?)`);
  });
  test("a bad value: the message has file, line, key and value", () => {
    const e = withPoolErr('fs_type = "btrfs"');
    expect([e.file, e.line, e.key]).toEqual([FILE, 2, "fs_type"]);
    expect(e.message).toBe(`${FILE}:2: fs_type = "btrfs": must be one of "ext4", "xfs", "ext2"`);
    expect(e.issues[0]?.value).toBe('"btrfs"');
  });
  test("every problem is reported, in line order", () => {
    const e = parseErr(
      ['pool_name = "a/b"', 'log_level = "loud"', "bogus = 1", 'base_image_size = "1.1G"', "[pool]", 'block_size = "100k"'].join(
        "\n",
      ),
    );
    expect(e.issues.map((i) => [i.line, i.key])).toEqual([
      [1, "pool_name"],
      [2, "log_level"],
      [3, "bogus"],
      [4, "base_image_size"],
      [6, "pool.block_size"],
    ]);
    expect(e.message.split("\n")).toHaveLength(5);
    expect(e.line).toBe(1);
  });
  test("a key whose type is wrong does not hide the others' problems", () => {
    const e = parseErr('pool_name = 5\nroot_path = "rel"\n');
    expect(e.issues.map((i) => i.key)).toEqual(["pool_name", "root_path"]);
    expect(e.message).toContain(`${FILE}:1: pool_name = 5: must be a string, not an integer`);
    expect(e.message).toContain(`${FILE}:2: root_path = "rel": must be an absolute path`);
  });
  test("keys are found in dotted, quoted and indented forms", () => {
    expect(withPoolErr('  "log_level" = "x"').line).toBe(2);
    expect(withPoolErr("pool.block_size = 1").line).toBe(2);
    expect(withPoolErr("[pool]\n  # c\n  'block_size' = 1").line).toBe(4);
    expect(withPoolErr("pool = { block_size = 1 }").key).toBe("pool.block_size");
    expect(withPoolErr("pool = { block_size = 1 }").line).toBe(2);
  });
});

describe("TOML syntax errors", () => {
  test("have line and column", () => {
    const e = parseErr('pool_name = "p"\nroot_path = "/x\nfs_type = "ext4"\n');
    expect(e.file).toBe(FILE);
    expect(e.line).toBe(2);
    expect(e.column).not.toBeNull();
    expect(e.key).toBeNull();
    expect(e.message.startsWith(`${FILE}:2:${e.column}: TOML syntax error: `)).toBe(true);
    expect(e.cause).toBeDefined();
  });
  test("duplicate keys", () => {
    const e = parseErr('pool_name = "p"\npool_name = "q"\n');
    expect(e.line).toBe(2);
    expect(e.message).toContain("TOML syntax error");
  });
  test("a missing value", () => {
    const e = parseErr('pool_name = "p"\n\nasync_remove =\n');
    expect(e.line).toBe(3);
  });
});

describe("bad values per key", () => {
  const cases: [string, string, string][] = [
    // [toml line, key, message fragment]
    ['pool_name = ""', "pool_name", "must not be empty"],
    ['pool_name = "mapper/pool"', "pool_name", 'must not contain "/"'],
    ['pool_name = "my pool"', "pool_name", "blanks"],
    ['pool_name = ".."', "pool_name", "not valid device-mapper names"],
    [`pool_name = "${"a".repeat(128)}"`, "pool_name", "at most 110 bytes"],
    [`pool_name = "${"a".repeat(111)}"`, "pool_name", "at most 110 bytes long: thin devices are named <pool_name>-snap-<id>"],
    [`pool_name = "${"é".repeat(56)}"`, "pool_name", "device-mapper names are at most 127 bytes"],
    ["pool_name = true", "pool_name", "must be a string, not a boolean"],
    ["root_path = 1979-05-27", "root_path", "root_path = 1979-05-27: must be a string, not a date-time"],
    ['root_path = "var/lib/x"', "root_path", "absolute"],
    ["root_path = 1", "root_path", "must be a string"],
    ['base_image_size = "10XB"', "base_image_size", "invalid size: '10XB'"],
    ['base_image_size = ""', "base_image_size", "invalid size"],
    ['base_image_size = "-1G"', "base_image_size", "invalid size"],
    ["base_image_size = -1", "base_image_size", "must not be negative"],
    ["base_image_size = 1.5", "base_image_size", "not a float"],
    ["base_image_size = true", "base_image_size", "not a boolean"],
    ["base_image_size = 0", "base_image_size", "greater than 0"],
    ['base_image_size = "0G"', "base_image_size", "greater than 0"],
    ['base_image_size = "1.1G"', "base_image_size", "multiple of 512 bytes"],
    ["base_image_size = 1000", "base_image_size", "try 512"],
    ['base_image_size = "512k"', "base_image_size", "at least 1 MiB"],
    ['async_remove = "yes"', "async_remove", "true or false"],
    ["discard_blocks = 1", "discard_blocks", "true or false"],
    ['fs_type = "EXT4"', "fs_type", "must be one of"],
    ["fs_options = []", "fs_options", "must be a string, not an array"],
    ['address = "thinsnap.sock"', "address", "absolute"],
    [`address = "/${"s".repeat(107)}"`, "address", "at most 107 bytes"],
    ["socket_mode = 660", "socket_mode", "octal"],
    ["socket_mode = 400", "socket_mode", "octal"],
    ["socket_mode = 0x1b0", "socket_mode", "octal"],
    ["socket_mode = 0o1777", "socket_mode", "0o777"],
    ['socket_mode = "0999"', "socket_mode", "octal"],
    ['socket_mode = "rw-rw----"', "socket_mode", "octal"],
    ['socket_mode = "7777"', "socket_mode", "0o777"],
    ["socket_mode = true", "socket_mode", "not a boolean"],
    ['socket_group = "bad group"', "socket_group", "group name"],
    ["socket_group = -1", "socket_group", "gid"],
    ['min_free_space = "100%"', "min_free_space", "below 100%"],
    ['min_free_space = "-5%"', "min_free_space", "invalid size"],
    ['min_free_space = "lots"', "min_free_space", "invalid size"],
    ['log_level = "warning"', "log_level", '"trace", "debug", "info", "warn", "error"'],
    ['log_format = "logfmt"', "log_format", '"text", "json"'],
    ["kernel_threads = 65", "kernel_threads", "from 0 to 64"],
    ["kernel_threads = -1", "kernel_threads", "negative"],
    ['kernel_threads = "4"', "kernel_threads", "integer"],
    ['pool = "yes"', "pool", "must be a table"],
  ];
  for (const [line, key, fragment] of cases) {
    test(line.length > 60 ? `${line.slice(0, 57)}...` : line, () => {
      // pool_name's own cases stand alone; the others follow a valid pool_name
      const [text, at] = key === "pool_name" ? [line, 1] : [`pool_name = "p"\n${line}`, 2];
      expectKeyError(parseErr(text), key, at, fragment, `${FILE}:${at}: ${key}`);
    });
  }
  test("xfs needs 300 MiB", () => {
    expectKeyError(withPoolErr('base_image_size = "100MB"\nfs_type = "xfs"'), "base_image_size", 2, "300 MiB");
  });
  test("xfs with the default base image size is fine", () => {
    expect(withPool('fs_type = "xfs"').baseImageSize).toBe(10n * GiB);
  });
});

// ---------------------------------------------------------------------------

describe("[pool]", () => {
  test("an empty [pool] gets the documented defaults", () => {
    expect(withPool("[pool]").pool).toEqual({
      dataFile: "/var/lib/thinsnap/pool/data",
      metaFile: "/var/lib/thinsnap/pool/data.meta",
      dataSize: 100n * GiB,
      metaSize: 75n * MiB, // 48 * 1638400 blocks
      blockSize: 64n * KiB,
      lowWaterMark: 32768n,
    });
  });
  test("no [pool] means an existing pool", () => {
    expect(withPool("").pool).toBeNull();
  });
  test("files follow root_path", () => {
    const p = withPool('root_path = "/data/ts/"\n[pool]').pool;
    expect(p?.dataFile).toBe("/data/ts/pool/data");
    expect(p?.metaFile).toBe("/data/ts/pool/data.meta");
  });
  test("derived sizes follow data_size and block_size", () => {
    let p = withPool('[pool]\ndata_size = "1GB"').pool;
    expect(p?.metaSize).toBe(64n * MiB); // 48 * 16384 = 768 KiB, raised to the 64 MiB floor
    expect(p?.lowWaterMark).toBe(1638n);
    p = withPool('[pool]\ndata_size = "10TB"').pool;
    expect(p?.metaSize).toBe(48n * ((10n * TiB) / (64n * KiB))); // 7.5 GiB
    p = withPool('[pool]\ndata_size = "10TB"\nblock_size = "1M"').pool;
    expect(p?.metaSize).toBe(480n * MiB);
    p = withPool('[pool]\ndata_size = "1PB"').pool;
    expect(p?.metaSize).toBe(KERNEL_META_MAX);
  });
  test("inline table form", () => {
    expect(withPool('pool = { data_size = "2GB", low_water_mark = 10 }').pool).toMatchObject({
      dataSize: 2n * GiB,
      lowWaterMark: 10n,
    });
  });
  test("defaultMetaSize", () => {
    expect(defaultMetaSize(100n * GiB, 64n * KiB)).toBe(75n * MiB);
    expect(defaultMetaSize(0n, 64n * KiB)).toBe(64n * MiB);
    expect(defaultMetaSize(GiB + 64n * KiB, 64n * KiB)).toBe(64n * MiB);
    expect(defaultMetaSize(100n * GiB + 64n * KiB, 64n * KiB) % (4n * KiB)).toBe(0n);
    expect(defaultMetaSize(100n * GiB + 64n * KiB, 64n * KiB)).toBe(75n * MiB + 4n * KiB);
    expect(defaultMetaSize(4n * PiB, 64n * KiB)).toBe(KERNEL_META_MAX);
    expect(KERNEL_META_MAX).toBe(17045913600n);
  });
  test("defaultLowWaterMark", () => {
    expect(defaultLowWaterMark(100n * GiB, 64n * KiB)).toBe(32768n);
    expect(defaultLowWaterMark(GiB, 64n * KiB)).toBe(1638n);
    expect(defaultLowWaterMark(10n * 64n * KiB, 64n * KiB)).toBe(1n);
  });
  const bad: [string, string, string][] = [
    ['block_size = "32k"', "pool.block_size", "multiple of 64 KiB between 64 KiB and 1 GiB"],
    ['block_size = "100k"', "pool.block_size", "multiple of 64 KiB"],
    ['block_size = "2G"', "pool.block_size", "1 GiB"],
    ['data_size = "1000k"', "pool.data_size", "multiple of block_size (64 KiB)"],
    ["data_size = 0", "pool.data_size", "non-zero"],
    ['meta_size = "1M"', "pool.meta_size", "between 2 MiB and 16 GiB"],
    ['meta_size = "17G"', "pool.meta_size", "between 2 MiB and 16 GiB"],
    ["meta_size = 4194305", "pool.meta_size", "multiple of 4 KiB"],
    ["low_water_mark = 1638400", "pool.low_water_mark", "below the number of data blocks (1638400)"],
    ["low_water_mark = -1", "pool.low_water_mark", "must not be negative"],
    ['low_water_mark = "10"', "pool.low_water_mark", "must be an integer, not a string"],
    ['data_file = "data"', "pool.data_file", "absolute"],
    ['meta_file = "meta"', "pool.meta_file", "absolute"],
    ['meta_file = "/var/lib/thinsnap/pool/data"', "pool.meta_file", "must differ from data_file"],
  ];
  for (const [line, key, fragment] of bad) {
    test(line, () => {
      expectKeyError(withPoolErr(`[pool]\n${line}`), key, 3, fragment, `${FILE}:3: ${key} = `);
    });
  }
  test("the explicit meta_size limit is 16 GiB", () => {
    expect(withPool('[pool]\nmeta_size = "16G"').pool?.metaSize).toBe(16n * GiB);
  });
});

// ---------------------------------------------------------------------------

describe("containerd config.toml", () => {
  const v2 = `version = 2
root = "/var/lib/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "devmapper"

  [plugins."io.containerd.snapshotter.v1.devmapper"]
    pool_name = "containerd-pool"
    root_path = "/var/lib/containerd/devmapper"
    base_image_size = "8192MB"
    async_remove = true
    discard_blocks = true
    fs_type = "xfs"
    fs_options = ""

[proxy_plugins.thinsnap]
  type = "snapshot"
  address = "/run/thinsnap/thinsnap.sock"
`;
  test('version 2: [plugins."io.containerd.snapshotter.v1.devmapper"]', () => {
    expect(parseConfig(v2, "/etc/containerd/config.toml")).toEqual({
      ...DEFAULTS,
      poolName: "containerd-pool",
      rootPath: "/var/lib/containerd/devmapper",
      baseImageSize: 8n * GiB,
      asyncRemove: true,
      discardBlocks: true,
      fsType: "xfs",
      fsOptions: "",
    });
  });
  test("version 1: [plugins.devmapper]", () => {
    const cfg = parseConfig(
      `[plugins]
  [plugins.cri]
    stream_server_port = "0"
  [plugins.devmapper]
    pool_name = "devpool"
    base_image_size = "10GB"
`,
      FILE,
    );
    expect(cfg).toEqual({ ...DEFAULTS, poolName: "devpool", baseImageSize: 10n * GiB });
  });
  test("dotted keys under [plugins]", () => {
    const cfg = parseConfig('[plugins]\n"io.containerd.snapshotter.v1.devmapper".pool_name = "dp"\n', FILE);
    expect(cfg.poolName).toBe("dp");
  });
  test("the rest of the document, unknown keys included, is ignored", () => {
    const cfg = parseConfig('whatever = 1\n[plugins.devmapper]\npool_name = "p"\n[nonsense]\nx = "y"\n', FILE);
    expect(cfg.poolName).toBe("p");
  });
  test("errors point into the section", () => {
    const e = configError(() => parseConfig(v2.replace('fs_type = "xfs"', 'fs_type = "zfs"'), "/etc/containerd/config.toml"));
    expect([e.file, e.line, e.key]).toEqual(["/etc/containerd/config.toml", 19, "fs_type"]);
    expect(e.message).toBe(`/etc/containerd/config.toml:19: fs_type = "zfs": must be one of "ext4", "xfs", "ext2"`);
  });
  test("unknown keys in the section are errors", () => {
    const e = parseErr('[plugins.devmapper]\npool_name = "p"\npool_nmae = "q"\n');
    expect([e.line, e.key]).toEqual([3, "pool_nmae"]);
    expect(e.message).toContain('unknown key "pool_nmae" in [plugins.devmapper] (did you mean "pool_name"?)');
  });
  test("thinsnap's own keys are refused in the section", () => {
    const e = parseErr('[plugins."io.containerd.snapshotter.v1.devmapper"]\npool_name = "p"\n\naddress = "/x.sock"\n');
    expect([e.line, e.key]).toEqual([4, "address"]);
    expect(e.message).toContain("thinsnap setting");
    expect(e.message).toContain('[plugins."io.containerd.snapshotter.v1.devmapper"]');
  });
  test("[pool] is not a containerd key", () => {
    const e = parseErr('[plugins.devmapper]\npool_name = "p"\n[plugins.devmapper.pool]\ndata_size = "1G"\n');
    expect([e.line, e.key]).toEqual([3, "pool"]);
  });
  test("pool_name is required there too", () => {
    const e = parseErr('version = 2\n[plugins."io.containerd.snapshotter.v1.devmapper"]\nroot_path = "/x"\n');
    expect(e.key).toBe("pool_name");
  });
  test("both sections: version picks", () => {
    const both = '[plugins.devmapper]\npool_name = "short"\n[plugins."io.containerd.snapshotter.v1.devmapper"]\npool_name = "long"\n';
    expect(parseConfig(both, FILE).poolName).toBe("short");
    expect(parseConfig(`version = 1\n${both}`, FILE).poolName).toBe("short");
    expect(parseConfig(`version = 2\n${both}`, FILE).poolName).toBe("long");
    expect(parseConfig(`version = 3\n${both}`, FILE).poolName).toBe("long");
  });
  test("a containerd config without a devmapper section", () => {
    const e = parseErr('version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "x"\n');
    expect(e.message).toContain("no [plugins.\"io.containerd.snapshotter.v1.devmapper\"] or [plugins.devmapper]");
    expect(e.line).toBe(3);
  });
  test("a devmapper section that is not a table", () => {
    const e = parseErr('[plugins]\ndevmapper = "on"\n');
    expect([e.line, e.key]).toEqual([2, "plugins.devmapper"]);
  });
});

// ---------------------------------------------------------------------------

describe("findKeyLine", () => {
  const text = `a = 1
s = """
b = 2
"""
[t]
b = 3
"q.k" = 4
[[arr]]
x = 1
[ t . "sub" ]
'lit' = 5
inl = { y = 1 }
`;
  test("cases", () => {
    expect(findKeyLine(text, ["a"])).toBe(1);
    expect(findKeyLine(text, ["b"])).toBeNull(); // only inside a multi-line string
    expect(findKeyLine(text, ["t"])).toBe(5);
    expect(findKeyLine(text, ["t", "b"])).toBe(6);
    expect(findKeyLine(text, ["t", "q.k"])).toBe(7);
    expect(findKeyLine(text, ["arr", "x"])).toBe(9);
    expect(findKeyLine(text, ["t", "sub", "lit"])).toBe(11);
    expect(findKeyLine(text, ["t", "sub", "inl", "y"])).toBe(12);
    expect(findKeyLine(text, ["nope"])).toBeNull();
    // a table opened only implicitly: the line of its first sub-table
    expect(findKeyLine('x = 1\n[plugins."io.containerd.grpc.v1.cri"]\n', ["plugins"])).toBe(2);
    expect(findKeyLine('plugins.cri.x = 1\n', ["plugins"])).toBe(1);
  });
});

// ---------------------------------------------------------------------------

describe("loadConfig", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "thinsnap-config-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const write = async (name: string, text: string): Promise<string> => {
    const p = join(dir, name);
    await writeFile(p, text);
    return p;
  };
  const loadErr = async (p: Promise<Config>): Promise<ConfigError> => {
    try {
      await p;
    } catch (e) {
      if (e instanceof ConfigError) return e;
      throw e;
    }
    throw new Error("expected a ConfigError");
  };

  test("reads a file", async () => {
    const p = await write("a.toml", 'pool_name = "p"\nlog_level = "warn"\n');
    expect(await loadConfig(p, {})).toEqual({ ...DEFAULTS, poolName: "p", logLevel: "warn" });
  });
  test("a missing explicit file is an error", async () => {
    const p = join(dir, "missing.toml");
    const e = await loadErr(loadConfig(p, { poolName: "p" }));
    expect(e.file).toBe(p);
    expect(e.message).toBe(`${p}: config file not found`);
  });
  test("an unreadable path is an error", async () => {
    const e = await loadErr(loadConfig(dir, { poolName: "p" }));
    expect(e.message).toContain("cannot read config file");
  });
  test("a missing default file means defaults", async () => {
    if (existsSync(DEFAULT_CONFIG_PATH)) return; // a real install: nothing to test here
    expect(await loadConfig(null, { poolName: "p" })).toEqual({ ...DEFAULTS, poolName: "p" });
    const e = await loadErr(loadConfig(null, {}));
    expect(e.key).toBe("pool_name");
    expect(e.message).toContain(`${DEFAULT_CONFIG_PATH} (not found): pool_name: required`);
  });
  test("overrides win over the file and are validated", async () => {
    const p = await write("b.toml", 'pool_name = "p"\nroot_path = "/a"\nmin_free_space = "5%"\n[pool]\ndata_size = "1G"\n');
    const cfg = await loadConfig(p, { rootPath: "/b", logFormat: "json", minFreeSpace: 5n * GiB });
    expect(cfg.rootPath).toBe("/b");
    expect(cfg.logFormat).toBe("json");
    expect([cfg.minFreeSpace, cfg.minFreeSpacePercent]).toEqual([5n * GiB, null]);
    expect(cfg.pool?.dataFile).toBe("/b/pool/data"); // derived from the overridden root_path

    const e = await loadErr(loadConfig(p, { rootPath: "relative" }));
    expect([e.file, e.line, e.key]).toEqual([null, null, "root_path"]);
    expect(e.message).toBe('overrides: root_path = "relative": must be an absolute path');
  });
  test("pool overrides: null drops [pool], fields merge and re-derive", async () => {
    const p = await write("c.toml", 'pool_name = "p"\n[pool]\ndata_size = "1G"\nlow_water_mark = 5\n');
    expect((await loadConfig(p, { pool: null })).pool).toBeNull();
    const pool = (await loadConfig(p, { pool: { dataSize: 10n * TiB } })).pool;
    expect(pool?.dataSize).toBe(10n * TiB);
    expect(pool?.metaSize).toBe(defaultMetaSize(10n * TiB, 64n * KiB));
    expect(pool?.lowWaterMark).toBe(5n);
    const p2 = await write("d.toml", 'pool_name = "p"\n');
    expect((await loadConfig(p2, { pool: {} })).pool?.dataSize).toBe(100n * GiB);
    const e = await loadErr(loadConfig(p2, { pool: { blockSize: 1000n } }));
    expect(e.message).toBe("overrides: pool.block_size = 1000: must be a multiple of 64 KiB between 64 KiB and 1 GiB (dm-thin's limits)");
  });
  test("min_free_space percentage override", async () => {
    const p = await write("e.toml", 'pool_name = "p"\nmin_free_space = "1G"\n');
    const cfg = await loadConfig(p, { minFreeSpacePercent: 15 });
    expect([cfg.minFreeSpace, cfg.minFreeSpacePercent]).toEqual([0n, 15]);
    const e = await loadErr(loadConfig(p, { minFreeSpacePercent: 150 }));
    expect(e.message).toBe('overrides: min_free_space = "150%": a percentage must be at least 0% and below 100%');
  });
  test("file errors keep their location when overrides are given", async () => {
    const p = await write("f.toml", 'pool_name = "p"\nfs_type = "ntfs"\n');
    const e = await loadErr(loadConfig(p, { logLevel: "debug" }));
    expect([e.file, e.line, e.key]).toEqual([p, 2, "fs_type"]);
  });
});

// ---------------------------------------------------------------------------

describe("packaging/config.example.toml", () => {
  const path = join(import.meta.dir, "../../packaging/config.example.toml");
  test("parses as is", async () => {
    const cfg = parseConfig(await readFile(path, "utf8"), path);
    expect(cfg).toEqual({ ...DEFAULTS, poolName: "thinsnap-pool" });
  });
  test("uncommented, it documents every key with its default", async () => {
    const text = await readFile(path, "utf8");
    const uncommented = text
      .split("\n")
      .map((l) => l.replace(/^# ((?:[a-z_]+ = .*)|\[pool\])$/, "$1"))
      .join("\n");
    const keys = [...uncommented.matchAll(/^([a-z_]+) = /gm)].map((m) => m[1]);
    // every key of the table (its list: config-table.test.ts), containerd's devmapper keys first
    const byKind = [...MAIN_KEYS.filter((e) => e.containerd), ...MAIN_KEYS.filter((e) => !e.containerd), ...POOL_KEYS];
    expect(keys).toEqual(byKind.map((e) => e.key));
    const cfg = parseConfig(uncommented, path);
    expect(cfg).toEqual({
      ...DEFAULTS,
      poolName: "thinsnap-pool",
      socketGroup: "containerd", // the examples that are not defaults (their default is unset)
      maxSizeLimit: 100n * GiB,
      pool: {
        dataFile: "/var/lib/thinsnap/pool/data",
        metaFile: "/var/lib/thinsnap/pool/data.meta",
        dataSize: 100n * GiB,
        metaSize: 75n * MiB,
        blockSize: 64n * KiB,
        lowWaterMark: 32768n,
      },
    });
    expect(parseConfig('pool_name = "thinsnap-pool"\nsocket_group = "containerd"\nmax_size_limit = "100GB"\n[pool]\n', FILE)).toEqual(cfg);
  });
});
