/**
 * The contract of today's containerd (2.x), pinned against the real daemon
 * on a real pool with our own client: Commit's parent (2.2+), the labels 2.3+
 * sends on every unpack Prepare, and the mount modes 2.4 relies on (an
 * extraction Prepare whose last mount is read-only counts as "already staged").
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { dm as env } from "./env.ts";
import { createTestPool, type TestPool } from "./pool-fixture.ts";
import { Daemon, type DaemonConfig } from "../kit/daemon.ts";
import { Code, codeOf, Kind, listAll, snapshotsClient, type SnapshotsClient } from "../kit/client.ts";

describe.skipIf(!env.available)("containerd 2.x contract (real daemon)", () => {
  let dir: string;
  let tp: TestPool;
  let d: Daemon;
  let c: SnapshotsClient;

  beforeAll(async () => {
    dir = mkdtempSync("/tmp/tscontract-");
    tp = createTestPool("tscontract", { dataSize: 512 << 20 });
    mkdirSync(`${dir}/run`, { mode: 0o700 });
    const cfg: DaemonConfig = { poolName: tp.name, rootPath: `${dir}/root`, address: `${dir}/run/s.sock`, baseImageSize: "64MB" };
    d = await Daemon.serving({ config: cfg, readyTimeoutMs: 120_000 });
    c = snapshotsClient(cfg.address, { timeoutMs: 60_000 });
    await c.prepare({ key: "l1-extract" });
    await c.commit({ key: "l1-extract", name: "l1" });
  }, 180_000);

  afterAll(async () => {
    await d?.kill();
    tp?.destroy();
    rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test("Commit naming the same parent is accepted", async () => {
    await c.prepare({ key: "same", parent: "l1" });
    await c.commit({ key: "same", name: "same-c", parent: "l1" });
    const st = await c.stat({ key: "same-c" });
    expect([st.info?.kind, st.info?.parent]).toEqual([Kind.COMMITTED, "l1"]);
  }, 60_000);

  test("Commit naming a different parent is InvalidArgument and changes nothing", async () => {
    await c.prepare({ key: "other", parent: "l1" });
    expect(await codeOf(c.commit({ key: "other", name: "other-c", parent: "same-c" }))).toBe(Code.InvalidArgument);
    expect((await c.stat({ key: "other" })).info?.kind).toBe(Kind.ACTIVE);
    expect(await codeOf(c.stat({ key: "other-c" }))).toBe(Code.NotFound);
  }, 60_000);

  test("a parent for a snapshot prepared without one is refused (no rebase) and changes nothing", async () => {
    await c.prepare({ key: "orphan" });
    expect(await codeOf(c.commit({ key: "orphan", name: "orphan-c", parent: "l1" }))).toBe(Code.FailedPrecondition);
    const st = await c.stat({ key: "orphan" });
    expect([st.info?.kind, st.info?.parent]).toEqual([Kind.ACTIVE, ""]);
    expect((await listAll(c)).map((i) => i.name)).not.toContain("orphan-c");
  }, 60_000);

  test("the labels containerd 2.3+ sends on an unpack Prepare are stored and returned", async () => {
    const labels = {
      "containerd.io/snapshot.ref": "sha256:aaaa",
      "containerd.io/snapshot/diff-id": "sha256:bbbb",
      "containerd.io/snapshot/parent-chain-id": "sha256:cccc",
    };
    await c.prepare({ key: "unpack", parent: "l1", labels });
    const got = (await c.stat({ key: "unpack" })).info?.labels ?? {};
    for (const [k, v] of Object.entries(labels)) expect(got[k]).toBe(v);
    await c.commit({ key: "unpack", name: "unpacked", labels });
    const committed = (await c.stat({ key: "unpacked" })).info?.labels ?? {};
    for (const [k, v] of Object.entries(labels)) expect(committed[k]).toBe(v);
  }, 60_000);

  test("Prepare's mounts are never read-only; View's always are", async () => {
    const prepared = (await c.prepare({ key: "rw", parent: "l1" })).mounts;
    const viewed = (await c.view({ key: "ro", parent: "l1" })).mounts;
    expect(prepared.length).toBeGreaterThan(0);
    expect(prepared.at(-1)!.options).not.toContain("ro");
    expect((await c.mounts({ key: "rw" })).mounts.at(-1)!.options).not.toContain("ro");
    expect(viewed.at(-1)!.options).toContain("ro");
    expect((await c.mounts({ key: "ro" })).mounts.at(-1)!.options).toContain("ro");
  }, 60_000);
});
