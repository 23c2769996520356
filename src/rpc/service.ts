/**
 * containerd.services.snapshots.v1.Snapshots implemented on top of the
 * Snapshotter contract (src/snapshotter/types.ts). Logging, timing, error
 * mapping and shutdown handling are the interceptors' (interceptors.ts).
 *
 * Behaviour follows containerd's own service (services/snapshots/service.go)
 * so a proxy plugin is indistinguishable from a built-in snapshotter, except:
 * the `snapshotter` request field is ignored (a proxy plugin serves exactly
 * one snapshotter, whatever containerd calls it), and keys and labels are
 * checked here, at the boundary, because containerd only validates them in
 * its metadata layer, which not every client goes through.
 */
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Info, Kind, Labels, Mount, SnapshotOpts, Snapshotter } from "../snapshotter/types.ts";
import { InfoSchema, Kind as ProtoKind, Snapshots } from "./gen/containerd/services/snapshots/v1/snapshots_pb.ts";
import type { MountSchema } from "./gen/containerd/types/mount_pb.ts";
import { validateKey, validateLabels } from "../snapshotter/labels.ts";
import { LIST_BATCH_BYTES, LIST_BATCH_SIZE } from "./limits.ts";
import { abortReason } from "./interceptors.ts";

const KINDS: Record<Kind, ProtoKind> = {
  view: ProtoKind.VIEW,
  active: ProtoKind.ACTIVE,
  committed: ProtoKind.COMMITTED,
};

type ProtoInfo = MessageInitShape<typeof InfoSchema>;
type ProtoMount = MessageInitShape<typeof MountSchema>;

export function infoToProto(info: Info): ProtoInfo {
  return {
    name: info.name,
    parent: info.parent,
    kind: KINDS[info.kind],
    createdAt: timestampFromDate(info.created),
    updatedAt: timestampFromDate(info.updated),
    labels: info.labels,
  };
}

export function mountsToProto(mounts: Mount[]): ProtoMount[] {
  return mounts.map((m) => ({ type: m.type, source: m.source, target: m.target ?? "", options: [...m.options] }));
}

/** An upper estimate of an Info's encoded size (strings plus framing). */
function infoBytes(info: ProtoInfo): number {
  let n = 64 + Buffer.byteLength(info.name ?? "") + Buffer.byteLength(info.parent ?? "");
  for (const [k, v] of Object.entries(info.labels ?? {})) n += 16 + Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}

/**
 * Proto3 cannot tell an absent map from an empty one; containerd passes
 * WithLabels only for a non-nil map, which on the wire means "non-empty".
 */
function optsFrom(labels: Labels): SnapshotOpts {
  if (Object.keys(labels).length === 0) return {};
  validateLabels(labels);
  return { labels };
}

export function createSnapshotsService(sn: Snapshotter): ServiceImpl<typeof Snapshots> {
  return {
    async prepare(req) {
      validateKey(req.key);
      return { mounts: mountsToProto(await sn.prepare(req.key, req.parent, optsFrom(req.labels))) };
    },

    async view(req) {
      validateKey(req.key);
      return { mounts: mountsToProto(await sn.view(req.key, req.parent, optsFrom(req.labels))) };
    },

    async mounts(req) {
      return { mounts: mountsToProto(await sn.mounts(req.key)) };
    },

    async commit(req) {
      validateKey(req.name, "name");
      // containerd 2.2+ names a parent here whenever the active snapshot had
      // none, for any snapshotter (its metadata layer forwards WithParent
      // whether or not the "rebase" capability is declared); the snapshotter
      // decides what it accepts (CommitOpts.parent).
      await sn.commit(req.name, req.key, { ...optsFrom(req.labels), parent: req.parent });
      return {};
    },

    async remove(req) {
      await sn.remove(req.key);
      return {};
    },

    async stat(req) {
      return { info: infoToProto(await sn.stat(req.key)) };
    },

    async update(req) {
      // Name, parent, kind and times are immutable; only labels reach the core.
      const labels = req.info?.labels ?? {};
      validateLabels(labels);
      return { info: infoToProto(await sn.update({ name: req.info?.name ?? "", labels }, req.updateMask?.paths ?? [])) };
    },

    list: (req, ctx) => listInBatches(sn, req.filters, ctx),

    async usage(req) {
      const u = await sn.usage(req.key);
      return { size: u.size, inodes: u.inodes };
    },

    async cleanup() {
      await sn.cleanup();
      return {};
    },
  };
}

/**
 * Walks first, streams afterwards: the walk may hold the store's read lock,
 * and a slow client must not keep it held while it drains the stream. The
 * whole list is small (one Info per snapshot) so buffering it is cheap.
 */
async function* listInBatches(
  sn: Snapshotter,
  filters: string[],
  ctx: HandlerContext,
): AsyncGenerator<{ info: ProtoInfo[] }> {
  const all: ProtoInfo[] = [];
  await sn.walk((info) => {
    all.push(infoToProto(info));
  }, filters);
  // Batches of at most LIST_BATCH_SIZE Infos and LIST_BATCH_BYTES: one Info
  // within the label caps is far smaller, so every batch fits a message.
  let batch: ProtoInfo[] = [];
  let bytes = 0;
  for (const info of all) {
    const size = infoBytes(info);
    if (batch.length > 0 && (batch.length >= LIST_BATCH_SIZE || bytes + size > LIST_BATCH_BYTES)) {
      // Client went away or the server is shutting down: stop producing, and
      // fail rather than end cleanly -- a cut list must not look complete.
      if (ctx.signal.aborted) throw abortReason(ctx.signal);
      yield { info: batch };
      batch = [];
      bytes = 0;
    }
    batch.push(info);
    bytes += size;
  }
  if (batch.length > 0) {
    if (ctx.signal.aborted) throw abortReason(ctx.signal);
    yield { info: batch };
  }
}
