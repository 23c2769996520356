/**
 * containerd.services.snapshots.v1.Snapshots implemented on top of the
 * Snapshotter contract (src/snapshotter/types.ts).
 *
 * Behaviour follows containerd's own service (services/snapshots/service.go)
 * so a proxy plugin is indistinguishable from a built-in snapshotter, except:
 * the `snapshotter` request field is ignored (a proxy plugin serves exactly
 * one snapshotter, whatever containerd calls it), and labels are validated
 * here because containerd only validates them in its metadata layer, which
 * not every client goes through.
 */
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Info, Kind, Labels, Mount, SnapshotOpts, Snapshotter } from "../snapshotter/types.ts";
import {
  InfoSchema,
  Kind as ProtoKind,
  Snapshots,
} from "./gen/containerd/services/snapshots/v1/snapshots_pb.ts";
import type { MountSchema } from "./gen/containerd/types/mount_pb.ts";
import { toConnectError } from "./errors.ts";
import { MAX_LABEL_BYTES } from "../snapshotter/labels.ts";

/** Flat, printable fields: src/log.ts's Logger satisfies this interface. */
export type RpcLogFields = Record<string, string | number | bigint | boolean | null | undefined>;

/** Structured logger; the daemon passes its own, tests pass nothing. */
export interface RpcLogger {
  debug(msg: string, fields?: RpcLogFields): void;
  error(msg: string, fields?: RpcLogFields): void;
}

/** An error's message (and its cause's), for a log field. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause === undefined ? err.message : `${err.message}: ${errorText(err.cause)}`;
}

const silent: RpcLogger = { debug() {}, error() {} };

/** containerd sends List results in blocks of 100 (service.go). */
export const LIST_BATCH_SIZE = 100;
/** …and we also cap a block's size well under the 16 MiB message limit. */
export const LIST_BATCH_BYTES = 4 * 1024 * 1024;

/** An upper estimate of an Info's encoded size (strings plus framing). */
function infoBytes(info: ProtoInfo): number {
  let n = 64 + Buffer.byteLength(info.name ?? "") + Buffer.byteLength(info.parent ?? "");
  for (const [k, v] of Object.entries(info.labels ?? {})) n += 16 + Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}


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
    labels: { ...info.labels },
  };
}

export function mountsToProto(mounts: Mount[]): ProtoMount[] {
  return mounts.map((m) => ({ type: m.type, source: m.source, target: m.target ?? "", options: [...m.options] }));
}

/** Same rule and message shape as containerd's labels.Validate. */
export function validateLabels(labels: Labels): void {
  for (const [k, v] of Object.entries(labels)) {
    if (Buffer.byteLength(k, "utf8") + Buffer.byteLength(v, "utf8") > MAX_LABEL_BYTES) {
      throw new ConnectError(
        `label key and value greater than maximum size (${MAX_LABEL_BYTES} bytes), key: ${k.slice(0, 10)}`,
        Code.InvalidArgument,
      );
    }
  }
}

/**
 * Proto3 cannot tell an absent map from an empty one; containerd passes
 * WithLabels only for a non-nil map, which on the wire means "non-empty".
 */
function optsFrom(labels: Labels): SnapshotOpts {
  validateLabels(labels);
  return Object.keys(labels).length > 0 ? { labels } : {};
}

export function createSnapshotsService(sn: Snapshotter, log: RpcLogger = silent): ServiceImpl<typeof Snapshots> {
  /** Runs one call, logging it and mapping any failure to a status code. */
  async function call<T>(
    op: string,
    key: string,
    fields: RpcLogFields,
    ctx: HandlerContext,
    fn: () => Promise<T>,
  ): Promise<T> {
    const t0 = performance.now();
    const ms = (): number => Math.round((performance.now() - t0) * 1000) / 1000;
    try {
      const out = await untilAborted(fn, ctx.signal);
      log.debug(op, { key, ...fields, ms: ms() });
      return out;
    } catch (err) {
      const ce = toConnectError(err, `${op} ${JSON.stringify(key)}`);
      // Expected conditions (not found, exists...) are containerd's business;
      // only failures we could not classify deserve an error log line.
      if (ce.code === Code.Internal) log.error(ce.rawMessage, { op, key, ms: ms(), cause: errorText(err) });
      else log.debug(op, { key, ...fields, ms: ms(), code: Code[ce.code] });
      throw ce;
    }
  }

  return {
    prepare: (req, ctx) =>
      call("prepare", req.key, { parent: req.parent }, ctx, async () => ({
        mounts: mountsToProto(await sn.prepare(req.key, req.parent, optsFrom(req.labels))),
      })),

    view: (req, ctx) =>
      call("view", req.key, { parent: req.parent }, ctx, async () => ({
        mounts: mountsToProto(await sn.view(req.key, req.parent, optsFrom(req.labels))),
      })),

    mounts: (req, ctx) =>
      call("mounts", req.key, {}, ctx, async () => ({ mounts: mountsToProto(await sn.mounts(req.key)) })),

    commit: (req, ctx) =>
      call("commit", req.key, { name: req.name, parent: req.parent }, ctx, async () => {
        const opts = optsFrom(req.labels);
        // containerd 2.x may ask to rebase onto another parent while
        // committing. The Snapshotter contract cannot rebase, so accept the
        // field only when it names the parent the snapshot already has;
        // containerd only sends it to snapshotters declaring "rebase".
        if (req.parent !== "") {
          const info = await sn.stat(req.key);
          if (info.parent !== req.parent) {
            throw new ConnectError(
              `rebase onto ${JSON.stringify(req.parent)} not supported (current parent ${JSON.stringify(info.parent)})`,
              Code.Unimplemented,
            );
          }
        }
        await sn.commit(req.name, req.key, opts);
        return {};
      }),

    remove: (req, ctx) =>
      call("remove", req.key, {}, ctx, async () => {
        await sn.remove(req.key);
        return {};
      }),

    stat: (req, ctx) => call("stat", req.key, {}, ctx, async () => ({ info: infoToProto(await sn.stat(req.key)) })),

    update: (req, ctx) => {
      // Name, parent, kind and times are immutable; only labels reach the core.
      const name = req.info?.name ?? "";
      const labels = req.info?.labels ?? {};
      const paths = req.updateMask?.paths ?? [];
      return call("update", name, { paths: paths.join(",") }, ctx, async () => {
        validateLabels(labels);
        return { info: infoToProto(await sn.update({ name, labels }, paths)) };
      });
    },

    list: (req, ctx) => listInBatches(sn, req.filters, ctx, log),

    usage: (req, ctx) =>
      call("usage", req.key, {}, ctx, async () => {
        const u = await sn.usage(req.key);
        return { size: u.size, inodes: u.inodes };
      }),

    cleanup: (_req, ctx) =>
      call("cleanup", "", {}, ctx, async () => {
        await sn.cleanup();
        return {};
      }),
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
  log: RpcLogger,
): AsyncGenerator<{ info: ProtoInfo[] }> {
  log.debug("list", { filters: JSON.stringify(filters) });
  const all: ProtoInfo[] = [];
  try {
    await untilAborted(
      () =>
        sn.walk((info) => {
          all.push(infoToProto(info));
        }, filters),
      ctx.signal,
    );
  } catch (err) {
    const ce = toConnectError(err, `list ${JSON.stringify(filters)}`);
    if (ce.code === Code.Internal) log.error(ce.rawMessage, { op: "list", cause: errorText(err) });
    throw ce;
  }
  // Batches of at most 100 Infos, and of at most LIST_BATCH_BYTES: labels
  // can legally make single Infos MiBs large, and one oversized batch would
  // break List for every client.
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

/**
 * Runs `fn` unless the call is already aborted (client gone, deadline
 * passed, server out of grace period), and rejects as soon as it is. A
 * started snapshotter operation cannot be cancelled and runs on; what this
 * buys is that the client gets a proper status (e.g. Unavailable on
 * shutdown) instead of a connection reset.
 */
function untilAborted<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    fn()
      .then(resolve, reject)
      .finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function abortReason(signal: AbortSignal): ConnectError {
  return ConnectError.from(signal.reason ?? "call aborted", Code.Canceled);
}
