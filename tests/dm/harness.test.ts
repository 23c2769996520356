// Smoke test for the dm test harness: proves that tests/dm really runs on a kernel
// with device-mapper thin-pool (normally the qemu guest of tests/vm/vmrun).
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { dm, inGuest } from "./env.ts";

if (!dm.available) console.warn(`tests/dm SKIPPED (device-mapper not available): ${dm.reason}`);

describe("dm harness", () => {
  test.skipIf(!dm.available)("/dev/mapper/control exists", () => {
    expect(existsSync("/dev/mapper/control")).toBe(true);
  });

  test.skipIf(!dm.available)("dm_thin_pool kernel module is loaded", () => {
    const modules = existsSync("/proc/modules") ? readFileSync("/proc/modules", "utf8") : "";
    const loaded = /^dm_thin_pool\s/m.test(modules) || existsSync("/sys/module/dm_thin_pool");
    expect(loaded).toBe(true);
  });

  test.skipIf(!dm.available)("libdevmapper.so.1.02.1 is installed", () => {
    const found = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"].some((d) =>
      existsSync(`${d}/libdevmapper.so.1.02.1`),
    );
    expect(found).toBe(true);
  });

  test.skipIf(!dm.available)("dmsetup talks to the kernel and it has the thin-pool target", () => {
    const r = Bun.spawnSync(["dmsetup", "targets"], { env: { ...process.env, DM_DISABLE_UDEV: "1" } });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString()).toMatch(/^thin-pool\s/m);
  });

  // The guest loads these up front; on a real dm host they may be modules not loaded yet.
  test.skipIf(!dm.available || !inGuest)("guest kernel has ext4 and xfs", () => {
    const fs = readFileSync("/proc/filesystems", "utf8");
    expect(fs).toMatch(/\bext4$/m);
    expect(fs).toMatch(/\bxfs$/m);
  });
});
