/** sd_notify over a real unix datagram socket (python3 plays systemd's end). */
import { expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
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
  const out = join(dir, "got");
  const py = Bun.spawn([
    "python3",
    "-c",
    "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\ns.settimeout(10)\nopen(sys.argv[2],'w').write(s.recv(100).decode())",
    sock,
    out,
  ]);
  for (let i = 0; i < 200 && !existsSync(sock); i++) await Bun.sleep(10); // bound
  expect(sdNotify("READY=1", { NOTIFY_SOCKET: sock })).toBe(true);
  expect(await py.exited).toBe(0);
  expect(readFileSync(out, "utf8")).toBe("READY=1");
  rmSync(dir, { recursive: true, force: true });
});
