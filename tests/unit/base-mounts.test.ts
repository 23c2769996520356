/**
 * Start-up unmounts only what a killed thinsnap left: its own base device
 * mounted on the 0700 directory under root_path, never anything else
 * (issue 12: anything under $TMPDIR/thinsnap-base-* used to be unmounted).
 */
import { describe, expect, test } from "bun:test";
import { baseMountDir, staleBaseMounts } from "../../src/snapshotter/mkfs.ts";

const DIR = baseMountDir("/var/lib/thin snap");
const ESC = DIR.replace(/ /g, "\\040");

const mountinfo = [
  "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
  // a user's bind mount where the old code looked
  "90 22 0:40 /home/u/x /tmp/thinsnap-base-abc rw,nosuid shared:5 - ext4 /dev/sda1 rw",
  // a FUSE mount there too
  "91 22 0:41 / /tmp/thinsnap-base-def rw,nosuid,nodev - fuse.sshfs host:/ rw",
  // our base, left mounted by a killed thinsnap (path with a space, escaped)
  `92 22 253:5 / ${ESC} rw,relatime shared:7 - ext4 /dev/mapper/tp-base-3 rw`,
  // another pool's base on our directory: not ours
  `93 22 253:6 / ${ESC} rw,relatime - ext4 /dev/mapper/tp2-base-3 rw`,
  // a snapshot device, or something bind-mounted on our directory: not the base
  `94 22 253:7 / ${ESC} rw,relatime - ext4 /dev/mapper/tp-snap-8 rw`,
  `95 22 0:40 /srv ${ESC} rw,relatime - ext4 /dev/sda1 rw`,
  // our base somewhere else: someone mounted it on purpose
  "96 22 253:5 / /mnt/look rw,relatime - ext4 /dev/mapper/tp-base-3 rw",
  "",
].join("\n");

describe("stale base mounts", () => {
  test("the mount directory is under root_path", () => {
    expect(DIR).toBe("/var/lib/thin snap/base-mount");
    expect(baseMountDir("rel")).toBe(`${process.cwd()}/rel/base-mount`);
  });

  test("only this pool's base device on our directory is matched", () => {
    expect(staleBaseMounts(mountinfo, DIR, "tp")).toEqual([DIR]);
    expect(staleBaseMounts(mountinfo, DIR, "tp2")).toEqual([DIR]);
    expect(staleBaseMounts(mountinfo, DIR, "other")).toEqual([]);
    expect(staleBaseMounts(mountinfo, "/tmp/thinsnap-base-abc", "tp")).toEqual([]);
  });

  test("a mount stacked twice is unmounted twice", () => {
    const twice = `${mountinfo}97 92 253:9 / ${ESC} rw - ext4 /dev/mapper/tp-base-4 rw\n`;
    expect(staleBaseMounts(twice, DIR, "tp")).toEqual([DIR, DIR]);
  });
});
