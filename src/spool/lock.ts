/**
 * Locks that the kernel releases when their holder dies: a listening socket in Linux's abstract unix
 * namespace, named after the spool and the thing locked.
 *
 * No lock file is ever left behind, so there is no stale-lock window: a process killed with SIGKILL
 * releases every lock at that instant. Abstract sockets have no permissions, so names are keyed with a
 * secret kept in the owner-only spool (lock.key): another user cannot work out the name of a lock to
 * squat it in advance. (A name is visible in /proc/net/unix while it is held; the daemon's own lock is
 * checked against its control socket for that reason, see daemon.ts.) Abstract sockets belong to a
 * network namespace; every process sharing a spool must share that namespace (the normal case).
 * Acquire never throws for "held": it returns null.
 */
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spoolError } from '../errors.js';

/** A held lock. */
export interface Lock {
  name: string;
  release(): Promise<void>;
}

const keys = new Map<string, Buffer>();

/** The spool's lock key, created on first use (write a private file, then link it into place). */
function lockKey(spoolDir: string): Buffer {
  let key = keys.get(spoolDir);
  if (key) return key;
  const file = path.join(spoolDir, 'lock.key');
  try {
    key = readKey(file) ?? createKey(file);
  } catch (err) {
    throw spoolError(err, 'read or create the lock key');
  }
  keys.set(spoolDir, key);
  return key;
}

/** The key in file, or null when there is none (a short file from a crash counts as none). */
function readKey(file: string): Buffer | null {
  try {
    const k = fs.readFileSync(file);
    if (k.length === 32) return k;
    fs.rmSync(file, { force: true });
    return null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Creates the key durably (write, fsync, no-clobber link); a concurrent creator's key wins. */
function createKey(file: string): Buffer {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeSync(fd, randomBytes(32));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  const key = readKey(file);
  if (!key) throw Object.assign(new Error('lock key vanished'), { code: 'EIO' });
  return key;
}

/** The abstract socket name for a lock on something in a spool. */
function socketName(spoolDir: string, what: string): string {
  const h = createHmac('sha256', lockKey(spoolDir)).update(what).digest('hex').slice(0, 32);
  return `\0ferrymail/${h}`;
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
