/** Hostile bytes on the wire: garbage, truncated and mistyped protobuf, envelope tricks, unknown methods and content types. */
import { expect, test } from "bun:test";
import { Code } from "../../kit/client.ts";
import { ANY_SPECIFIC, rnd, type Hostile } from "./harness.ts";
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { envelope, ProtoWriter, rawGrpcCall } from "../../kit/wire.ts";
import {
  CleanupRequestSchema,
  CommitSnapshotRequestSchema,
  ListSnapshotsRequestSchema,
  MountsRequestSchema,
  PrepareSnapshotRequestSchema,
  RemoveSnapshotRequestSchema,
  StatSnapshotRequestSchema,
  UpdateSnapshotRequestSchema,
  UsageRequestSchema,
  ViewSnapshotRequestSchema,
} from "../../../src/rpc/gen/containerd/services/snapshots/v1/snapshots_pb.ts";

const METHODS: [string, DescMessage][] = [
  ["Prepare", PrepareSnapshotRequestSchema],
  ["View", ViewSnapshotRequestSchema],
  ["Mounts", MountsRequestSchema],
  ["Commit", CommitSnapshotRequestSchema],
  ["Remove", RemoveSnapshotRequestSchema],
  ["Stat", StatSnapshotRequestSchema],
  ["Update", UpdateSnapshotRequestSchema],
  ["List", ListSnapshotsRequestSchema],
  ["Usage", UsageRequestSchema],
  ["Cleanup", CleanupRequestSchema],
];

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(Math.random() * 256);
  return b;
}
export function wireTests(h: Hostile): void {
  test(
    "garbage, truncated and mistyped protobuf bodies and envelope tricks",
    async () => {
      const { d, cfg, counter, finding, note, raw } = h;
      for (const [method, schema] of METHODS) {
        // random bytes: may even decode (then any specific code is fine)
        for (let i = 0; i < 20; i++) await raw("random", method, envelope(randomBytes(rnd(64))), ANY_SPECIFIC);
        // a valid message cut short
        const full = toBinary(
          schema,
          create(schema, {
            key: "h-c-trunc",
            parent: "h-c",
            name: "n",
            labels: { a: "b", long: "x".repeat(300) },
            filters: ['name=="x"'],
            info: { name: "h-act", labels: { q: "r" } },
          } as never),
        );
        for (let i = 0; i < 8 && full.length > 1; i++) {
          const cut = 1 + rnd(full.length - 1);
          await raw("truncated", method, envelope(full.subarray(0, cut)), ANY_SPECIFIC);
        }
        // known fields with the wrong wire type
        const wrong = [
          new ProtoWriter().uint(2, 12345).finish(), // key as varint
          new ProtoWriter().fixed32(2, 7).finish(),
          new ProtoWriter().fixed64(3, 1n).finish(),
          new ProtoWriter().bytes(1, "ok").uint(4, 1).finish(), // labels (map) as varint
          new ProtoWriter().mapEntry(4, "k", "v").raw([0x22, 0x03, 0x08, 0x01, 0x10]).finish(), // map entry with a varint value, truncated
          new ProtoWriter().tag(2, 3).finish(), // deprecated start-group
          new ProtoWriter().tag(2, 7).finish(), // invalid wire type 7
          new ProtoWriter().bytes(2, Uint8Array.of(0xc3, 0x28)).finish(), // invalid UTF-8 key
          new ProtoWriter().uint(536870911, 1).finish(), // highest field number
          new ProtoWriter().raw([0x00]).finish(), // field number 0
        ];
        for (const w of wrong) await raw("wrong type", method, envelope(w), ANY_SPECIFIC);
        // envelope tricks
        await raw("short envelope", method, envelope(Uint8Array.of(0x12, 0x01, 0x61), 0, 100), [Code.InvalidArgument]);
        await raw("truncated header", method, Uint8Array.of(0, 0, 0), [Code.InvalidArgument]);
        await raw("compressed, no encoding", method, envelope(Uint8Array.of(1, 2, 3), 1), [Code.InvalidArgument]);
        await raw("bad gzip", method, envelope(Uint8Array.of(1, 2, 3), 1), [Code.InvalidArgument], { "grpc-encoding": "gzip" });
        await raw("unknown encoding", method, envelope(Uint8Array.of(1, 2, 3), 1), [Code.Unimplemented, Code.InvalidArgument], {
          "grpc-encoding": "snappy-xyz",
        });
        await raw("two messages in a unary call", method, [envelope(new Uint8Array()), envelope(new Uint8Array())], [
          Code.InvalidArgument,
          Code.Unimplemented,
        ]);
        // reserved flag bits: Connect ignores them and decodes the (empty) message
        await raw("flags 0x80", method, envelope(new Uint8Array(), 0x80), ANY_SPECIFIC);
        await raw("no body", method, new Uint8Array(), [Code.InvalidArgument, Code.Unimplemented]);
      }
      await raw("unknown method", "Frobnicate", envelope(new Uint8Array()), [Code.Unimplemented]);
      await raw("unknown service", "x", envelope(new Uint8Array()), [Code.Unimplemented], {});
      const rr = await rawGrpcCall(cfg.address, "Stat", envelope(new Uint8Array()), { path: "/other.Service/Stat" });
      const rrCode = rr.grpcStatus ?? (rr.httpStatus === 404 ? Code.Unimplemented : Code.Unknown);
      note("raw-path unknown service", rrCode as Code, [Code.Unimplemented]);
      const ct = await rawGrpcCall(cfg.address, "Stat", envelope(new Uint8Array()), { headers: { "content-type": "text/plain" } });
      counter.add("raw-content-type", ct.grpcStatus);
      // not gRPC at all: HTTP 415 is the gRPC spec's answer
      if (ct.httpStatus !== 415 && ct.grpcStatus === undefined) finding(`text/plain request: http ${ct.httpStatus}`);
      expect(d.running).toBe(true);
    },
    600_000,
  );
}
