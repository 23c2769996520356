/**
 * packaging/kubernetes/thinsnap-installer.yaml: the DaemonSet the issue asks
 * for (privileged, hostPID, the host's root at /host, install on start and
 * uninstall on removal, a node label, no RBAC), naming the image
 * `npm run image` builds.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { IMAGE_NAME } from "../../packaging/image.ts";

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
}

const docs = Bun.YAML.parse(readFileSync(join(import.meta.dir, "../../packaging/kubernetes/thinsnap-installer.yaml"), "utf8")) as K8sObject[];

test("one Namespace and one DaemonSet, nothing that needs RBAC", () => {
  expect(docs.map((d) => d.kind)).toEqual(["Namespace", "DaemonSet"]);
});

test("the DaemonSet installs with --host-root /host and uninstalls in preStop", () => {
  const ds = docs[1]!;
  const spec = (ds.spec as { template: { spec: Record<string, unknown> } }).template.spec as {
    nodeSelector: Record<string, string>;
    hostPID: boolean;
    automountServiceAccountToken: boolean;
    containers: {
      image: string;
      args: string[];
      securityContext: { privileged: boolean };
      lifecycle: { preStop: { exec: { command: string[] } } };
      volumeMounts: { name: string; mountPath: string }[];
    }[];
    volumes: { name: string; hostPath: { path: string } }[];
  };
  expect(spec.nodeSelector).toEqual({ "thinsnap.io/snapshotter": "true" });
  expect(spec.hostPID).toBe(true);
  expect(spec.automountServiceAccountToken).toBe(false);
  const c = spec.containers[0]!;
  expect(c.image).toBe(IMAGE_NAME);
  expect(c.securityContext.privileged).toBe(true);
  expect(c.args.join("\n")).toContain("thinsnap install --host-root /host");
  expect(c.lifecycle.preStop.exec.command.join(" ")).toContain("thinsnap uninstall --host-root /host");
  expect(c.volumeMounts).toContainEqual(expect.objectContaining({ name: "host", mountPath: "/host" }));
  expect(spec.volumes).toContainEqual(expect.objectContaining({ name: "host", hostPath: expect.objectContaining({ path: "/" }) }));
});
