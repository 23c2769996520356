/** sd_notify over a real unix datagram socket (python3 plays systemd's end). */
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sdNotify, sockaddrUn } from "../../src/sys/sd-notify.ts";

const hasPython = Bun.which("python3") !== null;

test("sockaddr_un for a path and an abstract name", () => {
  const p = sockaddrUn("/run/systemd/notify");
  expect(p.addr.readUInt16LE(0)).toBe(1);
  expect(p.len).toBe(2 + "/run/systemd/notify".length + 1);
  const a = sockaddrUn("@abc");
  expect(a.addr[2]).toBe(0);
  expect(a.addr.toString("utf8", 3, 6)).toBe("abc");
  expect(a.len).toBe(2 + 4);
});

test("no NOTIFY_SOCKET: nothing is sent", () => {
  expect(sdNotify("READY=1", {})).toBe(false);
});

test.skipIf(!hasPython)("READY=1 reaches the notify socket", async () => {
  const dir = mkdtempSync(join(tmpdir(), "thinsnap-notify-"));
  const sock = join(dir, "notify");
  const py = Bun.spawn(
    [
      "python3",
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('ready',flush=True)\ns.settimeout(10)\nprint(s.recv(100).decode(),flush=True)",
      sock,
    ],
    { stdout: "pipe" },
  );
  const reader = py.stdout.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  expect(first.trim()).toBe("ready");
  expect(sdNotify("READY=1", { NOTIFY_SOCKET: sock })).toBe(true);
  let got = "";
  while (!got.includes("\n")) {
    const r = await reader.read();
    if (r.done) break;
    got += new TextDecoder().decode(r.value);
  }
  expect(got.trim()).toBe("READY=1");
  await py.exited;
  rmSync(dir, { recursive: true, force: true });
});
