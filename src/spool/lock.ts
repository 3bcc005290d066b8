/**
 * Locks that the kernel releases when their holder dies: a listening socket in Linux's abstract unix
 * namespace, named after the spool and the thing locked.
 *
 * No lock file is ever left behind, so there is no stale-lock window: a process killed with SIGKILL
 * releases every lock at that instant. Abstract sockets belong to a network namespace; every process
 * sharing a spool must share that namespace (the normal case). Acquire never throws for "held": it
 * returns null.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';

/** A held lock. */
export interface Lock {
  name: string;
  release(): Promise<void>;
}

/** The abstract socket name for a lock on something in a spool. */
function socketName(spoolDir: string, what: string): string {
  let key = spoolDir;
  try {
    const st = fs.statSync(spoolDir);
    key = `${st.dev}:${st.ino}`;
  } catch {
    /* a spool that does not exist yet is keyed by its path */
  }
  const h = createHash('sha256').update(key).digest('hex').slice(0, 24);
  return `\0ferrymail/${h}/${what}`;
}

/** Tries to take the lock once; resolves null when another process (or this one) holds it. */
export function tryLock(spoolDir: string, what: string): Promise<Lock | null> {
  const name = socketName(spoolDir, what);
  return new Promise((resolve, reject) => {
    const server = net.createServer((c) => c.destroy());
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(null);
      else reject(err);
    });
    server.listen(name, () => {
      resolve({
        name: what,
        release: () => new Promise<void>((res) => server.close(() => res())),
      });
    });
  });
}

/** Takes the lock, waiting up to timeoutMs; resolves null when it stayed held. */
export async function lock(spoolDir: string, what: string, timeoutMs: number): Promise<Lock | null> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
    const l = await tryLock(spoolDir, what);
    if (l || Date.now() >= deadline) return l;
    await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(1, deadline - Date.now()))));
  }
}
