/**
 * The drop folder: how a local user who may not write the spool hands a message to the daemon, as
 * Postfix's maildrop. SPOOL/drop is mode 1733: anyone may create a file in it, nobody but the spool's
 * owner may list it, and only a file's owner may rename or remove it. The owner of a drop file is its
 * submitter, which the kernel vouches for and no client can forge.
 *
 * Submitter side (openDropWriter): the message is written to drop/T.RAND (created exclusively, never
 * through a symlink), followed by a NUL and a JSON trailer with the envelope the submitter asks for, then
 * fsynced and renamed to drop/D.RAND, which is when the daemon may take it. The submitter cannot fsync the
 * folder (it may not read it); as with Postfix's postdrop, the fsynced file is what it relies on.
 *
 * Daemon side: claimDrop() opens a D. file without following symlinks, checks that it is a regular file
 * with one link and a bounded size, reads its trailer, and renames it to pickup/ID (ID: the queue id it
 * becomes), where it stays, under the message's lock, until the message is committed (finishPickup) or
 * the file goes back to drop/ (returnPickup) or to corrupt/ (rejectPickup). Nothing in a drop file is
 * trusted: the trailer is only a request, checked again by the caller, and the submitter may change the
 * file at any time (it can only spoil its own message). Fails with FerryError spool-*.
 */
import { randomBytes } from '../random.js';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Envelope } from '../domain/envelope.js';
import { spoolError } from '../errors.js';
import { DROP, layoutOf, readAt, type Layout } from './layout.js';
import { LazySink, writeAll, type MessageWriter, type SpoolWriter } from './writer.js';

/** The largest trailer read (a thousand recipients with DSN parameters fit many times over). */
export const MAX_TRAILER = 1024 * 1024;

/** A ready drop file's name. */
const READY = /^D\.[0-9a-f]{32}$/;
/** A drop file still being written. */
const WRITING = /^T\.[0-9a-f]{32}$/;

/** What a submitter asks for in the trailer: the envelope fields the daemon may take over, checked. */
export interface DropRequest {
  /** The door: the sendmail command reading stdin, or sendmail -bs. */
  door: 'sendmail' | 'sendmail-bs';
  /** null: the submitter gave no sender (-f), the daemon uses the submitter's own address. */
  sender: string | null;
  recipients: Array<{ address: string; notify?: string[]; orcpt?: string }>;
  ret?: string;
  envid?: string;
  body?: string;
  smtputf8?: boolean;
}

/** What a drop writer is told: whether the sender is the submitter's default (asked when a message is
 * committed, since a header may name it), and the mode of its files. */
export interface DropOptions {
  defaultSender: boolean | (() => boolean);
  mode: number;
}

/** Opens a writer that drops each message into SPOOL/drop for the daemon to take. */
export function openDropWriter(root: string, opts: DropOptions): SpoolWriter {
  const layout = layoutOf(root);
  return { layout, begin: () => beginDrop(layout, opts) };
}

/** Starts one drop file. */
async function beginDrop(layout: Layout, opts: DropOptions): Promise<MessageWriter> {
  const rand = randomBytes(16).toString('hex');
  const tmp = path.join(layout.dir(DROP), `T.${rand}`);
  let fh: FileHandle;
  try {
    fh = await fs.promises.open(
      tmp,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      opts.mode,
    );
    await fh.chmod(opts.mode); // the umask must not take the daemon's read access away
  } catch (err) {
    throw spoolError(err, `create a file in ${layout.dir(DROP)}`);
  }
  let bytes = 0;
  let open = true;
  const append = (bufs: Buffer[]): Promise<void> => writeAll(fh, bufs).then((n) => void (bytes += n));
  const sink = new LazySink(append);
  const close = async (): Promise<void> => {
    if (open) {
      open = false;
      await fh.close().catch(() => undefined);
    }
  };
  const abort = async (): Promise<void> => {
    sink.destroy();
    await close();
    await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
  };
  const commit = async (partial: Omit<Envelope, 'id' | 'size'>): Promise<Envelope> => {
    try {
      await sink.written();
      const defaultSender = typeof opts.defaultSender === 'function' ? opts.defaultSender() : opts.defaultSender;
      await writeAll(fh, [Buffer.from([0]), Buffer.from(`${JSON.stringify(requestOf(partial, defaultSender))}\n`)]);
      await fh.sync();
      await close();
      await fs.promises.rename(tmp, path.join(layout.dir(DROP), `D.${rand}`));
      // the queue id comes when the daemon takes the file; until then the drop file's name stands for it
      return { ...partial, id: `D.${rand}`, size: bytes } as Envelope;
    } catch (err) {
      await abort();
      throw spoolError(err, 'write the message into the drop folder');
    }
  };
  return {
    id: rand,
    append,
    get stream() {
      return sink.stream;
    },
    bytesWritten: () => bytes,
    commit,
    abort,
  };
}

/** The trailer's request from the envelope a door built. */
function requestOf(env: Omit<Envelope, 'id' | 'size'>, defaultSender: boolean): DropRequest {
  return {
    door: env.origin.door === 'sendmail-bs' ? 'sendmail-bs' : 'sendmail',
    sender: defaultSender ? null : env.sender,
    recipients: env.recipients.map((r) => ({ address: r.address, notify: r.notify, orcpt: r.orcpt })),
    ret: env.ret,
    envid: env.envid,
    body: env.body,
    smtputf8: env.smtputf8,
  };
}

/** The ready drop files, oldest first (by change time). Anything else in the folder (a half-written
 * file of more than a day, a directory, a device, a symlink) is removed; one entry that cannot be looked
 * at or removed is skipped, never a reason to stop taking the others. */
export function listDrops(layout: Layout, now = Date.now()): string[] {
  const dir = layout.dir(DROP);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw spoolError(err, 'list the drop folder');
  }
  const ready: Array<{ name: string; t: number }> = [];
  for (const name of names) {
    const file = path.join(dir, name);
    if (stuck.has(file)) continue;
    try {
      const st = fs.lstatSync(file, { throwIfNoEntry: false });
      if (!st) continue;
      if (READY.test(name) && st.isFile()) ready.push({ name, t: st.ctimeMs });
      else if (!st.isFile() || (now - st.ctimeMs > 86_400_000 && WRITING.test(name))) discard(layout, file, name);
    } catch {
      stuck.add(file);
    }
  }
  return ready.sort((a, b) => a.t - b.t).map((x) => x.name);
}

/** Entries of the drop folder that could be neither moved nor removed (a directory another user keeps
 * full): skipped until the daemon restarts, so that they cost one attempt, not one per pickup. */
const stuck = new Set<string>();

/** A drop file claimed for queue id `id`: its descriptor, its owner, the message's length and request. */
export interface Claimed {
  fd: number;
  uid: number;
  /** Bytes of message before the trailer. */
  length: number;
  request: unknown;
}

/** Why a drop file was not taken: it went away (nothing to do) or is unusable (moved to corrupt/). */
export class DropRefused extends Error {}

/**
 * Claims a ready drop file for queue id `id` (the caller holds the message's lock): opens and checks it,
 * reads its trailer, and moves it to pickup/ID. Returns null when the file is gone; an unusable file is
 * moved to corrupt/ and reported with DropRefused.
 */
export function claimDrop(layout: Layout, name: string, id: string, maxMessage: number): Claimed | null {
  if (!READY.test(name)) throw new DropRefused(`not a drop file name: ${name}`);
  const file = path.join(layout.dir(DROP), name);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    discard(layout, file, name);
    throw new DropRefused(`cannot open ${name}: ${(err as NodeJS.ErrnoException).code}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new DropRefused('not a regular file');
    if (st.nlink !== 1) throw new DropRefused('a file with more than one name');
    if (st.size > maxMessage + MAX_TRAILER) throw new DropRefused(`too large (${st.size} bytes)`);
    const { length, request } = readTrailer(fd, st.size);
    const picked = path.join(layout.dir('pickup'), id);
    fs.renameSync(file, picked);
    // the submitter may have put another file under the name since it was opened: what was renamed must
    // be what is read, or pickup/ID would hold (and later remove) something else
    const moved = fs.lstatSync(picked);
    if (moved.ino !== st.ino || moved.dev !== st.dev) {
      discard(layout, picked, `pickup.${id}`);
      throw new DropRefused('the file was replaced while it was being taken');
    }
    return { fd, uid: st.uid, length, request };
  } catch (err) {
    fs.closeSync(fd);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    discard(layout, file, name);
    throw err instanceof DropRefused ? err : new DropRefused((err as Error).message);
  }
}

/** Reads the trailer: the JSON after the last NUL (a message holds no NUL: every door refuses it). */
function readTrailer(fd: number, size: number): { length: number; request: unknown } {
  const tailStart = Math.max(0, size - MAX_TRAILER);
  const tail = readAt(fd, size - tailStart, tailStart);
  const nul = tail.lastIndexOf(0);
  if (nul < 0) throw new DropRefused('no envelope trailer (an unfinished or foreign file)');
  try {
    return { length: tailStart + nul, request: JSON.parse(tail.subarray(nul + 1).toString('utf8')) };
  } catch {
    throw new DropRefused('the envelope trailer is not JSON');
  }
}

/** Moves an unusable drop file (from drop/ or pickup/) to corrupt/ under a name of its own, where nothing
 * reads it; what cannot be moved is removed, and what cannot be removed either is remembered as stuck.
 * Never throws. */
function discard(layout: Layout, file: string, name: string): void {
  try {
    fs.renameSync(file, path.join(layout.dir('corrupt'), `drop.${name}.${randomBytes(4).toString('hex')}`));
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
  }
  try {
    fs.rmSync(file, { force: true, recursive: true });
  } catch {
    stuck.add(file);
  }
}

/** The message was committed: the pickup file goes. Never throws (the message is safe either way). */
export function finishPickup(layout: Layout, id: string): void {
  try {
    fs.rmSync(path.join(layout.dir('pickup'), id), { force: true, recursive: true });
  } catch {
    /* left for recovery, which removes pickups of committed messages */
  }
}

/** The message could not be committed now (a full spool): the file goes back to drop/ for later. */
export function returnPickup(layout: Layout, id: string): void {
  try {
    fs.renameSync(
      path.join(layout.dir('pickup'), id),
      path.join(layout.dir(DROP), `D.${randomBytes(16).toString('hex')}`),
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw spoolError(err, `return ${id} to the drop folder`);
  }
}

/** The message was refused for its content or request: the file goes to corrupt/ (kept, never read). */
export function rejectPickup(layout: Layout, id: string): void {
  discard(layout, path.join(layout.dir('pickup'), id), `pickup.${id}`);
}

/** Recovery of pickups a killed daemon left: committed ones are removed, the rest go back to drop/.
 * The caller holds each message's lock (`locked(id)` says whether it could take it). */
export async function recoverPickups(
  layout: Layout,
  locked: (id: string) => Promise<(() => Promise<void>) | null>,
): Promise<number> {
  let n = 0;
  for (const id of fs.existsSync(layout.dir('pickup')) ? fs.readdirSync(layout.dir('pickup')) : []) {
    const release = await locked(id);
    if (!release) continue; // being picked up right now
    try {
      const committed = fs.existsSync(layout.envelope('queue', id)) || fs.existsSync(layout.envelope('hold', id));
      if (committed) finishPickup(layout, id);
      else returnPickup(layout, id);
      n++;
    } finally {
      await release();
    }
  }
  return n;
}
