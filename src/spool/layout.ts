/**
 * The spool's directories and file names, and the fsync helpers every writer uses.
 *
 *   tmp/      ID.PID.env, ID.PID.new   claims of messages being written; never read by anyone else
 *   msg/      ID                       message data, written under a claim, immutable once committed
 *   queue/    ID                       envelope of an active message (its presence is the commit)
 *   hold/     ID                       envelope of a held message
 *   corrupt/  ID                       envelope that could not be parsed (data stays in msg/)
 *   lock/     NAME/                    locks (lock.ts)
 *   drop/     D.RAND                   messages of local users who may not write the spool (mode 1733,
 *                                      each file owned by its submitter: drop.ts)
 *   pickup/   ID                       a drop file being taken into the queue as message ID
 *   inflight                           the queue run's journal of deliveries under way (inflight.ts)
 *
 * The spool root is mode 0711 (others may reach drop/ and nothing else), every folder 0700 but drop/.
 * Trusts only ids that passed isId(). Fails with FerryError (spool-*) on file system errors, config when
 * the spool belongs to someone else (safety.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spoolError } from '../errors.js';
import { checkSpool } from './safety.js';

/** Directory names inside the spool, owner only. */
export const DIRS = ['tmp', 'msg', 'queue', 'hold', 'corrupt', 'lock', 'pickup'] as const;
/** The folder other local users write into (sticky, world-writable). */
export const DROP = 'drop';
export type SpoolDir = (typeof DIRS)[number] | typeof DROP;

/** Paths of one spool. */
export interface Layout {
  root: string;
  dir(name: SpoolDir): string;
  data(id: string): string;
  envelope(where: 'queue' | 'hold' | 'corrupt', id: string): string;
  control: string;
}

/** Builds the layout of a spool rooted at root. */
export function layoutOf(root: string): Layout {
  return {
    root,
    dir: (name) => path.join(root, name),
    data: (id) => path.join(root, 'msg', id),
    envelope: (where, id) => path.join(root, where, id),
    control: path.join(root, 'control.sock'),
  };
}

/** Creates the spool directories when missing (owner only; drop/ 1733), then checks that the whole spool
 * is this user's own (safety.ts). */
export function ensureSpool(layout: Layout): void {
  try {
    fs.mkdirSync(layout.root, { recursive: true, mode: 0o711 });
    for (const d of DIRS) fs.mkdirSync(layout.dir(d), { recursive: true, mode: 0o700 });
    if (!fs.existsSync(layout.dir(DROP))) {
      fs.mkdirSync(layout.dir(DROP), { mode: 0o700 });
      fs.chmodSync(layout.dir(DROP), 0o1733); // mkdir's mode passes through the umask
    }
  } catch (err) {
    throw spoolError(err, `create spool directories under ${layout.root}`);
  }
  checkLayout(layout);
  // others reach drop/ through the root; an older spool was made 0700
  const st = fs.statSync(layout.root);
  if ((st.mode & 0o711) !== 0o711) fs.chmodSync(layout.root, (st.mode & 0o7777) | 0o711);
}

/** Checks an existing spool (safety.ts); a spool that does not exist yet passes. True when it checked
 * one (it throws for one that fails), false when there was none to check. */
export function checkLayout(layout: Layout): boolean {
  if (!fs.existsSync(layout.root)) return false;
  checkSpool(layout.root, DIRS, [DROP]);
  return true;
}

/** Directory entries libuv reads per call (some 800 per system call), and between two turns of the event loop. */
const NAMES_AT_ONCE = 4096;

/**
 * The names in a folder that keep() takes, in the folder's order; none when the folder does not exist;
 * throws the system's error otherwise. Read a batch at a time with opendir: readdir() would also sort
 * every name (libuv's scandir) and allocate each apart, 1.5–2 times the time for 100,000 names, and keep the
 * event loop waiting for the whole list; a listing of 100,000 queued read with readdirSync() peaked some
 * 50 MB higher (scandir's entries, one allocation each, all held at once).
 */
export async function namesIn(dir: string, keep: (name: string) => boolean = () => true): Promise<string[]> {
  let handle: fs.Dir;
  try {
    handle = fs.opendirSync(dir, { bufferSize: NAMES_AT_ONCE });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const names: string[] = [];
  try {
    for (let n = 1; ; n++) {
      const entry = handle.readSync();
      if (!entry) return names;
      if (keep(entry.name)) names.push(entry.name);
      if (n % NAMES_AT_ONCE === 0) await new Promise((r) => setImmediate(r));
    }
  } finally {
    handle.closeSync();
  }
}

/** Reads up to `size` bytes at `offset` from an open file, synchronously (small spool files only: see
 * docs/architecture.md); fewer when the file ends first. Into `into` when it is large enough (the result
 * is then a view of it, good until its next use), else into a new buffer. */
export function readAt(fd: number, size: number, offset: number, into?: Buffer): Buffer {
  const buf = into && into.length >= size ? into.subarray(0, size) : Buffer.allocUnsafe(Math.max(0, size));
  let got = 0;
  while (got < buf.length) {
    const n = fs.readSync(fd, buf, got, buf.length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/** A call of node:fs's callback form as a promise: through the thread pool like node:fs/promises, without
 * loading that module (which the daemon would otherwise load at its start for a few calls). */
export function pooled<T = void>(
  call: (done: (err: NodeJS.ErrnoException | null, value?: T) => void) => void,
): Promise<T> {
  return new Promise((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value as T))));
}

/** Directory descriptors kept open for fsync, one per directory for the life of the process (a spool
 * has a handful of directories): an fsync then costs one thread-pool trip instead of three. Each sync
 * first checks that the path still names the directory the descriptor is open on (a spool directory
 * replaced or mounted over while the process runs gets a fresh descriptor, not a sync of the old one). */
const dirFds = new Map<string, { fd: number; dev: number; ino: number }>();

/** The descriptor kept for a directory, when the path still names the directory it is open on; one
 * that no longer does is dropped and closed. */
function keptFor(dir: string): { fd: number; dev: number; ino: number } | undefined {
  const now = fs.statSync(dir);
  const kept = dirFds.get(dir);
  if (!kept || (kept.dev === now.dev && kept.ino === now.ino)) return kept;
  dirFds.delete(dir);
  fs.close(kept.fd, () => undefined);
  return undefined;
}

/** Keeps a descriptor just opened on a directory, unless another was kept meanwhile (this one is then
 * closed); returns the one kept. */
function keep(dir: string, fd: number): { fd: number; dev: number; ino: number } {
  const st = fs.fstatSync(fd);
  if (dirFds.has(dir)) fs.close(fd, () => undefined);
  else dirFds.set(dir, { fd, dev: st.dev, ino: st.ino });
  return dirFds.get(dir)!;
}

/** Whether a failed sync of a kept descriptor is tried once more with a fresh one (it went bad: EBADF);
 * the bad one is dropped. */
function retryBad(dir: string, fd: number, err: unknown, retry: boolean): boolean {
  if ((err as NodeJS.ErrnoException).code !== 'EBADF' || !retry) return false;
  if (dirFds.get(dir)?.fd === fd) dirFds.delete(dir);
  return true;
}

/** fsyncs a directory through its kept descriptor, opening it once; a descriptor that went bad is
 * dropped and the sync retried once with a fresh one. */
async function syncKept(dir: string, retry = true): Promise<void> {
  const kept = keptFor(dir) ?? keep(dir, await pooled<number>((done) => fs.open(dir, 'r', done)));
  try {
    await pooled((done) => fs.fsync(kept.fd, done));
  } catch (err) {
    if (!retryBad(dir, kept.fd, err, retry)) throw err;
    await syncKept(dir, false);
  }
}

/** syncKept() on the calling thread, for a commit that has the process to itself (writer.ts). */
function syncKeptNow(dir: string, retry = true): void {
  const kept = keptFor(dir) ?? keep(dir, fs.openSync(dir, 'r'));
  try {
    fs.fsyncSync(kept.fd);
  } catch (err) {
    if (!retryBad(dir, kept.fd, err, retry)) throw err;
    syncKeptNow(dir, false);
  }
}

/**
 * Group commit for directory fsyncs: callers that arrive while one fsync runs share the next one, so N
 * sessions finishing together cost two fsyncs, not N. Resolves only after an fsync that started after
 * the caller's rename has completed.
 */
export class DirSyncer {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;
  private constructor(private readonly dir: string) {}

  private static shared = new Map<string, DirSyncer>();

  /** The syncer of a directory, shared by every writer and store of this process. */
  static of(dir: string): DirSyncer {
    let s = DirSyncer.shared.get(dir);
    if (!s) DirSyncer.shared.set(dir, (s = new DirSyncer(dir)));
    return s;
  }

  /** Resolves once everything renamed into the directory before this call is durable. */
  sync(): Promise<void> {
    if (!this.running) return this.start();
    // an fsync already running may have started before the caller's rename: wait for the next one,
    // which every caller arriving meanwhile shares
    this.next ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.next = null;
        return this.start();
      });
    return this.next;
  }

  /** An fsync of the directory made now, on the calling thread: everything renamed into it before the
   * call is durable when it returns. Not shared; for a commit with no other to share with. */
  syncNow(): void {
    syncKeptNow(this.dir);
  }

  private start(): Promise<void> {
    const p = syncKept(this.dir);
    this.running = p;
    p.catch(() => undefined).finally(() => {
      if (this.running === p) this.running = null;
    });
    return p;
  }
}
