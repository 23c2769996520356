/**
 * Limits of the RPC server: messages, HTTP/2 connections and streams, and
 * the time a peer may take. Key and label caps are in
 * src/snapshotter/labels.ts; every request within them fits MAX_REQUEST_BYTES.
 *
 * Memory held for request bodies is bounded by
 * MAX_CONNECTIONS x CONNECTION_BODY_BYTES (264 MiB), whatever peers send.
 */

/**
 * Largest request message accepted (gRPC readMaxBytes). A Prepare, Commit or
 * Update at the key and label caps (4 KiB keys, 256 KiB of labels, even as
 * many tiny labels each named in an Update's mask) needs well under this,
 * and an over-cap key of 1 MiB still reaches the InvalidArgument check;
 * larger is ResourceExhausted before it is buffered.
 */
export const MAX_REQUEST_BYTES = 2 * 1024 * 1024;

/** Largest reply message (containerd's proxy client accepts 16 MiB). */
export const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/** List replies: containerd's service sends blocks of 100 Infos… */
export const LIST_BATCH_SIZE = 100;
/** …and a block is also cut at this many bytes, far under MAX_REPLY_BYTES. */
export const LIST_BATCH_BYTES = 4 * 1024 * 1024;

/**
 * Open connections. containerd keeps one; load tests use up to 64. At the cap
 * a new connection evicts the oldest one with no call in flight (idle, or one
 * that never sent its preface), so a flood of idle connections cannot lock
 * out a real client; if every connection is busy, the new one is closed.
 */
export const MAX_CONNECTIONS = 128;

/** Concurrent streams (calls) per connection, announced in SETTINGS; grpc-go queues beyond it. */
export const MAX_STREAMS_PER_CONNECTION = 100;

/**
 * Request bytes in flight on one connection (counted from each message's
 * announced length, before it is buffered): one message of the largest size
 * plus room for small calls beside it. A call that would exceed it is
 * ResourceExhausted; one connection cannot take memory from the others.
 */
export const CONNECTION_BODY_BYTES = MAX_REQUEST_BYTES + 64 * 1024;

/** A request's body must arrive within this after its headers (slow senders hold memory). */
export const REQUEST_BODY_TIMEOUT_MS = 10_000;

/** A connection must send the HTTP/2 preface and SETTINGS within this. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

/** A connection with no call in flight for this long is closed (GOAWAY; grpc-go reconnects on its next call). */
export const IDLE_TIMEOUT_MS = 5 * 60_000;

/** Header block size (SETTINGS_MAX_HEADER_LIST_SIZE); gRPC metadata is small. */
export const MAX_HEADER_LIST_BYTES = 16 * 1024;

/** Header fields per request. */
export const MAX_HEADER_PAIRS = 64;

/** nghttp2's own buffers per connection (maxSessionMemory, MiB). */
export const SESSION_MEMORY_MIB = 4;

/** After the grace period: time for the Unavailable answers to go out. */
export const SHUTDOWN_FLUSH_MS = 250;

/** After the flush: sessions are destroyed and close() returns within this, whatever the peers do. */
export const SHUTDOWN_FORCE_MS = 1_000;
