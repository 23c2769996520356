/**
 * Cross-cutting work of every call, as Connect interceptors: the call runs
 * until the client goes away or the server's grace period ends, failures are
 * mapped to gRPC codes (errors.ts) with the method and key in the message,
 * each call is logged with its duration, and an optional observer sees
 * (method, code, seconds) -- the hook for metrics.
 */
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { toConnectError } from "./errors.ts";
import { errorText, silentRpcLogger, type RpcLogger } from "./rpc-log.ts";

/**
 * Called once per finished call. `method` is the RPC name ("Stat"), `code`
 * the gRPC code name ("OK", "NotFound", …), `seconds` the handler's time
 * (for a List, until its last batch was handed to the transport).
 */
export type CallObserver = (method: string, code: string, seconds: number) => void;

export interface InterceptorOptions {
  log?: RpcLogger;
  observe?: CallObserver;
}

/** The chain the server installs, outermost first. */
export function rpcInterceptors(opts: InterceptorOptions = {}): Interceptor[] {
  return [callInterceptor(opts.log ?? silentRpcLogger, opts.observe)];
}

/** The fields of a request that name the snapshot it is about. */
interface KeyedMessage {
  key?: unknown;
  name?: unknown;
  info?: { name?: unknown };
}

function keyOf(message: unknown): string {
  const m = message as KeyedMessage;
  if (typeof m.key === "string") return m.key;
  if (typeof m.name === "string") return m.name;
  const n = m.info?.name;
  return typeof n === "string" ? n : "";
}

/** "Stat" -> "stat", once per method. */
const opNames = new Map<string, string>();
function opName(method: string): string {
  let op = opNames.get(method);
  if (op === undefined) {
    op = method.charAt(0).toLowerCase() + method.slice(1);
    opNames.set(method, op);
  }
  return op;
}

function callInterceptor(log: RpcLogger, observe: CallObserver | undefined): Interceptor {
  const debug = log.enabled?.("debug") ?? true;
  return (next) => async (req) => {
    const method = req.method.name;
    const op = opName(method);
    const t0 = performance.now();
    const key = req.stream ? "" : keyOf(req.message);
    const finish = (err: unknown): ConnectError | undefined => {
      const ms = performance.now() - t0;
      let ce: ConnectError | undefined;
      if (err === undefined) {
        if (debug) log.debug(op, { key, ms: round(ms) });
      } else {
        ce = toConnectError(err, req.stream ? op : `${op} ${JSON.stringify(key)}`);
        // Expected conditions (not found, exists…) are containerd's business;
        // the daemon's own failures (Internal, Unavailable) are error lines.
        if (ce.code === Code.Internal || ce.code === Code.Unavailable) {
          log.error(ce.rawMessage, { op, key, ms: round(ms), code: Code[ce.code], cause: errorText(err) });
        }
        else if (debug) log.debug(op, { key, ms: round(ms), code: Code[ce.code] });
      }
      observe?.(method, ce === undefined ? "OK" : Code[ce.code], ms / 1000);
      return ce;
    };
    let res: UnaryResponse | StreamResponse;
    try {
      if (req.signal.aborted) throw abortReason(req.signal);
      res = await untilAborted(next(req), req.signal);
    } catch (err) {
      throw finish(err);
    }
    if (!res.stream) {
      finish(undefined);
      return res;
    }
    return { ...res, message: observed(res.message, finish) };
  };
}

/** A response stream whose end or failure is reported to `finish`. */
async function* observed<T>(
  stream: AsyncIterable<T>,
  finish: (err: unknown) => ConnectError | undefined,
): AsyncGenerator<T> {
  let ended = false;
  try {
    yield* stream;
    ended = true;
  } catch (err) {
    ended = true;
    throw finish(err);
  } finally {
    // The client stopped reading early: the call ends here, as Canceled.
    if (!ended) finish(new ConnectError("the client stopped reading the stream", Code.Canceled));
  }
  finish(undefined);
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/**
 * Settles with `p`, or rejects as soon as the call is aborted (client gone,
 * deadline passed, server out of grace period). A started snapshotter
 * operation cannot be cancelled and runs on; what this buys is that the
 * client gets a proper status (e.g. Unavailable on shutdown) instead of a
 * connection reset.
 */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

export function abortReason(signal: AbortSignal): ConnectError {
  return ConnectError.from(signal.reason ?? "call aborted", Code.Canceled);
}
