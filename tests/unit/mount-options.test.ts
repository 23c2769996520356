/** Which mount options a snapshot gets: unpacks (by key or label) skip ext4's write barriers; nothing else changes. */
import { describe, expect, test } from "bun:test";
import { isUnpack, mountOptions, SNAPSHOT_REF_LABEL } from "../../src/snapshotter/mount-options.ts";

describe("isUnpack", () => {
  const none = (): Record<string, string> => ({});
  test("containerd's unpack key, bare or namespaced by containerd's snapshots service", () => {
    expect(isUnpack("extract-123456789-Ab1c sha256:0123", none)).toBe(true);
    expect(isUnpack("default/17/extract-123456789-Ab1c sha256:0123", none)).toBe(true);
    expect(isUnpack("k8s.io/3/extract-1 sha256:0123", none)).toBe(true);
  });
  test("other keys are not unpacks, even when 'extract-' appears later", () => {
    expect(isUnpack("default/17/my-container", none)).toBe(false);
    expect(isUnpack("default/17/x/extract-1", none)).toBe(false);
    expect(isUnpack("extracted", none)).toBe(false);
    expect(isUnpack("default/notanid/extract-1 sha256:0", none)).toBe(false);
  });
  test("the snapshot.ref label marks an unpack whatever the key; labels are read only when the key does not tell", () => {
    expect(isUnpack("default/4/some-key", () => ({ [SNAPSHOT_REF_LABEL]: "sha256:abc" }))).toBe(true);
    let read = 0;
    expect(isUnpack("extract-1 sha256:0", () => (read++, {}))).toBe(true);
    expect(read).toBe(0);
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
