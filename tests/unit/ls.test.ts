/** `thinsnap ls`: the inventory from the store and the (fake) pool, its filters, table and JSON. */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { formatLsTable, inventory, LS_HELP } from "../../src/cli/ls.ts";
import { main } from "../../src/cli/main.ts";
import { ThinSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import { Store } from "../../src/store/store.ts";
import { FakePool } from "../kit/fakes/fake-pool.ts";
import { TEST_OPTIONS } from "../kit/fakes/options.ts";

const MiB = 1n << 20n;

async function populated(store = Store.open(":memory:")) {
  const pool = new FakePool();
  let now = Date.UTC(2026, 0, 2, 3, 4, 5);
  const sn = await ThinSnapshotter.open(TEST_OPTIONS, { store, pool, format: async () => {}, now: () => now++ });
  const dev = (key: string) => store.getDevice(store.getSnapshot(key)!.thinId)!.dmName;
  // the base's own filesystem maps 1 MiB: a parentless snapshot starts there
  store.setMeta("base_mapped_bytes", String(MiB));
  pool.thins.get(store.baseDevice()!.thinId)!.mapped = MiB;
  await sn.prepare("default/1/layer1", "");
  pool.write(dev("default/1/layer1"), 3n * MiB);
  await sn.commit("default/2/sha256:aaa", "default/1/layer1");
  await sn.prepare("default/3/container", "default/2/sha256:aaa");
  pool.write(dev("default/3/container"), 5n * MiB);
  pool.open(dev("default/3/container"));
  await sn.view("k8s.io/4/view", "default/2/sha256:aaa");
  return { sn, pool, store, dev };
}

describe("inventory", () => {
  test("one row per snapshot with kernel state and exclusive usage", async () => {
    const { pool, store, dev, sn } = await populated();
    const rows = inventory(store, pool);
    expect(rows.map((r) => r.key)).toEqual(["default/2/sha256:aaa", "default/3/container", "k8s.io/4/view"]);
    const [committed, active, view] = rows;
    expect(committed).toMatchObject({
      kind: "committed",
      parent: "",
      device: dev("default/2/sha256:aaa"),
      deviceState: "ready",
      active: false,
      mounted: false,
      sizeBytes: Number(64n * MiB),
      usageBytes: Number(3n * MiB), // 4 MiB mapped, 1 MiB of them the base's
    });
    expect(committed!.created).toMatch(/^2026-01-02T03:04:\d\dZ$/);
    expect(active).toMatchObject({ kind: "active", parent: "default/2/sha256:aaa", active: true, mounted: true, usageBytes: Number(5n * MiB) });
    expect(view).toMatchObject({ kind: "view", active: true, mounted: false, usageBytes: 0 });
    expect(active!.thinId).toBe(store.getSnapshot("default/3/container")!.thinId);
    // Usage RPC and ls agree
    expect((await sn.usage("default/3/container")).size).toBe(5n * MiB);
    expect((await sn.usage("default/2/sha256:aaa")).size).toBe(3n * MiB);
  });

  test("filters by kind and key prefix (any characters, no pattern syntax)", async () => {
    const { pool, store, sn } = await populated();
    expect(inventory(store, pool, { kind: "active" }).map((r) => r.key)).toEqual(["default/3/container"]);
    expect(inventory(store, pool, { prefix: "default/" }).map((r) => r.key)).toEqual(["default/2/sha256:aaa", "default/3/container"]);
    expect(inventory(store, pool, { prefix: "k8s.io/", kind: "view" }).map((r) => r.key)).toEqual(["k8s.io/4/view"]);
    expect(inventory(store, pool, { prefix: "k8s.io/", kind: "active" })).toEqual([]);
    await sn.prepare("a%_b/1", "");
    expect(inventory(store, pool, { prefix: "a%" }).map((r) => r.key)).toEqual(["a%_b/1"]);
    expect(inventory(store, pool, { prefix: "a_" })).toEqual([]);
  });

  test("an active snapshot whose device is not mapped has unknown usage, not an error", async () => {
    const { pool, store, dev } = await populated();
    pool.mapped.delete(dev("k8s.io/4/view"));
    const view = inventory(store, pool, { kind: "view" })[0]!;
    expect(view.active).toBe(false);
    expect(view.usageBytes).toBeNull();
  });

  test("a Prepare under way shows its device as creating", async () => {
    const { pool, store, sn } = await populated();
    let seen: unknown = null;
    pool.onCall = (op) => {
      if (op === "create_snap") seen = inventory(store, pool, { prefix: "new" })[0];
    };
    await sn.prepare("new", "");
    pool.onCall = null;
    expect(seen).toMatchObject({ key: "new", deviceState: "creating", active: false, usageBytes: null });
    expect(formatLsTable([seen as never])).toContain("(creating)");
    expect(inventory(store, pool, { prefix: "new" })[0]).toMatchObject({ deviceState: "ready", active: true });
  });

  test("table: header and aligned columns; JSON numbers", async () => {
    const { pool, store } = await populated();
    const rows = inventory(store, pool);
    const t = formatLsTable(rows).split("\n");
    expect(t[0]).toMatch(/^KEY\s+KIND\s+PARENT\s+THIN ID\s+DEVICE\s+ACTIVE\s+MOUNTED\s+SIZE\s+USAGE\s+CREATED$/);
    expect(t).toHaveLength(5); // header, 3 rows, trailing ""
    const kindCol = t[0]!.indexOf("KIND");
    for (const line of t.slice(1, 4)) expect(["committed", "active", "view"]).toContain(line.slice(kindCol).split(/\s+/)[0]!);
    expect(t[2]).toContain("5 MiB");
    expect(t[2]).toContain("64 MiB");
    expect(JSON.parse(JSON.stringify(rows))[1].usageBytes).toBe(5 * 2 ** 20);
    expect(formatLsTable([]).split("\n")[0]).toStartWith("KEY");
  });

  test("the store opened read-only (as ls does) serves the inventory while a writer is open", async () => {
    const dir = mkdtempSync(`${tmpdir()}/tsls-`);
    try {
      const path = `${dir}/metadata.db`;
      const { pool, sn } = await populated(Store.open(path));
      const ro = Store.wrap(new Database(path, { readonly: true, strict: true }), path);
      expect(inventory(ro, pool).map((r) => r.key)).toHaveLength(3);
      // the daemon keeps writing meanwhile
      await sn.prepare("more", "");
      expect(inventory(ro, pool).map((r) => r.key)).toContain("more");
      expect(() => ro.setMeta("x", "y")).toThrow(/readonly/);
      ro.close();
      await sn.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("thinsnap ls command", () => {
  test("is listed in the help and rejects a bad --kind before touching anything", async () => {
    expect(LS_HELP).toContain("--prefix");
    const err: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      expect(await main(["ls", "--kind", "bogus"])).toBe(2);
    } finally {
      process.stderr.write = write;
    }
    expect(err.join("")).toContain('--kind must be active, view or committed (not "bogus")');
  });
});
