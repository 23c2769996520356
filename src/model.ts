/**
 * The snapshot model shared by the store, the filter language and the
 * snapshotter: plain types at the bottom of the module graph, so none of
 * those layers has to import another to name a snapshot's kind or labels.
 */

export type Kind = "view" | "active" | "committed";

/** Every kind, in the order containerd lists them. */
export const KINDS: readonly Kind[] = ["active", "view", "committed"];

export function isKind(k: string): k is Kind {
  return (KINDS as readonly string[]).includes(k);
}

export type Labels = Record<string, string>;

export interface Info {
  kind: Kind;
  name: string;
  /** Name of the committed parent, "" when parentless. */
  parent: string;
  labels: Labels;
  created: Date;
  updated: Date;
}
