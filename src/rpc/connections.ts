/**
 * What one peer may hold of the server: connections, their handshake and
 * idle time, and request bytes in flight (limits.ts). It sits in front of
 * Connect's adapter and sees every session and every stream.
 */
import * as http2 from "node:http2";
import type * as net from "node:net";
import { Readable } from "node:stream";
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
  /** The connection itself: destroying only the session does not always close it under Bun. */
  socket: net.Socket | undefined;
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

  /** The connection being handed to the http2 server (its "session" event fires during the hand-over). */
  private accepting: net.Socket | undefined;

  /**
   * Takes a new connection from the listener: evicts the oldest idle one at
   * the cap (or refuses this one if every connection is busy), then hands it
   * to the http2 server.
   */
  accept(socket: net.Socket, server: http2.Http2Server): void {
    if (this.peers.size >= this.limits.maxConnections && !this.evictOne()) {
      this.log.debug("connection refused: every connection is busy", { max: this.limits.maxConnections });
      socket.destroy();
      return;
    }
    this.accepting = socket;
    try {
      server.emit("connection", socket);
    } finally {
      this.accepting = undefined;
    }
  }

  /** Cuts every connection off (shutdown, after the grace period). */
  destroyAll(): void {
    for (const p of [...this.peers.values()]) this.drop(p);
  }

  /** Resolves once no call is in flight. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private onSession(session: http2.ServerHttp2Session): void {
    const socket = this.accepting;
    const peer: Peer = { session, socket, streams: 0, bodyBytes: 0, prefaced: false, timer: undefined };
    this.peers.set(session, peer);
    socket?.once("close", () => {
      clearTimeout(peer.timer);
      this.peers.delete(session);
    });
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
    peer.socket?.destroy();
  }

  private arm(peer: Peer, ms: number, why: string): void {
    clearTimeout(peer.timer);
    peer.timer = setTimeout(() => {
      this.log.debug("closing connection", { reason: why, after_ms: ms });
      if (peer.prefaced) {
        // GOAWAY: a gRPC client reconnects on its next call.
        peer.session.close();
        peer.timer = setTimeout(() => this.drop(peer), ms);
        peer.timer.unref?.();
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
    if (peer) {
      if (peer.streams++ === 0) clearTimeout(peer.timer);
      peer.prefaced = true;
    }
    this.inFlight++;
    const call = new Call(this, peer, req, performance.now() + this.limits.requestBodyTimeoutMs);
    this.receiving.add(call);
    this.sweepSoon();
    req.once("end", () => this.receiving.delete(call));
    // The call is over when its answer is complete (res.end: Bun reports
    // "finish" of a half-closed stream only when the peer closes it) or the
    // stream is cut off ("close").
    const end = res.end;
    res.end = ((...args: unknown[]) => {
      const bodyPending = this.receiving.has(call);
      this.finish(call);
      const out: unknown = Reflect.apply(end, res, args);
      // Answered before the peer finished sending (refused, timed out):
      // discard what it sends -- unread data would never be acknowledged
      // and would stall every other stream of the connection (the window is
      // per connection too) -- and reset the stream (NO_ERROR, after the
      // complete response) so it stops.
      if (bodyPending) {
        req.resume();
        setImmediate(() => req.stream.close(http2.constants.NGHTTP2_NO_ERROR));
      }
      return out;
    }) as typeof res.end;
    res.once("close", () => this.finish(call));
    Object.defineProperty(req, Symbol.asyncIterator, { value: () => call.metered(), configurable: true });
  }

  /** Calls whose request body has not ended, for the body timeout. */
  private readonly receiving = new Set<Call>();
  private sweeper: ReturnType<typeof setInterval> | undefined;

  /** One timer for all bodies (not one per call): checks deadlines a few times per timeout. */
  private sweepSoon(): void {
    if (this.sweeper) return;
    const every = Math.max(10, Math.floor(this.limits.requestBodyTimeoutMs / 8));
    this.sweeper = setInterval(() => {
      const now = performance.now();
      for (const c of this.receiving) {
        if (c.deadline > now) continue;
        this.receiving.delete(c);
        c.expire(this.limits.requestBodyTimeoutMs);
      }
      if (this.receiving.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, every);
    this.sweeper.unref?.();
  }

  /** @internal Called once per call when it is answered or cut off. */
  finish(call: Call): void {
    if (call.finished) return;
    call.finished = true;
    this.receiving.delete(call);
    call.releaseBytes();
    this.inFlight--;
    const peer = call.peer;
    if (peer && --peer.streams === 0 && this.peers.has(peer.session)) this.arm(peer, this.limits.idleTimeoutMs, "idle");
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /** @internal The per-connection budget, for Call. */
  get connectionBodyBytes(): number {
    return this.limits.connectionBodyBytes;
  }
}

/** One request stream: its charge against its connection's budget and its body's deadline. */
class Call {
  finished = false;
  private charged = 0;
  private expired: ConnectError | undefined;
  /** Envelope parser: bytes still to skip of the current message, and a partly received length prefix. */
  private skip = 0;
  private readonly head = new Uint8Array(GRPC_HEADER_BYTES);
  private headFill = 0;

  constructor(
    private readonly guard: ConnectionGuard,
    readonly peer: Peer | undefined,
    private readonly req: http2.Http2ServerRequest,
    readonly deadline: number,
  ) {}

  releaseBytes(): void {
    if (this.peer) this.peer.bodyBytes -= this.charged;
    this.charged = 0;
  }

  /** The body did not arrive in time: fail the read Connect is waiting on. */
  expire(ms: number): void {
    // The body is abandoned: its bytes stop counting now, not when the peer
    // gets round to closing the stream.
    this.releaseBytes();
    this.expired = new ConnectError(
      `request body not received within ${ms} ms (REQUEST_BODY_TIMEOUT_MS)`,
      Code.DeadlineExceeded,
    );
    // Fails the read Connect is waiting on.
    this.wake?.(this.expired);
  }

  /** Rejects the pending read (set while one is pending). */
  private wake: ((err: ConnectError) => void) | undefined;

  async *metered(): AsyncGenerator<Uint8Array> {
    const it = Readable.prototype[Symbol.asyncIterator].call(this.req);
    for (;;) {
      if (this.expired) throw this.expired;
      const r = await new Promise<IteratorResult<unknown>>((resolve, reject) => {
        this.wake = reject;
        it.next().then(resolve, reject);
      });
      this.wake = undefined;
      if (r.done) return;
      const chunk = r.value as Uint8Array;
      this.meter(chunk);
      yield chunk;
    }
  }

  private meter(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        continue;
      }
      this.head[this.headFill++] = chunk[i++]!;
      if (this.headFill === GRPC_HEADER_BYTES) {
        this.headFill = 0;
        this.skip = ((this.head[1]! << 24) >>> 0) + (this.head[2]! << 16) + (this.head[3]! << 8) + this.head[4]!;
        this.charge(this.skip + GRPC_HEADER_BYTES);
      }
    }
  }

  private charge(n: number): void {
    const peer = this.peer;
    if (!peer) return;
    const limit = this.guard.connectionBodyBytes;
    if (peer.bodyBytes + n > limit) {
      throw new ConnectError(
        `request messages in flight on this connection would reach ${peer.bodyBytes + n} bytes, ` +
          `more than the limit of ${limit} (CONNECTION_BODY_BYTES)`,
        Code.ResourceExhausted,
      );
    }
    peer.bodyBytes += n;
    this.charged += n;
  }
}
