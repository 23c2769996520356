/** The RPC layer's logging contract, shared by the server and its interceptors. */

/** Flat, printable fields: src/log.ts's Logger satisfies this interface. */
export type RpcLogFields = Record<string, string | number | bigint | boolean | null | undefined>;

/** Structured logger; the daemon passes its own, tests pass nothing. */
export interface RpcLogger {
  debug(msg: string, fields?: RpcLogFields): void;
  error(msg: string, fields?: RpcLogFields): void;
  /** Whether debug lines are written; lets the per-call log line cost nothing when they are not. */
  enabled?(level: "debug"): boolean;
}

export const silentRpcLogger: RpcLogger = { debug() {}, error() {} };

/** An error's message (and its cause's), for a log field. */
export function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause === undefined ? err.message : `${err.message}: ${errorText(err.cause)}`;
}
