/**
 * The mount options a snapshot's filesystem is handed to containerd with.
 *
 * A snapshot being unpacked (an image layer extracted into it, then
 * committed) is mounted without write barriers on ext4: its journal commits,
 * the unmount's among them, then issue no cache flushes (each one a metadata
 * commit of the thin-pool and a flush of its data device). That is safe
 * because Commit fsyncs the device before it answers: by then containerd has
 * unmounted the filesystem, so the device holds a clean, checkpointed
 * filesystem, and the fsync's flush makes all of it durable, barriers or not.
 * Until that Commit the snapshot is an unpack's scratch space that nothing but
 * that unpack ever mounts (containerd never reuses an unpack key), so a power
 * cut that tears it loses nothing acknowledged. xfs has no such option (the
 * kernel refuses `nobarrier` since 4.19); ext2 has no journal.
 */
import type { Kind } from "./types.ts";

/**
 * containerd's key for snapshots it unpacks into: "extract-<unique> <chain id>"
 * (snapshots.UnpackKeyFormat), for pull, import and the 2.x transfer service
 * alike; through containerd's snapshots service the key arrives as
 * "<namespace>/<id>/<key>". The whole format is matched, the space included:
 * a container id cannot hold a space, so a container named "extract-…" (whose
 * fsyncs must reach the disk) is never taken for an unpack.
 */
const UNPACK_KEY = /^extract-\S+ \S+$/;

const NAMESPACED = /^[^/]+\/\d+\//;

/** True if the snapshot is an image layer being unpacked (by its key alone). */
export function isUnpack(key: string): boolean {
  return UNPACK_KEY.test(key.replace(NAMESPACED, ""));
}

/** Options in the order containerd's devmapper snapshotter gives them, then ours. */
export function mountOptions(fsType: string, kind: Kind, unpack: boolean): string[] {
  const options: string[] = [];
  if (fsType === "xfs") options.push("nouuid");
  if (kind !== "active") options.push("ro");
  else if (unpack && fsType === "ext4") options.push("nobarrier");
  return options;
}
