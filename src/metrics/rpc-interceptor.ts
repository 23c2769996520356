/**
 * A Connect interceptor that counts and times every Snapshots RPC
 * (thinsnap_rpc_requests_total, thinsnap_rpc_duration_seconds). It must be
 * the outermost interceptor (first in the router's list), outside the one
 * that maps snapshotter errors to gRPC codes, so it sees the code the
 * client gets. A server-streaming call (List) is timed until its last
 * message is out.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** The gRPC code name, as grpc-go spells it ("OK", "NotFound", …). */
export function grpcCodeName(code: Code | null): string {
  return code === null ? "OK" : (Code[code] ?? `Code${code}`);
}

export interface RpcRecorder {
  rpc(method: string, code: string, seconds: number): void;
}

export function metricsInterceptor(metrics: RpcRecorder): Interceptor {
  return (next) => async (req) => {
    const t0 = performance.now();
    const method = req.method.name;
    const done = (code: Code | null): void => metrics.rpc(method, grpcCodeName(code), (performance.now() - t0) / 1000);
    let res;
    try {
      res = await next(req);
    } catch (e) {
      done(ConnectError.from(e).code);
      throw e;
    }
    if (!res.stream) {
      done(null);
      return res;
    }
    const messages = res.message;
    async function* observed() {
      let code: Code | null = null;
      try {
        yield* messages;
      } catch (e) {
        code = ConnectError.from(e).code;
        throw e;
      } finally {
        // The client going away stops the iteration early.
        if (code === null && req.signal.aborted) code = Code.Canceled;
        done(code);
      }
    }
    return { ...res, message: observed() };
  };
}
