/**
 * What one peer may hold of the server: connections, their handshake and
 * idle time, and request bytes in flight (limits.ts). It sits in front of
 * Connect's adapter and sees every session and every stream.
 */
import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RpcLogger } from "./rpc-log.ts";

export interface GuardLimits {
  maxConnections: number;
  connectionBodyBytes: number;
  requestBodyTimeoutMs: number;
  handshakeTimeoutMs: number;
  idleTimeoutMs: number;
}

interface Peer {
  session: http2.ServerHttp2Session;
  /** Streams (calls) in flight. */
  streams: number;
  /** Announced request bytes of the calls in flight. */
  bodyBytes: number;
  prefaced: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const GRPC_HEADER_BYTES = 5;

export class ConnectionGuard {
  /** In arrival order: the first idle one is the oldest. */
  private readonly peers = new Map<http2.ServerHttp2Session, Peer>();
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly limits: GuardLimits,
    private readonly log: RpcLogger,
  ) {}

  get sessions(): IterableIterator<http2.ServerHttp2Session> {
    return this.peers.keys();
  }

  /** Calls in flight on all connections. */
  get calls(): number {
    return this.inFlight;
  }

  attach(server: http2.Http2Server): void {
    server.on("session", (session) => this.onSession(session));
  }

  /** Resolves once no call is in flight. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onSession(session: http2.ServerHttp2Session): void {
    if (this.peers.size >= this.limits.maxConnections && !this.evictOne()) {
      this.log.debug("connection refused: every connection is busy", { max: this.limits.maxConnections });
      session.destroy();
      return;
    }
    const peer: Peer = { session, streams: 0, bodyBytes: 0, prefaced: false, timer: undefined };
    this.peers.set(session, peer);
    this.arm(peer, this.limits.handshakeTimeoutMs, "no HTTP/2 preface");
    session.once("remoteSettings", () => {
      peer.prefaced = true;
      if (peer.streams === 0) this.arm(peer, this.limits.idleTimeoutMs, "idle");
    });
    session.once("close", () => {
      clearTimeout(peer.timer);
      this.peers.delete(session);
    });
  }

  /** Closes the oldest connection with no call in flight (unprefaced first); false if there is none. */
  private evictOne(): boolean {
    let victim: Peer | undefined;
    for (const p of this.peers.values()) {
      if (p.streams > 0) continue;
      if (!p.prefaced) {
        victim = p;
        break;
      }
      victim ??= p;
    }
    if (!victim) return false;
    this.log.debug("connection limit reached: closing the oldest idle connection", { max: this.limits.maxConnections });
    this.drop(victim);
    return true;
  }

  private drop(peer: Peer): void {
    clearTimeout(peer.timer);
    this.peers.delete(peer.session);
    peer.session.destroy();
  }

  private arm(peer: Peer, ms: number, why: string): void {
    clearTimeout(peer.timer);
    peer.timer = setTimeout(() => {
      this.log.debug("closing connection", { reason: why, after_ms: ms });
      if (peer.prefaced) {
        // GOAWAY: a gRPC client reconnects on its next call.
        peer.session.close();
        peer.timer = setTimeout(() => this.drop(peer), ms);
      } else {
        this.drop(peer);
      }
    }, ms);
    peer.timer.unref?.();
  }

  /**
   * Registers a call: counts it on its connection, bounds the time its body
   * may take, and charges each request message's announced length to the
   * connection's budget before Connect allocates it (Connect allocates a
   * message's full announced size as soon as it reads the length prefix).
   * Over budget, reading the body fails with ResourceExhausted.
   */
  admit(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void {
    const peer = this.peers.get(req.stream.session as http2.ServerHttp2Session);
    let charged = 0;
    if (peer) {
      if (peer.streams++ === 0) clearTimeout(peer.timer);
      peer.prefaced = true;
    }
    this.inFlight++;
    let done = false;
    const releaseBytes = (): void => {
      if (peer) peer.bodyBytes -= charged;
      charged = 0;
    };
    const release = (): void => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      this.inFlight--;
      releaseBytes();
      if (peer) {
        if (--peer.streams === 0 && this.peers.has(peer.session)) this.arm(peer, this.limits.idleTimeoutMs, "idle");
      }
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    };
    res.once("close", release);
    req.stream.once("close", release);

    const limits = this.limits;
    let timedOut: (() => void) | undefined;
    const expired = new Promise<never>((_, reject) => {
      timedOut = () => {
        // The body is abandoned: its bytes stop counting now, not when the
        // peer gets round to closing the stream.
        releaseBytes();
        reject(
          new ConnectError(
            `request body not received within ${limits.requestBodyTimeoutMs} ms (REQUEST_BODY_TIMEOUT_MS)`,
            Code.DeadlineExceeded,
          ),
        );
      };
    });
    expired.catch(() => {});
    const deadline = setTimeout(() => timedOut?.(), limits.requestBodyTimeoutMs);
    let bodyEnded = false;
    req.once("end", () => {
      bodyEnded = true;
      clearTimeout(deadline);
    });
    // Answered: the call holds nothing more. If the peer has not finished
    // sending (refused, timed out), reset the stream (NO_ERROR, after the
    // complete response) so it stops; unread data is bounded by the stream's
    // flow-control window meanwhile.
    res.once("finish", () => {
      release();
      if (!bodyEnded) setImmediate(() => req.stream.close(http2.constants.NGHTTP2_NO_ERROR));
    });

    const inner = req[Symbol.asyncIterator].bind(req);
    // Envelope parser state: bytes still to skip of the current message, and
    // a partly received 5-byte length prefix.
    let skip = 0;
    const head = new Uint8Array(GRPC_HEADER_BYTES);
    let headFill = 0;
    const charge = (n: number): void => {
      if (!peer) return;
      if (peer.bodyBytes + n > limits.connectionBodyBytes) {
        throw new ConnectError(
          `request messages in flight on this connection would reach ${peer.bodyBytes + n} bytes, ` +
            `more than the limit of ${limits.connectionBodyBytes} (CONNECTION_BODY_BYTES)`,
          Code.ResourceExhausted,
        );
      }
      peer.bodyBytes += n;
      charged += n;
    };
    const meter = (chunk: Uint8Array): void => {
      let i = 0;
      while (i < chunk.length) {
        if (skip > 0) {
          const n = Math.min(skip, chunk.length - i);
          skip -= n;
          i += n;
          continue;
        }
        head[headFill++] = chunk[i++]!;
        if (headFill === GRPC_HEADER_BYTES) {
          headFill = 0;
          skip = new DataView(head.buffer).getUint32(1);
          charge(skip + GRPC_HEADER_BYTES);
        }
      }
    };
    async function* metered(): AsyncGenerator<Uint8Array> {
      const it = inner();
      for (;;) {
        const r = await Promise.race([it.next(), expired]);
        if (r.done) return;
        const chunk = r.value as Uint8Array;
        meter(chunk);
        yield chunk;
      }
    }
    Object.defineProperty(req, Symbol.asyncIterator, { value: metered, configurable: true });
  }
}
