/**
 * mbox delivery, as Postfix's local(8) does it: under a dot-lock and an fcntl lock, the whole entry
 * (From_ line, message, blank line) is appended, fsynced, and on any error the file is cut back to the
 * length it had. Before the first byte is written, the caller is told where it goes (file, inode, offset,
 * length, digest, From_ line) and records it durably; verify() then tells, after a run that was killed
 * while writing, whether the entry is whole (delivered), absent, or half there (cut away, so that no mail
 * reader ever sees half a message).
 *
 * Runs as the mailbox's owner. Opens without following a symlink and writes only a regular file with one
 * name that belongs to this user. Results are outcomes, never throws.
 */
import { cryptoModule } from '../../lazy-node.js';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dotLock, dotLockByHelper, type DotLock, type NoDotLock } from './dotlock.js';
import { fcntlLock, type FcntlLock } from './fcntl.js';
import { fsFailure, type LocalResult } from './results.js';

/** Where an entry is about to be written: what a later run needs to check it. */
export interface MboxMark {
  file: string;
  ino: number;
  offset: number;
  length: number;
  sha256: string;
  fromLine: string;
}

/** How the mbox is locked and opened. */
export interface MboxOptions {
  /** The dot-lock: already held by the caller (a root daemon holds it for the user), or to be taken. */
  dotlock: 'held' | 'self';
  /** The mbox may be created (mode 0600) when it does not exist. */
  create: boolean;
  /** Records the mark durably; false: it could not be, and nothing is written. */
  mark(m: MboxMark): Promise<boolean>;
  /** Told once about a lock that cannot be taken on this system (no perl, no dotlockfile). */
  warn(text: string): void;
  /** Seconds to wait for a lock another program holds. */
  lockWait?: number;
}

/** Takes this process's own dot-lock: directly, else through dotlockfile for the user's mailbox. */
async function ownDotLock(file: string, o: MboxOptions): Promise<DotLock | NoDotLock | null> {
  const d = await dotLock(file, o.lockWait ?? 20);
  if (!('denied' in d)) return d;
  const h = await dotLockByHelper(file, o.lockWait ?? 20);
  if ('denied' in h) {
    o.warn(`mbox ${file} is written without a dot-lock: ${d.denied}, and ${h.denied}`);
    return null;
  }
  return h;
}

/** Opens the mbox for appending; it must be a regular file of ours with one name. */
async function openMbox(file: string, create: boolean): Promise<FileHandle> {
  const base = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;
  let fh: FileHandle;
  try {
    fh = await fs.promises.open(file, base);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw err;
    fh = await fs.promises.open(file, base | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  }
  const st = await fh.stat();
  if (!st.isFile() || st.nlink !== 1 || st.uid !== process.geteuid?.()) {
    await fh.close();
    throw Object.assign(new Error(`${file} is not a regular file of this user with one name`), { code: 'EPERM' });
  }
  return fh;
}

/** Appends one entry (already in mbox form) to the mbox at file. */
export async function deliverMbox(file: string, data: Buffer, fromLine: string, o: MboxOptions): Promise<LocalResult> {
  const dl = o.dotlock === 'self' ? await ownDotLock(file, o) : null;
  if (dl && !('release' in dl))
    return {
      outcome: 'tempfail',
      reply: `451 4.2.0 ${file}: ${'busy' in dl ? dl.busy : 'failed' in dl ? dl.failed : dl.denied}`,
    };
  let fh: FileHandle | undefined;
  let lock: FcntlLock | undefined;
  try {
    fh = await openMbox(file, o.create);
    const fl = await fcntlLock(file, (o.lockWait ?? 20) * 1000);
    if ('failed' in fl) return { outcome: 'tempfail', reply: `451 4.2.0 ${file} is locked: ${fl.failed}` };
    if ('unavailable' in fl) o.warn(`mbox files are written without fcntl locks: ${fl.unavailable}`);
    else lock = fl;
    const st = await fh.stat();
    if (lock && lock.ino !== st.ino)
      return { outcome: 'tempfail', reply: `451 4.2.0 ${file} was replaced while it was being locked` };
    const mark: MboxMark = {
      file,
      ino: st.ino,
      offset: st.size,
      length: data.length,
      sha256: cryptoModule().createHash('sha256').update(data).digest('hex'),
      fromLine,
    };
    if (!(await o.mark(mark)))
      return { outcome: 'tempfail', reply: '451 4.3.0 the delivery could not be recorded first' };
    return await append(fh, data, st.size, file);
  } catch (err) {
    return fsFailure(err, `cannot write the mbox ${file}`);
  } finally {
    await fh?.close().catch(() => undefined);
    await lock?.release();
    if (dl && 'release' in dl) await dl.release();
  }
}

/** Writes the entry and syncs it; on failure cuts the file back to `size`. */
async function append(fh: FileHandle, data: Buffer, size: number, file: string): Promise<LocalResult> {
  try {
    let off = 0;
    while (off < data.length) off += (await fh.write(data, off, data.length - off)).bytesWritten;
    await fh.sync();
    return { outcome: 'ok', reply: `250 2.0.0 delivered to mailbox ${file}` };
  } catch (err) {
    await fh.truncate(size).catch(() => undefined);
    await fh.sync().catch(() => undefined);
    return fsFailure(err, `cannot write the mbox ${file}`);
  }
}

/** What a check of a recorded entry found. */
export type MboxCheck = 'delivered' | 'absent' | 'repaired' | 'unknown';

/** Checks, under the locks, whether the entry a mark describes is whole; cuts away a half-written one
 * that is the last thing in the file. */
export async function verifyMbox(
  m: MboxMark,
  o: Pick<MboxOptions, 'dotlock' | 'warn' | 'lockWait'>,
): Promise<MboxCheck> {
  const dl = o.dotlock === 'self' ? await ownDotLock(m.file, { ...o, create: false, mark: async () => true }) : null;
  if (dl && !('release' in dl)) return 'unknown';
  let fh: FileHandle | undefined;
  let lock: FcntlLock | undefined;
  try {
    fh = await fs.promises.open(m.file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    const fl = await fcntlLock(m.file, (o.lockWait ?? 20) * 1000);
    if ('failed' in fl) return 'unknown';
    if (!('unavailable' in fl)) lock = fl;
    const st = await fh.stat();
    if (st.ino !== m.ino || !st.isFile()) return 'unknown';
    if (st.size <= m.offset) return 'absent';
    const have = Math.min(m.length, st.size - m.offset);
    const buf = Buffer.alloc(have);
    await fh.read(buf, 0, have, m.offset);
    if (have === m.length && cryptoModule().createHash('sha256').update(buf).digest('hex') === m.sha256)
      return 'delivered';
    // half an entry, and nothing after it: ours, cut off mid-write
    const from = Buffer.from(m.fromLine);
    if (st.size < m.offset + m.length && buf.subarray(0, from.length).equals(from)) {
      await fh.truncate(m.offset);
      await fh.sync();
      return 'repaired';
    }
    return 'unknown';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'absent' : 'unknown';
  } finally {
    await fh?.close().catch(() => undefined);
    await lock?.release();
    if (dl && 'release' in dl) await dl.release();
  }
}
