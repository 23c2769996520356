/**
 * Maps core errors to Connect/gRPC status codes.
 *
 * containerd's proxy client turns the gRPC code back into an errdefs class
 * (errdefs.FromGRPC), and callers branch on that class (e.g. IsNotFound during
 * unpack, IsAlreadyExists during prepare). So every known condition must keep
 * its specific code: falling back to Unknown would break containerd's logic.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { SnapshotterError, type ErrorCode } from "../errors.ts";

const CODES: Record<ErrorCode, Code> = {
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  failed_precondition: Code.FailedPrecondition,
  invalid_argument: Code.InvalidArgument,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  unimplemented: Code.Unimplemented,
  internal: Code.Internal,
};

export function connectCode(code: ErrorCode): Code {
  return CODES[code];
}

/** The cause's message, or a printable stand-in for non-Error throwables. */
function describe(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === "string" ? err : `non-error thrown: ${String(err)}`;
}

/**
 * Converts anything thrown by the snapshotter into a ConnectError.
 *
 * `what` names the operation and key (e.g. `prepare "k"`), so the message
 * reads `prepare "k": parent "p" not found` -- containerd logs only the
 * message, and without the key it is useless for debugging. The original
 * error is kept as `cause` for server-side logging.
 */
export function toConnectError(err: unknown, what: string): ConnectError {
  // Already mapped (validation done in the RPC layer): keep code and cause.
  if (err instanceof ConnectError) {
    return new ConnectError(bounded(`${what}: ${err.rawMessage}`), err.code, err.metadata, undefined, err.cause);
  }
  const code = err instanceof SnapshotterError ? connectCode(err.code) : Code.Internal;
  return new ConnectError(bounded(`${what}: ${describe(err)}`), code, undefined, undefined, err);
}

/**
 * The message travels in the grpc-message trailer: a key of up to a few MiB
 * quoted twice would overflow HTTP/2's header frame and turn a NotFound into
 * a stream error. Long messages keep their head and tail.
 */
export const MAX_MESSAGE_CHARS = 4096;
function bounded(msg: string): string {
  if (msg.length <= MAX_MESSAGE_CHARS) return msg;
  const half = MAX_MESSAGE_CHARS / 2 - 16;
  return `${msg.slice(0, half)} …(${msg.length - 2 * half} chars)… ${msg.slice(-half)}`;
}
