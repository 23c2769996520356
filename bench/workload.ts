/**
 * What a layer unpack does to a snapshot's device: mount it, write small
 * files, unmount. The same code runs for every snapshotter and for the floor.
 */
import { mkdirSync, rmdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { mount, umount, MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT } from "../src/sys/libc.ts";
import type { MountSpec } from "../tests/kit/process.ts";

/** Files per layer and their size: "small files", like a typical image layer's. */
export const FILES_PER_LAYER = 32;
export const FILE_BYTES = 4096;

let seq = 0;
const payload = Buffer.alloc(FILE_BYTES, 0x5a);

/**
 * Mounts (as the mounts say), writes FILES_PER_LAYER files, unmounts. Returns
 * ms per phase. mount(2)/umount(2) are synchronous FFI calls; the writes are
 * asynchronous, so concurrent chains overlap their file IO.
 */
export async function mountWriteUmount(mounts: MountSpec[], tag: string, files = FILES_PER_LAYER): Promise<{ mount: number; write: number; umount: number }> {
  const dir = `/run/bench-mnt/${process.pid}-${++seq}`;
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  mountOne(mounts, dir);
  const t1 = performance.now();
  let t2 = t1;
  try {
    mkdirSync(`${dir}/${tag}`, { recursive: true });
    await Promise.all(Array.from({ length: files }, (_, i) => writeFile(`${dir}/${tag}/f${i}`, payload)));
  } finally {
    t2 = performance.now();
    umount(dir);
  }
  const t3 = performance.now();
  rmdirSync(dir);
  return { mount: t1 - t0, write: t2 - t1, umount: t3 - t2 };
}

/** mount(2) of a snapshot's one mount at dir: ext4/xfs devices, overlay, or a bind mount (overlayfs with one lower). */
export function mountOne(mounts: MountSpec[], dir: string): void {
  const m = mounts[0];
  if (!m || mounts.length !== 1) throw new Error(`expected one mount, got ${JSON.stringify(mounts)}`);
  const bind = m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind");
  let flags = m.options.includes("ro") ? MS_RDONLY : 0n;
  if (bind) flags |= MS_BIND | (m.options.includes("rbind") ? MS_REC : 0n);
  const data = bind ? "" : m.options.filter((o) => o !== "ro" && o !== "rw").join(",");
  mount(m.source, dir, bind ? "" : m.type, flags, data);
  // A read-only bind mount takes a remount to become read-only.
  if (bind && flags & MS_RDONLY) mount("", dir, "", flags | MS_REMOUNT, "");
}

/** Mounts the snapshot at a fresh directory, runs fn there, unmounts. */
export async function withMounted<T>(mounts: MountSpec[], fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = `/run/bench-mnt/${process.pid}-${++seq}`;
  mkdirSync(dir, { recursive: true });
  mountOne(mounts, dir);
  try {
    return await fn(dir);
  } finally {
    umount(dir);
    rmdirSync(dir);
  }
}
