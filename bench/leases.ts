/**
 * A minimal client for containerd's leases service (Create, Delete with
 * sync), built from a descriptor at run time: `Delete{sync: true}` runs
 * containerd's garbage collector and returns when it is done, which is the only
 * way to make a Remove through containerd's snapshots service reach the
 * snapshotter synchronously (containerd's metadata layer only marks the
 * snapshot removed; its GC removes it from the snapshotter later).
 */
import { create, createFileRegistry, type DescMessage, type DescMethod, type DescMethodUnary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FieldDescriptorProto_Label, FieldDescriptorProto_Type, file_google_protobuf_empty } from "@bufbuild/protobuf/wkt";
import type { Transport } from "@connectrpc/connect";
import { grpcTransport } from "../tests/kit/client.ts";

const T = FieldDescriptorProto_Type;
const OPT = FieldDescriptorProto_Label.OPTIONAL;

const fdp = create(FileDescriptorProtoSchema, {
  name: "bench/leases.proto",
  package: "containerd.services.leases.v1",
  dependency: ["google/protobuf/empty.proto"],
  syntax: "proto3",
  messageType: [
    { name: "Lease", field: [{ name: "id", number: 1, type: T.STRING, label: OPT, jsonName: "id" }] },
    { name: "CreateRequest", field: [{ name: "id", number: 1, type: T.STRING, label: OPT, jsonName: "id" }] },
    {
      name: "CreateResponse",
      field: [{ name: "lease", number: 1, type: T.MESSAGE, typeName: ".containerd.services.leases.v1.Lease", label: OPT, jsonName: "lease" }],
    },
    {
      name: "DeleteRequest",
      field: [
        { name: "id", number: 1, type: T.STRING, label: OPT, jsonName: "id" },
        { name: "sync", number: 2, type: T.BOOL, label: OPT, jsonName: "sync" },
      ],
    },
  ],
  service: [
    {
      name: "Leases",
      method: [
        { name: "Create", inputType: ".containerd.services.leases.v1.CreateRequest", outputType: ".containerd.services.leases.v1.CreateResponse" },
        { name: "Delete", inputType: ".containerd.services.leases.v1.DeleteRequest", outputType: ".google.protobuf.Empty" },
      ],
    },
  ],
});

const registry = createFileRegistry(fdp, (name) => (name === "google/protobuf/empty.proto" ? file_google_protobuf_empty : undefined));
const service = registry.getService("containerd.services.leases.v1.Leases");
if (!service) throw new Error("leases descriptor: no service");

function isUnary(m: DescMethod | undefined): m is DescMethodUnary<DescMessage, DescMessage> {
  return m?.methodKind === "unary";
}

function method(name: string): DescMethodUnary<DescMessage, DescMessage> {
  const m = service!.methods.find((x) => x.name === name);
  if (!isUnary(m)) throw new Error(`leases descriptor: no unary ${name}`);
  return m;
}
const CREATE = method("Create");
const DELETE = method("Delete");

export class LeasesClient {
  private readonly transport: Transport;
  private seq = 0;

  constructor(socketPath: string, namespace = "default") {
    this.transport = grpcTransport(socketPath, { namespace });
  }

  async create(id: string): Promise<void> {
    await this.transport.unary(CREATE, undefined, undefined, undefined, { id } as never);
  }

  async delete(id: string, sync: boolean): Promise<void> {
    await this.transport.unary(DELETE, undefined, undefined, undefined, { id, sync } as never);
  }

  /** Runs containerd's garbage collection now and waits for it (a throw-away lease, deleted with sync). */
  async gc(): Promise<void> {
    const id = `bench-gc-${process.pid}-${++this.seq}`;
    await this.create(id);
    await this.delete(id, true);
  }
}
