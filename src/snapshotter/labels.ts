/** Label rules shared by Prepare/View/Commit/Update (containerd's semantics). */
import { invalidArgument } from "../errors.ts";
import type { Labels } from "./types.ts";

/** containerd (labels.Validate) limits key + value to 4096 bytes. */
export const MAX_LABEL_BYTES = 4096;

/** The reference devmapper snapshotter records the filesystem type as this label. */
export const FSTYPE_LABEL = "containerd.io/snapshot/devmapper/fstype";

export function validateLabels(labels: Labels): void {
  for (const [k, v] of Object.entries(labels)) {
    const n = Buffer.byteLength(k) + Buffer.byteLength(v);
    if (n > MAX_LABEL_BYTES) {
      throw invalidArgument(`label "${k.slice(0, 64)}": key and value are ${n} bytes, more than ${MAX_LABEL_BYTES}`);
    }
  }
}

/** Drops empty values: an empty label value means "no label". */
export function withoutEmpty(labels: Labels): Labels {
  const out: Labels = {};
  for (const [k, v] of Object.entries(labels)) if (v !== "") out[k] = v;
  return out;
}

/**
 * containerd's Update: no paths replaces all labels; "labels" replaces all;
 * "labels.<k>" sets (or, with an empty/missing value, deletes) one label.
 * Any other path is InvalidArgument.
 */
export function applyLabelUpdate(current: Labels, incoming: Labels, fieldpaths: string[], name: string): Labels {
  if (fieldpaths.length === 0) return withoutEmpty(incoming);
  let next: Labels = { ...current };
  for (const path of fieldpaths) {
    if (path.startsWith("labels.")) {
      const key = path.slice("labels.".length);
      const v = incoming[key] ?? "";
      if (v === "") delete next[key];
      else next[key] = v;
    } else if (path === "labels") {
      next = withoutEmpty(incoming);
    } else {
      throw invalidArgument(`cannot update "${path}" field on snapshot "${name}"`);
    }
  }
  return next;
}
