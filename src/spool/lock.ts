/**
 * Locks that only the spool's owner can take and that the kernel releases when their holder dies.
 *
 * A lock is a directory SPOOL/lock/NAME holding one listening unix socket, s.PID.RAND, bound by the
 * holder: a hard link, under that name of its own, to the one socket the process listens on for the
 * spool (itself held as the lock proc.PID.RAND), or, where links cannot be made, a socket of its own. It
 * is taken by preparing such a directory under tmp/ and renaming it onto lock/NAME: rename replaces a missing or empty directory and fails on one that is not empty, so at most
 * one holder's directory is in place at any time. Everything lives inside the spool's owner-only (0700)
 * directories, so no other user can see, take or squat a lock.
 *
 * A directory holding a link to the process socket is used again: released, it is renamed back into
 * tmp/ (its socket's name, s.PID.RAND, is only ever taken again by the same process, so the rules
 * below still hold), and the next lock is one rename in and one rename out.
 *
 * A holder killed with SIGKILL leaves its directory behind, but the socket in it no longer accepts
 * connections (ECONNREFUSED): such a stale lock is recovered by removing that one socket file, by its own
 * unique name, and then the directory, which rmdir removes only while empty. A recoverer therefore never
 * removes a newer holder's socket, and a newer holder's directory is never removed (it is not empty).
 * The socket is reached through /proc/self/fd when its path is too long for a unix socket address.
 *
 * Acquire never throws for "held": it returns null. Other failures are FerryError (spool-*).
 */
import { randomBytes } from '../random.js';
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { spoolError } from '../errors.js';
import { netModule } from '../lazy-node.js';

/** A held lock. */
export interface Lock {
  name: string;
  release(): Promise<void>;
}

/** Why a lock could not be taken: who holds it (the process id in its socket's name). */
export interface Holder {
  pid: number;
}

/** Locks this process holds, by directory: a second try from the same process is "held" at once. */
const mine = new Set<string>();

/** The longest path a unix socket address takes (sun_path, less its final NUL). */
const SUN_PATH_MAX = 107;

/** The directory name of a lock on `what` (msg/ID becomes msg.ID). */
function lockDir(spoolDir: string, what: string): string {
  if (!/^[A-Za-z0-9._/-]{1,64}$/.test(what) || what.includes('..'))
    throw new Error(`bad lock name ${JSON.stringify(what)}`);
  return path.join(spoolDir, 'lock', what.replace(/\//g, '.'));
}

/** Runs fn with a socket path for dir/name short enough to bind or connect. */
function withSocketPath<T>(dir: string, name: string, fn: (p: string) => T): T {
  const full = path.join(dir, name);
  if (Buffer.byteLength(full) <= SUN_PATH_MAX) return fn(full);
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    return fn(`/proc/self/fd/${fd}/${name}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Listens on a new socket in dir; resolves with the server once it accepts. */
function listenIn(dir: string, name: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = netModule().createServer((c) => c.destroy());
    server.unref();
    server.once('error', reject);
    withSocketPath(dir, name, (p) => server.listen(p, () => resolve(server)));
  });
}

/** Whether a socket file accepts connections: live, stale (refused), or gone. */
function probe(dir: string, name: string): Promise<'live' | 'stale' | 'gone'> {
  return new Promise((resolve) => {
    const sock = withSocketPath(dir, name, (p) => netModule().connect(p));
    const done = (v: 'live' | 'stale' | 'gone'): void => {
      sock.destroy();
      resolve(v);
    };
    sock.once('connect', () => done('live'));
    sock.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'ECONNREFUSED' ? 'stale' : err.code === 'ENOENT' ? 'gone' : 'live'),
    );
  });
}

/** The entries of a directory, or [] when it is gone. */
function entries(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return [];
    throw err;
  }
}

/** Looks at a lock in place: its live holder, or null after removing what a dead holder left. */
async function inspect(dir: string): Promise<Holder | null> {
  for (const name of entries(dir)) {
    const state = await probe(dir, name);
    if (state === 'live') return { pid: Number(name.split('.')[1]) || 0 };
    // this exact name belongs to one dead holder: removing it can never touch a newer holder's socket
    if (state === 'stale') fs.rmSync(path.join(dir, name), { force: true });
  }
  try {
    fs.rmdirSync(dir); // only while empty: a newer holder's directory stays
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
  }
  return null;
}

/** A name no other lock taken anywhere has: this process's id, a random part drawn once, a counter. */
let counter = 0;
const processPart = randomBytes(6).toString('hex');
function uniqueTag(): string {
  return `${process.pid}.${processPart}${(counter++).toString(36)}`;
}

/** A directory prepared under tmp/ with the holder's socket in it; server: a socket of its own. */
interface Prepared {
  dir: string;
  sock: string;
  server?: net.Server;
}

/** Makes a directory tmp/lock.TAG and puts the socket s.TAG in it with `put`; the directory is removed
 * again when that fails. The directory calls here and in install and release are synchronous: each is
 * one quick metadata call, cheaper on the event loop than a trip through the thread pool. */
async function prepareDir<T>(
  spoolDir: string,
  put: (dir: string, sock: string) => T | Promise<T>,
): Promise<{ dir: string; sock: string } & T> {
  const tag = uniqueTag();
  const dir = path.join(spoolDir, 'tmp', `lock.${tag}`);
  fs.mkdirSync(dir, { mode: 0o700 });
  const sock = `s.${tag}`;
  try {
    return { dir, sock, ...(await put(dir, sock)) };
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Prepares a directory with a listening socket of its own under tmp/. */
function prepareOwn(spoolDir: string): Promise<Prepared & { server: net.Server }> {
  return prepareDir(spoolDir, async (dir, sock) => ({ server: await listenIn(dir, sock) }));
}

/** This process's socket per spool, made once and held as a lock of its own (lock/proc.PID.RAND). */
const processSockets = new Map<string, Promise<string>>();

/** The path of this process's listening socket in a spool (made on first use). */
function processSocket(spoolDir: string): Promise<string> {
  let p = processSockets.get(spoolDir);
  if (!p) {
    p = (async () => {
      const own = await prepareOwn(spoolDir);
      const name = `proc.${own.sock.slice(2)}`;
      const target = lockDir(spoolDir, name);
      if (!(await install(own.dir, target))) throw new Error(`${target} exists`);
      mine.add(target);
      const file = path.join(target, own.sock);
      // gone with the process when it ends normally (a killed one's is swept by the next queue run)
      process.once('exit', () => {
        try {
          fs.rmSync(file, { force: true });
          fs.rmdirSync(target);
        } catch {
          /* already gone, or a lock left in it */
        }
      });
      return file;
    })();
    p.catch(() => processSockets.delete(spoolDir));
    processSockets.set(spoolDir, p);
  }
  return p;
}

/** Released directories with a link to this process's socket, ready for its next lock, by spool. */
const spare = new Map<string, Prepared[]>();
/** Most spare directories kept per spool (as many as locks are held at once, at most). */
const SPARE_MAX = 256;

process.once('exit', () => {
  for (const list of spare.values()) for (const p of list) fs.rmSync(p.dir, { recursive: true, force: true });
});

/**
 * Prepares a directory under tmp/ holding a new hard link, under a name of its own, to this process's
 * socket: a lock costs a mkdir, a link and a rename, not a socket (the kernel still refuses connections
 * to it the moment the process dies), and a spare directory only the rename. Where links cannot be
 * made, the directory gets a socket of its own.
 */
async function prepare(spoolDir: string): Promise<Prepared> {
  const list = spare.get(spoolDir);
  for (let p = list?.pop(); p; p = list?.pop()) if (fs.existsSync(p.dir)) return p;
  for (let i = 0; i < 2; i++) {
    let base: string;
    try {
      base = await processSocket(spoolDir);
    } catch {
      break;
    }
    try {
      return await prepareDir(spoolDir, (dir, sock) => {
        fs.linkSync(base, path.join(dir, sock));
        return {};
      });
    } catch (err) {
      // the process socket was removed under us (a spool made again): make it again, once
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') break;
      processSockets.delete(spoolDir);
    }
  }
  return prepareOwn(spoolDir);
}

/** Keeps a directory with a link to the process socket for the next lock (or removes it). */
function keepSpare(spoolDir: string, p: Prepared): void {
  let list = spare.get(spoolDir);
  if (!list) spare.set(spoolDir, (list = []));
  if (list.length < SPARE_MAX) list.push(p);
  else fs.rmSync(p.dir, { recursive: true, force: true });
}

/** Moves a prepared directory onto the lock's place; false when a holder's directory is there. */
async function install(prepared: string, target: string): Promise<boolean> {
  try {
    fs.renameSync(prepared, target);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw err;
  }
}

/** The folders lock/ and tmp/ of a spool, made once per process and spool. */
const dirsMade = new Set<string>();

/** Makes lock/ and tmp/ when this process has not seen them yet. */
async function ensureDirs(spoolDir: string, target: string): Promise<void> {
  const lockBase = path.dirname(target);
  if (dirsMade.has(lockBase) && fs.existsSync(lockBase)) return;
  // once per process and spool: made directly (node:fs/promises is not loaded at the daemon's start)
  for (const d of [lockBase, path.join(spoolDir, 'tmp')]) fs.mkdirSync(d, { mode: 0o700, recursive: true });
  dirsMade.add(lockBase);
}

/** Tries to take the lock once; resolves null when another process (or this one) holds it. */
export async function tryLock(spoolDir: string, what: string): Promise<Lock | null> {
  const r = await tryLockHolder(spoolDir, what);
  return 'release' in r ? r : null;
}

/** tryLock, saying who holds the lock when it is taken. */
export async function tryLockHolder(spoolDir: string, what: string): Promise<Lock | Holder> {
  const target = lockDir(spoolDir, what);
  if (mine.has(target)) return { pid: process.pid };
  let p: Awaited<ReturnType<typeof prepare>>;
  try {
    await ensureDirs(spoolDir, target);
    p = await prepare(spoolDir);
  } catch (err) {
    throw spoolError(err, `take the ${what} lock`);
  }
  try {
    for (let i = 0; i < 5; i++) {
      if (mine.has(target)) break;
      if (await install(p.dir, target)) return held(spoolDir, what, target, p);
      const holder = await inspect(target);
      if (holder) {
        await close(spoolDir, p);
        return holder;
      }
    }
    await close(spoolDir, p);
    return { pid: 0 };
  } catch (err) {
    await close(spoolDir, p);
    throw spoolError(err, `take the ${what} lock`);
  }
}

/** Gives up a prepared directory that was not installed (one linked to the process socket is kept). */
async function close(spoolDir: string, p: Prepared): Promise<void> {
  if (!p.server) return keepSpare(spoolDir, p);
  await new Promise<void>((r) => p.server!.close(() => r()));
  fs.rmSync(p.dir, { recursive: true, force: true });
}

/** The lock as held: release moves a directory linked to the process socket back to tmp/ for the next
 * lock; otherwise (or when that fails) it removes the socket file, then the directory (only while empty). */
function held(spoolDir: string, what: string, target: string, p: Prepared): Lock {
  mine.add(target);
  let released = false;
  return {
    name: what,
    release: async () => {
      if (released) return;
      released = true;
      mine.delete(target);
      if (!p.server) {
        try {
          fs.renameSync(target, p.dir);
          return keepSpare(spoolDir, p);
        } catch {
          /* tmp/ is gone (a spool made again): removed below */
        }
      }
      try {
        fs.unlinkSync(path.join(target, p.sock));
      } catch {
        /* removed already (a spool made again) */
      }
      try {
        fs.rmdirSync(target);
      } catch {
        /* a newer holder moved in already, or it is gone */
      }
      if (p.server) await new Promise<void>((r) => p.server!.close(() => r()));
    },
  };
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

/** Removes the locks dead holders left under SPOOL/lock (live ones stay); returns how many. */
export async function sweepLocks(spoolDir: string): Promise<number> {
  const base = path.join(spoolDir, 'lock');
  let n = 0;
  for (const name of entries(base)) {
    const dir = path.join(base, name);
    if (mine.has(dir)) continue;
    if ((await inspect(dir)) === null && !fs.existsSync(dir)) n++;
  }
  return n;
}
