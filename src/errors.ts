/**
 * Typed errors that carry the gRPC status code the RPC layer answers with.
 * The core never imports the RPC library: the code is a plain string here and
 * is mapped to Connect's numeric Code in src/rpc.
 */
export type ErrorCode =
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "invalid_argument"
  | "resource_exhausted"
  | "unavailable"
  | "unimplemented"
  | "internal";

export class SnapshotterError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = "SnapshotterError";
  }
}

export const notFound = (msg: string): SnapshotterError => new SnapshotterError("not_found", msg);
export const alreadyExists = (msg: string): SnapshotterError => new SnapshotterError("already_exists", msg);
export const failedPrecondition = (msg: string): SnapshotterError =>
  new SnapshotterError("failed_precondition", msg);
export const invalidArgument = (msg: string): SnapshotterError => new SnapshotterError("invalid_argument", msg);
export const resourceExhausted = (msg: string): SnapshotterError =>
  new SnapshotterError("resource_exhausted", msg);
export const unavailable = (msg: string): SnapshotterError => new SnapshotterError("unavailable", msg);

export function isCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof SnapshotterError && err.code === code;
}
