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
import type { Kind, Labels } from "./types.ts";

/**
 * containerd's key for snapshots it unpacks into: "extract-<unique> <chain id>"
 * (snapshots.UnpackKeyFormat), for pull and import alike; through
 * containerd's snapshots service the key arrives as "<namespace>/<id>/<key>".
 */
export const UNPACK_KEY_PREFIX = "extract-";
/** The label containerd's pull unpacker puts on a snapshot it unpacks into (the layer's chain id). */
export const SNAPSHOT_REF_LABEL = "containerd.io/snapshot.ref";

const NAMESPACED = /^[^/]+\/\d+\//;

/** True if the snapshot is an image layer being unpacked (by its key, else by its labels, read only if needed). */
export function isUnpack(key: string, labels: () => Labels): boolean {
  const bare = key.replace(NAMESPACED, "");
  return bare.startsWith(UNPACK_KEY_PREFIX) || labels()[SNAPSHOT_REF_LABEL] !== undefined;
}

/** Options in the order containerd's devmapper snapshotter gives them, then ours. */
export function mountOptions(fsType: string, kind: Kind, unpack: boolean): string[] {
  const options: string[] = [];
  if (fsType === "xfs") options.push("nouuid");
  if (kind !== "active") options.push("ro");
  else if (unpack && fsType === "ext4") options.push("nobarrier");
  return options;
}
