/** Which mount options a snapshot gets: unpacks (by containerd's unpack key) skip ext4's write barriers; nothing else changes. */
import { describe, expect, test } from "bun:test";
import { isUnpack, mountOptions } from "../../src/snapshotter/mount-options.ts";

describe("isUnpack", () => {
  test("containerd's unpack key, bare or namespaced by containerd's snapshots service", () => {
    expect(isUnpack("extract-123456789-Ab1c sha256:0123")).toBe(true);
    expect(isUnpack("default/17/extract-123456789-Ab1c sha256:0123")).toBe(true);
    expect(isUnpack("k8s.io/3/extract-1 sha256:0123")).toBe(true);
  });
  test("other keys are not unpacks, even when 'extract-' appears later", () => {
    expect(isUnpack("default/17/my-container")).toBe(false);
    expect(isUnpack("default/17/x/extract-1")).toBe(false);
    expect(isUnpack("extracted")).toBe(false);
    expect(isUnpack("default/notanid/extract-1 sha256:0")).toBe(false);
  });
  test("a container whose id starts with extract- is not an unpack (containerd's unpack key has a space)", () => {
    expect(isUnpack("default/17/extract-worker")).toBe(false);
    expect(isUnpack("extract-worker")).toBe(false);
    expect(isUnpack("default/17/extract-1 sha256:0 x")).toBe(false);
  });
});

describe("mountOptions", () => {
  test("as containerd's devmapper: xfs gets nouuid, views ro", () => {
    expect(mountOptions("ext4", "active", false)).toEqual([]);
    expect(mountOptions("ext4", "view", false)).toEqual(["ro"]);
    expect(mountOptions("xfs", "active", false)).toEqual(["nouuid"]);
    expect(mountOptions("xfs", "view", false)).toEqual(["nouuid", "ro"]);
  });
  test("an active ext4 unpack is mounted without barriers; xfs, ext2 and views are not changed", () => {
    expect(mountOptions("ext4", "active", true)).toEqual(["nobarrier"]);
    expect(mountOptions("xfs", "active", true)).toEqual(["nouuid"]);
    expect(mountOptions("ext2", "active", true)).toEqual([]);
    expect(mountOptions("ext4", "view", true)).toEqual(["ro"]);
  });
});
