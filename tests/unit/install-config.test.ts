/**
 * The in-place edit of containerd's config.toml (src/install/containerd-config.ts):
 * the settings per version, exact restoration, idempotence, the operator's
 * lines kept byte for byte, and the files it refuses to guess about.
 */
import { describe, expect, test } from "bun:test";
import { parse } from "smol-toml";
import type { TomlTable } from "smol-toml";
import {
  ADDED,
  applyEdit,
  ContainerdConfigError,
  containerdRoot,
  detectConfigVersion,
  parseContainerdVersion,
  planFor,
  revertEdit,
  unconfiguredHandlers,
  WAS,
  type ContainerdVersion,
  type Plan,
  type PlanOptions,
} from "../../src/install/containerd-config.ts";
import { layout, splitLines } from "../../src/install/toml-lines.ts";

const cd16: ContainerdVersion = { major: 1, minor: 6, patch: 20 };
const cd17: ContainerdVersion = { major: 1, minor: 7, patch: 16 };
const cd21: ContainerdVersion = { major: 2, minor: 1, patch: 4 };

const opts = (o: Partial<PlanOptions> = {}): PlanOptions => ({
  address: "/run/thinsnap/thinsnap.sock",
  exportsRoot: "/var/lib/thinsnap",
  platform: "linux/amd64",
  criDefault: true,
  runtimeHandlers: [],
  containerd: cd16,
  ...o,
});

function get(doc: TomlTable, ...path: string[]): unknown {
  let v: unknown = doc;
  for (const p of path) v = (v as Record<string, unknown> | undefined)?.[p];
  return v;
}

/** Applies, then checks what every edit must satisfy; returns the edited text. */
function roundTrip(original: string | null, plan: Plan): string {
  const r = applyEdit(original, plan);
  expect(r.changes.length).toBeGreaterThan(0);
  // Idempotent: a second run changes nothing.
  const again = applyEdit(r.text, plan);
  expect(again.changes).toEqual([]);
  expect(again.text).toBe(r.text);
  // Exact restoration.
  const back = revertEdit(r.text);
  expect(back.text).toBe(original ?? "");
  expect(back.created).toBe(original === null);
  // Every line of the original is still there, in order, byte for byte (with its line ending).
  if (original !== null) {
    const orig = original.split(/(?<=\n)/);
    const res = r.text.split(/(?<=\n)/);
    let j = 0;
    for (const line of orig) {
      const bare = line.replace(/\r?\n$/, "");
      while (j < res.length && res[j] !== line && res[j] !== `${WAS}${line}` && !(line === orig.at(-1) && (res[j]!.startsWith(bare) || res[j]!.startsWith(WAS + bare)))) j++;
      expect(j).toBeLessThan(res.length);
      j++;
    }
  }
  return r.text;
}

/** Like `containerd config default` of 1.6, shortened. */
const V2_DEFAULT = `disabled_plugins = []
imports = []
oom_score = 0
plugin_dir = ""
required_plugins = []
root = "/srv/containerd"
state = "/run/containerd"
temp = ""
version = 2

[cgroup]
  path = ""

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]

  [plugins."io.containerd.gc.v1.scheduler"]
    deletion_threshold = 0
    pause_threshold = 0.02

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
    # operator's note: [plugins."not.a.header"] in a comment
    tolerate_missing_hugetlb_controller = true

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_template = """
[not.a.header]
snapshotter = "inside a string"
"""

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      disable_snapshot_annotations = true
      snapshotter = "overlayfs"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          privileged_without_host_devices = false

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
            BinaryName = ""

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
          runtime_type = "io.containerd.kata.v2"

  [plugins."io.containerd.snapshotter.v1.devmapper"]
    pool_name = ""
    extra = [
      "[also.not.a.header]",
      'x',
    ]

[proxy_plugins]
  [proxy_plugins.stargz]
    type = "snapshot"
    address = "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"
`;

/** Like `containerd config default` of 2.1 (literal strings), shortened, with a kata handler. */
const V3_DEFAULT = `version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
disabled_plugins = []

[grpc]
  address = '/run/containerd/containerd.sock'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    disable_snapshot_annotations = true

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'

        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]
          runtime_type = 'io.containerd.kata.v2'
          pod_annotations = ['io.katacontainers.*']

  [plugins.'io.containerd.transfer.v1.local']
    max_concurrent_downloads = 3
    config_path = ''
`;

describe("version detection", () => {
  test("the version key; none is 1; nothing set at all is unknown", () => {
    expect(detectConfigVersion(V2_DEFAULT)).toBe(2);
    expect(detectConfigVersion(V3_DEFAULT)).toBe(3);
    expect(detectConfigVersion('root = "/x"\n')).toBe(1);
    expect(detectConfigVersion("")).toBeNull();
    expect(detectConfigVersion("# only a comment\n\n")).toBeNull();
    expect(() => detectConfigVersion("version = 7\n")).toThrow(/not a containerd config version/);
    expect(() => detectConfigVersion("version = [\n", "/etc/containerd/config.toml")).toThrow(/config.toml is not valid TOML/);
  });

  test("containerd --version of 1.x and 2.x", () => {
    expect(parseContainerdVersion("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n")).toEqual(cd16);
    expect(parseContainerdVersion("containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376\n")).toEqual(cd21);
    expect(parseContainerdVersion("containerd github.com/containerd/containerd v1.7.16 83031836b2cf55637d7abf847b17134c51b38e53")).toEqual(cd17);
    expect(parseContainerdVersion("bash: containerd: command not found")).toBeNull();
  });

  test("containerd's root, for the 1.6 image filesystem directory", () => {
    expect(containerdRoot(V2_DEFAULT)).toBe("/srv/containerd");
    expect(containerdRoot("")).toBe("/var/lib/containerd");
  });
});

describe("the layout scanner", () => {
  test("headers and keys, not text inside strings, comments or multi-line arrays", () => {
    const l = layout(splitLines(V2_DEFAULT).text);
    const names = l.headers.map((h) => h.path.join("|"));
    expect(names).not.toContain("not|a|header");
    expect(names).not.toContain("also|not|a|header");
    expect(names).toContain("plugins|io.containerd.grpc.v1.cri|containerd");
    const cni = l.keys.find((k) => k.path.at(-1) === "conf_template")!;
    expect(cni.endLine - cni.line).toBe(3);
    expect(l.keys.filter((k) => k.path.at(-1) === "snapshotter").map((k) => k.path.join("|"))).toEqual([
      "plugins|io.containerd.grpc.v1.cri|containerd|snapshotter",
    ]);
  });
});

describe("version 2 (containerd 1.6/1.7)", () => {
  test("containerd 1.6: proxy plugin, exports, CRI's snapshotter replaced with the old line kept", () => {
    const plan = planFor(2, opts());
    const out = roundTrip(V2_DEFAULT, plan);
    const doc = parse(out);
    expect(get(doc, "proxy_plugins", "thinsnap", "type")).toBe("snapshot");
    expect(get(doc, "proxy_plugins", "thinsnap", "address")).toBe("/run/thinsnap/thinsnap.sock");
    expect(get(doc, "proxy_plugins", "thinsnap", "exports", "root")).toBe("/var/lib/thinsnap");
    expect(get(doc, "proxy_plugins", "stargz", "type")).toBe("snapshot");
    expect(get(doc, "plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter")).toBe("thinsnap");
    expect(out).toContain(`${WAS}      snapshotter = "overlayfs"\n      snapshotter = "thinsnap"${ADDED}\n`);
    // 1.6 has no transfer service: no unpack_config.
    expect(get(doc, "plugins", "io.containerd.transfer.v1.local")).toBeUndefined();
  });

  test("containerd 1.7 with a runtime handler: unpack_config keeps the default snapshotter's entry", () => {
    const plan = planFor(2, opts({ containerd: cd17, criDefault: false, runtimeHandlers: ["kata"] }));
    const out = roundTrip(V2_DEFAULT, plan);
    const doc = parse(out);
    expect(get(doc, "plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter")).toBe("overlayfs");
    expect(get(doc, "plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "kata", "snapshotter")).toBe("thinsnap");
    expect(get(doc, "plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "kata", "runtime_type")).toBe("io.containerd.kata.v2");
    expect(get(doc, "plugins", "io.containerd.transfer.v1.local", "unpack_config")).toEqual([
      { platform: "linux/amd64", snapshotter: "overlayfs" },
      { platform: "linux/amd64", snapshotter: "thinsnap" },
    ]);
    // The key went into the handler's own table, right under its header.
    expect(out).toContain(`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n          snapshotter = "thinsnap"${ADDED}\n          runtime_type`);
  });

  test("per-runtime snapshotters need 1.7; a version 2 file under containerd 2.x must be migrated first", () => {
    expect(() => planFor(2, opts({ runtimeHandlers: ["kata"] }))).toThrow(/1\.7\+/);
    expect(() => planFor(2, opts({ containerd: cd21, runtimeHandlers: ["kata"] }))).toThrow(/containerd config migrate/);
    expect(() => planFor(1, opts({ runtimeHandlers: ["kata"] }))).toThrow(/version 1/);
    expect(() => planFor(3, opts({ containerd: cd21, runtimeHandlers: ["ka ta"] }))).toThrow(/runtime handler/);
  });

  test("an existing [proxy_plugins.thinsnap] with another address: only that line changes", () => {
    const text = `version = 2\n[proxy_plugins.thinsnap]\n  type = "snapshot"\n  address = "/old.sock" # mine\n`;
    const out = roundTrip(text, planFor(2, opts({ criDefault: false })));
    expect(out).toStartWith(`version = 2\n[proxy_plugins.thinsnap]\n  type = "snapshot"\n${WAS}  address = "/old.sock" # mine\n  address = "/run/thinsnap/thinsnap.sock"${ADDED}\n`);
    expect(get(parse(out), "proxy_plugins", "thinsnap", "exports", "root")).toBe("/var/lib/thinsnap");
  });

  test("a table set through dotted keys gets one more dotted key", () => {
    const text = `version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd.default_runtime_name = "runc"\n`;
    const out = roundTrip(text, planFor(2, opts()));
    expect(out).toContain(`  containerd.snapshotter = "thinsnap"${ADDED}\n  containerd.default_runtime_name = "runc"\n`);
    expect(get(parse(out), "plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter")).toBe("thinsnap");
  });

  test("a dotted key set to another value is replaced in place", () => {
    const text = `version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd.snapshotter = "overlayfs"\n`;
    const out = roundTrip(text, planFor(2, opts()));
    expect(out).toContain(`${WAS}  containerd.snapshotter = "overlayfs"\n  containerd.snapshotter = "thinsnap"${ADDED}\n`);
  });

  test("an inline table it cannot extend: a clear error with the lines to add by hand", () => {
    const text = `version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  containerd = { snapshotter = "overlayfs", default_runtime_name = "runc" }\n`;
    let err: unknown;
    try {
      applyEdit(text, planFor(2, opts()));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ContainerdConfigError);
    expect((err as Error).message).toContain("add these lines by hand");
    expect((err as Error).message).toContain('[plugins."io.containerd.grpc.v1.cri".containerd]');
  });

  test("a value spread over several lines is not rewritten", () => {
    const text = `version = 2\n[proxy_plugins.thinsnap]\n  type = "snapshot"\n  address = """\n/x.sock"""\n`;
    expect(() => applyEdit(text, planFor(2, opts({ criDefault: false })))).toThrow(/spans several lines/);
  });

  test("an invalid file is refused before anything is changed", () => {
    expect(() => applyEdit("version = 2\n[a\n", planFor(2, opts()), "/etc/containerd/config.toml")).toThrow(/config.toml is not valid TOML/);
  });
});

describe("version 3 (containerd 2.x)", () => {
  test("proxy plugin with exports, transfer unpack_config, CRI images snapshotter, a runtime handler", () => {
    const plan = planFor(3, opts({ containerd: cd21, runtimeHandlers: ["kata"] }));
    const out = roundTrip(V3_DEFAULT, plan);
    const doc = parse(out);
    expect(get(doc, "proxy_plugins", "thinsnap")).toEqual({ type: "snapshot", address: "/run/thinsnap/thinsnap.sock", exports: { root: "/var/lib/thinsnap" } });
    expect(get(doc, "plugins", "io.containerd.cri.v1.images", "snapshotter")).toBe("thinsnap");
    expect(get(doc, "plugins", "io.containerd.cri.v1.images", "runtime_platforms", "kata", "snapshotter")).toBe("thinsnap");
    expect(get(doc, "plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "kata", "snapshotter")).toBe("thinsnap");
    expect(get(doc, "plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "kata", "pod_annotations")).toEqual(["io.katacontainers.*"]);
    expect(get(doc, "plugins", "io.containerd.transfer.v1.local", "max_concurrent_downloads")).toBe(3);
    expect(get(doc, "plugins", "io.containerd.transfer.v1.local", "unpack_config")).toEqual([
      { platform: "linux/amd64", snapshotter: "overlayfs" },
      { platform: "linux/amd64", snapshotter: "thinsnap" },
    ]);
    expect(out).toContain(`${WAS}    snapshotter = 'overlayfs'\n    snapshotter = "thinsnap"${ADDED}\n`);
  });

  test("an operator's unpack_config list: thinsnap's entry only, once", () => {
    const text = `version = 3\n[[plugins."io.containerd.transfer.v1.local".unpack_config]]\n  platform = "linux/amd64"\n  snapshotter = "stargz"\n`;
    const out = roundTrip(text, planFor(3, opts({ containerd: cd21, criDefault: false })));
    expect(get(parse(out), "plugins", "io.containerd.transfer.v1.local", "unpack_config")).toEqual([
      { platform: "linux/amd64", snapshotter: "stargz" },
      { platform: "linux/amd64", snapshotter: "thinsnap" },
    ]);
  });

  test("everything already there: no change at all", () => {
    const plan = planFor(3, opts({ containerd: cd21 }));
    const done = applyEdit(null, plan).text.split("\n").filter((l) => !l.startsWith("# thinsnap-install")).join("\n");
    expect(applyEdit(done, plan)).toEqual({ text: done, changes: [] });
    expect(revertEdit(done).changed).toBe(0);
  });

  test("runtime handlers the file does not configure are reported", () => {
    expect(unconfiguredHandlers(V3_DEFAULT, 3, ["kata", "gvisor"])).toEqual(["gvisor"]);
    expect(unconfiguredHandlers(V2_DEFAULT, 2, ["kata", "runc", "x"])).toEqual(["x"]);
  });
});

describe("files of every shape", () => {
  test("no file: created with its version, and uninstall says so", () => {
    const plan = planFor(3, opts({ containerd: cd21 }));
    const out = roundTrip(null, plan);
    expect(detectConfigVersion(out)).toBe(3);
    expect(revertEdit(out)).toEqual({ text: "", created: true, changed: out.split("\n").length - 1 });
  });

  test("an empty or comments-only file gets a version line inside the block", () => {
    for (const text of ["", "# containerd config\n# nothing here yet\n"]) {
      const out = roundTrip(text, planFor(2, opts()));
      expect(detectConfigVersion(out)).toBe(2);
    }
  });

  test("CRLF line endings: new lines use them too; restoration is exact", () => {
    const text = V2_DEFAULT.replace(/\n/g, "\r\n");
    const out = roundTrip(text, planFor(2, opts({ containerd: cd17 })));
    expect(out.replace(/\r\n/g, "")).not.toContain("\n");
  });

  test("no final newline, after a header or a key", () => {
    roundTrip(`version = 2\nroot = "/x"`, planFor(2, opts()));
    const endsInHeader = `version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]`;
    const out = roundTrip(endsInHeader, planFor(2, opts()));
    expect(get(parse(out), "plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter")).toBe("thinsnap");
    roundTrip(`version = 3\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'`, planFor(3, opts({ containerd: cd21 })));
  });

  test("a version 1 file: proxy plugin and CRI under its short name", () => {
    const text = `root = "/var/lib/containerd"\n[plugins.cri.containerd]\n  snapshotter = "overlayfs"\n`;
    const out = roundTrip(text, planFor(1, opts()));
    expect(get(parse(out), "plugins", "cri", "containerd", "snapshotter")).toBe("thinsnap");
    expect(get(parse(out), "proxy_plugins", "thinsnap", "exports")).toBeUndefined();
  });

  test("a block whose end marker was deleted is refused, not guessed", () => {
    const out = applyEdit("version = 2\n", planFor(2, opts())).text;
    expect(() => revertEdit(out.replace("# thinsnap-install: end\n", ""))).toThrow(/without its/);
  });

  test("operator lines added after install survive uninstall", () => {
    const out = applyEdit(V2_DEFAULT, planFor(2, opts())).text;
    const edited = `${out}[metrics]\n  address = "127.0.0.1:1338"\n`;
    expect(revertEdit(edited).text).toBe(`${V2_DEFAULT}[metrics]\n  address = "127.0.0.1:1338"\n`);
  });
});
