/**
 * Reads envelope files: one descriptor per file for the content and its stamp (inode, size, times), or
 * for a listing the content alone, and a reader of many files that lets a worker thread make the system
 * calls ahead of the caller.
 *
 * A listing of a long queue is bound by the calls per envelope (open, read, close; a stamp costs an
 * fstat more): two thirds of `queue list`'s time at 100,000 messages. Made by a worker while the main
 * thread decodes and prints the slice before (and reads every fourth slice itself), they cost the
 * listing little wall time.
 *
 * Trusts nothing it reads (the caller decodes); a listing's read trusts the folder it reads to be the
 * spool owner's and closed (checkLayout()). Never throws for a file: each result is the text (and
 * stamp), or the error's code and message. A worker that cannot start or fails leaves the rest of the
 * files to be read here, synchronously: the result is the same, only slower.
 */
import fs from 'node:fs';
import type { Worker } from 'node:worker_threads';
import { readAt } from './layout.js';
import { openSpoolFileStat } from './safety.js';

/** An envelope file's content and stamp (none when read for a listing: readListed()), or why it could
 * not be read. */
export type RawEnvelope = { text: string; stamp?: string } | { code: string; message: string };

/** How a reader of many files reads each: with its stamp and owner checked (readStamped()), or as a
 * listing does (readListed()). */
export type ReadMode = 'stamped' | 'listed';

/** The identity of a file's content as read: inode, size, change and modification times. */
export function stampText(st: fs.BigIntStats): string {
  return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/** The stamp of a file now (its path followed), or undefined when there is none. */
export function stampOfFile(file: string): string | undefined {
  const st = fs.statSync(file, { bigint: true, throwIfNoEntry: false });
  return st ? stampText(st) : undefined;
}

/** One buffer for the reads of files that fit it: a listing reads 100,000 of them, and a buffer each
 * was garbage to collect. The text is copied out of it before the next read. */
const SHARED = Buffer.allocUnsafe(64 * 1024);

/** Reads a small spool file and its stamp through one descriptor; throws the system's error. */
export function readStamped(file: string): { text: string; stamp: string } {
  const { fd, st } = openSpoolFileStat(file);
  try {
    return { text: readAt(fd, Number(st.size), 0, SHARED).toString('utf8'), stamp: stampText(st) };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads a small spool file for a listing: open, read and close, without the fstat of readStamped() (a
 * tenth of a long listing's reading). It has no stamp to give, and the file's owner is not looked at:
 * the folder's is. The store reads only folders that checkLayout() found to be the spool owner's and
 * closed to group and others, so every name in them was made by the owner or root; a symlink is still
 * refused by the open (ELOOP), and a folder by the read (EISDIR). Throws the system's error.
 */
export function readListed(file: string): { text: string } {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    const got = fs.readSync(fd, SHARED, 0, SHARED.length, 0);
    // a short read of a regular file is its end; a file that fills the buffer (thousands of recipients)
    // is read again by its size
    if (got < SHARED.length) return { text: SHARED.toString('utf8', 0, got) };
    return { text: readAt(fd, fs.fstatSync(fd).size, 0).toString('utf8') };
  } finally {
    fs.closeSync(fd);
  }
}

/** readStamped() or readListed() that returns its error instead of throwing it. */
export function readRaw(file: string, mode: ReadMode = 'stamped'): RawEnvelope {
  try {
    return mode === 'listed' ? readListed(file) : readStamped(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { code: e.code ?? 'EIO', message: e.message };
  }
}

/** Below this many files a worker's start (some 30 ms) costs more than it saves. */
const WORKER_FROM = 2048;
/** Every SHARE-th slice of a long list is read by the caller itself while the worker reads on: in a
 * listing the worker's calls were the longer task and the main thread waited on it a third of the
 * time (bench/README.md). */
const SHARE = 4;
/** Slices asked of the worker before the caller takes the first: what a listing holds beyond its own. */
const AHEAD = 2;

/** A reader thread, and whether it has already failed or ended. */
type ReaderThread = { worker: Worker; gone: () => boolean };

/**
 * Starts a reader thread before the caller knows how many files it will read (its start, some 100 ms of
 * wall time on a small machine, then overlaps the listing of the folders). Given to readSlices(), which
 * uses it for a long list and ends it otherwise; undefined when it cannot start.
 */
export async function startReaderThread(): Promise<ReaderThread | undefined> {
  try {
    // worker_threads is loaded only here: a command that never lists a long queue (sendmail) skips it
    const { Worker: Thread } = await import('node:worker_threads');
    const worker = new Thread(new URL('./scan-worker.js', import.meta.url), { stdout: false, stderr: false });
    let gone = false;
    // from its start: an error with no listener would end the process
    const end = (): void => void (gone = true);
    worker.on('error', end);
    worker.on('exit', end);
    return { worker, gone: () => gone };
  } catch {
    return undefined;
  }
}

/**
 * Reads `count` files (the i-th named by fileOf(i)) a slice at a time, in order: yields each slice's
 * results with the index of its first file. Long lists are read by a worker thread up to AHEAD slices
 * ahead: `early` when the caller started one (startReaderThread()), else one started here.
 */
export async function* readSlices(
  count: number,
  fileOf: (i: number) => string,
  size: number,
  early?: Promise<ReaderThread | undefined>,
  mode: ReadMode = 'stamped',
): AsyncGenerator<[number, RawEnvelope[]]> {
  const files = (from: number): string[] => {
    const slice: string[] = [];
    for (let i = from; i < Math.min(count, from + size); i++) slice.push(fileOf(i));
    return slice;
  };
  let at = 0;
  if (count < WORKER_FROM) void early?.then((t) => t?.worker.terminate());
  const thread = count >= WORKER_FROM ? ((await early) ?? (await startReaderThread())) : undefined;
  const mine = (from: number): boolean => (from / size) % SHARE === SHARE - 1;
  const read = (from: number): RawEnvelope[] => files(from).map((f) => readRaw(f, mode));
  const ahead = thread && startReader(thread, count, files, size, mode, mine);
  try {
    while (ahead && at < count) {
      if (mine(at)) {
        yield [at, read(at)];
        at += size;
        continue;
      }
      const got = await ahead.next();
      if (!got) break; // the worker failed: the rest is read here
      yield [at, got];
      at += got.length;
    }
    for (; at < count; at += size) yield [at, read(at)];
  } finally {
    ahead?.stop();
  }
}

/**
 * A worker reading slices ahead, asked one slice at a time (a message of paths, answered by a message
 * of results for the same first index, in order); next() resolves with the next slice, or null once the worker failed.
 */
function startReader(
  thread: ReaderThread,
  count: number,
  files: (from: number) => string[],
  size: number,
  mode: ReadMode,
  mine: (from: number) => boolean,
): { next(): Promise<RawEnvelope[] | null>; stop(): void } {
  // each answer must be the slice asked first, whole: anything else stops the worker and the rest is
  // read here (an answer given to the wrong files would decode one envelope under another's id)
  const answers: Array<{ from: number; length: number; answer: (slice: RawEnvelope[] | null) => void }> = [];
  const asked: Promise<RawEnvelope[] | null>[] = [];
  let sent = 0;
  // a thread that ended before it was given work has nothing to answer: everything is read here
  let worker: Worker | undefined = thread.gone() ? undefined : thread.worker;
  const fail = (): void => {
    worker = undefined;
    for (const { answer } of answers.splice(0)) answer(null);
  };
  thread.worker.on('message', (m: { from: number; results: RawEnvelope[] }) => {
    const next = answers[0];
    if (!next || m.from !== next.from || m.results.length !== next.length) {
      void thread.worker.terminate();
      return fail();
    }
    answers.shift();
    next.answer(m.results);
  });
  thread.worker.on('messageerror', fail);
  // the worker ends only when stopped or failed; the slices it answered before are still used
  thread.worker.on('error', fail);
  thread.worker.on('exit', fail);
  const ask = (): void => {
    while (worker && asked.length < AHEAD && sent < count) {
      const slice = files(sent);
      const from = sent;
      asked.push(new Promise((answer) => answers.push({ from, length: slice.length, answer })));
      // one string, not an array of them: cloning 512 strings was a twentieth of the listing's main thread
      worker.postMessage({ from, files: slice.join('\0'), mode });
      sent += size;
      if (mine(sent)) sent += size;
    }
  };
  return {
    next: () => {
      ask();
      const got = asked.shift() ?? Promise.resolve(null);
      ask();
      return got;
    },
    stop: () => void thread.worker.terminate(),
  };
}
