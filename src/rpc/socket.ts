/**
 * The unix socket file: created with its final mode and group before anyone
 * can reach it, in a directory no one else can write.
 *
 * The server binds in a private 0700 directory next to the final path, the
 * mode and group are set there (no other user can reach or replace that
 * path, so no symlink can redirect the chmod), and the socket is then renamed
 * into place: it appears already restricted. A stale socket of a dead daemon
 * is replaced; a live one is never stolen.
 */
import { existsSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import * as path from "node:path";

const PROBE_TIMEOUT_MS = 1000;

export interface SocketOptions {
  mode: number;
  group?: number;
}

/** Binds `server` at `socketPath` as described above; returns the socket's inode. */
export async function bindSocket(server: net.Server, socketPath: string, opts: SocketOptions): Promise<number> {
  const dir = path.dirname(socketPath);
  // Only a directory we create gets 0700; an existing one is the admin's.
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await checkDirectory(dir);
  await removeStaleSocket(socketPath);
  const priv = await fs.mkdtemp(path.join(dir, `.${path.basename(socketPath)}-`));
  const tmp = path.join(priv, "s");
  try {
    await listen(server, tmp);
    try {
      if (opts.group !== undefined) await fs.lchown(tmp, -1, opts.group);
      await fs.chmod(tmp, opts.mode);
      await fs.rename(tmp, socketPath);
    } catch (err) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      throw err;
    }
  } finally {
    await fs.rm(priv, { recursive: true, force: true });
  }
  return (await fs.lstat(socketPath)).ino;
}

/**
 * Others who can write the directory could replace or pre-create the socket
 * path: refuse it, naming the fix.
 */
async function checkDirectory(dir: string): Promise<void> {
  const st = await fs.stat(dir);
  if (!st.isDirectory()) throw new Error(`socket directory ${dir} is not a directory`);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid && st.uid !== 0) {
    throw new Error(`socket directory ${dir} is owned by uid ${st.uid}, not by this user or root; chown it or pick another address`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new Error(
      `socket directory ${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)}); ` +
        `use a directory only its owner can write (e.g. chmod go-w, or the default /run/thinsnap)`,
    );
  }
}

/**
 * A socket file left by a crashed daemon is removed -- but only after
 * checking that nobody answers on it: deleting a live server's socket would
 * silently orphan it.
 */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(socketPath);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return;
    throw err;
  }
  if (!st.isSocket()) {
    throw new Error(`${socketPath} exists and is not a socket; refusing to replace it`);
  }
  if (await answers(socketPath)) {
    throw new Error(`another server is already listening on ${socketPath}`);
  }
  await fs.rm(socketPath, { force: true });
}

/**
 * Removes the socket unless another server has replaced it meanwhile (same
 * path, different inode): that one is not ours to delete.
 */
export async function removeOwnSocket(socketPath: string, ino: number): Promise<void> {
  try {
    const st = await fs.lstat(socketPath);
    if (st.ino === ino) await fs.rm(socketPath, { force: true });
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
}

/** Something accepts connections on the unix socket now (a thinsnap serve); no file, or any error, is no. */
export function socketAccepts(socketPath: string): Promise<boolean> {
  if (!existsSync(socketPath)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * True if a daemon may be serving on the socket: for refusing work that must
 * not run beside one (unsure, e.g. a full backlog, counts as serving).
 */
export async function mayBeServing(socketPath: string): Promise<boolean> {
  if (!existsSync(socketPath)) return false;
  try {
    return await answers(socketPath);
  } catch {
    return true;
  }
}

/** True if something accepts connections on the socket (or might: timeout). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const done = (result: boolean | Error): void => {
      clearTimeout(timer);
      sock.destroy();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    // Unsure means live: refusing to start is recoverable, stealing is not.
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    sock.once("connect", () => done(true));
    sock.once("error", (err) => {
      const code = errnoCode(err);
      if (code === "ECONNREFUSED" || code === "ENOENT") done(false);
      else done(new Error(`cannot probe ${socketPath}: ${err.message}`, { cause: err }));
    });
  });
}

function listen(server: net.Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once("error", onError);
    server.listen(socketPath, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

function errnoCode(err: unknown): string | undefined {
  if (err instanceof Error && "code" in err && typeof err.code === "string") return err.code;
  return undefined;
}
