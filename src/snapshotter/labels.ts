/**
 * Key and label rules shared by Prepare/View/Commit/Update (containerd's
 * semantics), and the caps that keep every reply under the message limit.
 *
 * Label maps are plain data: a key such as `__proto__` or `toString` is a
 * label like any other. Maps built here have no prototype, so assigning
 * `__proto__` stores it instead of dropping it, and lookups use Object.hasOwn
 * so an inherited `toString` is never mistaken for a label value.
 */
import { invalidArgument } from "../errors.ts";
import type { Labels } from "./types.ts";
import { FS_SIZE_LABEL, SIZE_LABEL } from "./max-size.ts";

/** containerd (labels.Validate) limits one label's key + value to 4096 bytes. */
export const MAX_LABEL_BYTES = 4096;

/**
 * All of one snapshot's labels together (keys + values, UTF-8 bytes). Real
 * clients set a handful (CRI and remote snapshotters: a few KiB); 64 full-size
 * labels fit. It keeps a Stat reply, and one Info of a List batch, far under
 * the 16 MiB message limit even with protobuf's per-entry framing (at most
 * ~3x for tiny entries), and bounds what repeated Updates can grow.
 */
export const MAX_LABELS_TOTAL_BYTES = 256 * 1024;

/**
 * A snapshot key or name (UTF-8 bytes). containerd's keys are
 * `<namespace>/<id>/<name>` with a digest or an "extract-…" name: ~100 bytes.
 */
export const MAX_KEY_BYTES = 4096;

/** The reference devmapper snapshotter records the filesystem type as this label. */
export const FSTYPE_LABEL = "containerd.io/snapshot/devmapper/fstype";

/** An empty label map that stores any key, `__proto__` included. */
export function emptyLabels(): Labels {
  return Object.create(null) as Labels;
}

/** A copy of `labels` as plain data (no prototype). */
export function copyLabels(labels: Labels): Labels {
  const out = emptyLabels();
  for (const [k, v] of Object.entries(labels)) out[k] = v;
  return out;
}

/** Refuses an over-long key or name; `what` names the field ("key", "parent", "name"). */
export function validateKey(key: string, what = "key"): void {
  // A UTF-8 byte is at least a UTF-16 unit's worth of a char: skip the count when clearly short.
  if (key.length * 3 <= MAX_KEY_BYTES) return;
  const n = Buffer.byteLength(key);
  if (n > MAX_KEY_BYTES) {
    throw invalidArgument(`${what} is ${n} bytes, more than the limit of ${MAX_KEY_BYTES} (MAX_KEY_BYTES)`);
  }
}

/**
 * Each label within MAX_LABEL_BYTES (containerd's rule) and all of them
 * within MAX_LABELS_TOTAL_BYTES. Checked on every map that would be stored,
 * so no request can leave a snapshot over the caps.
 */
export function validateLabels(labels: Labels): void {
  let total = 0;
  for (const [k, v] of Object.entries(labels)) {
    const n = Buffer.byteLength(k) + Buffer.byteLength(v);
    if (n > MAX_LABEL_BYTES) {
      throw invalidArgument(
        `label ${JSON.stringify(k.slice(0, 64))}: key and value are ${n} bytes, more than the limit of ${MAX_LABEL_BYTES}`,
      );
    }
    total += n;
  }
  if (total > MAX_LABELS_TOTAL_BYTES) {
    throw invalidArgument(
      `labels total ${total} bytes (keys and values), more than the limit of ${MAX_LABELS_TOTAL_BYTES} per snapshot`,
    );
  }
}

/** Drops empty values: an empty label value means "no label". */
export function withoutEmpty(labels: Labels): Labels {
  const out = emptyLabels();
  for (const [k, v] of Object.entries(labels)) if (v !== "") out[k] = v;
  return out;
}

/**
 * containerd's Update: no paths replaces all labels; "labels" replaces all;
 * "labels.<k>" sets (or, with an empty/missing value, deletes) one label.
 * Any other path is InvalidArgument. The result is validated as a whole.
 */
export function applyLabelUpdate(current: Labels, incoming: Labels, fieldpaths: string[], name: string): Labels {
  let next: Labels;
  if (fieldpaths.length === 0) {
    next = withoutEmpty(incoming);
  } else {
    next = copyLabels(current);
    for (const path of fieldpaths) {
      if (path.startsWith("labels.")) {
        const key = path.slice("labels.".length);
        const v = Object.hasOwn(incoming, key) ? incoming[key]! : "";
        if (v === "") delete next[key];
        else next[key] = v;
      } else if (path === "labels") {
        next = withoutEmpty(incoming);
      } else {
        throw invalidArgument(`cannot update "${path}" field on snapshot "${name}"`);
      }
    }
  }
  validateLabels(next);
  return next;
}

/**
 * The labels thinsnap keeps on a snapshot: its filesystem type (every one, as
 * containerd's devmapper) and, on one grown by a max-size label or descended
 * from one, its device's and its filesystem's sizes.
 */
export function deviceLabels(d: { fsType: string; sizeBytes: bigint; fsBytes: bigint | null }): Labels {
  const out: Labels = { [FSTYPE_LABEL]: d.fsType };
  if (d.fsBytes !== null) {
    out[SIZE_LABEL] = String(d.sizeBytes);
    out[FS_SIZE_LABEL] = String(d.fsBytes);
  }
  return out;
}
