/**
 * Commits new messages into the spool: the only way a message enters it.
 *
 * begin() creates, exclusively, the message's claim tmp/ID.PID.env and its data file msg/ID; the caller
 * appends the message with writer.append() (or streams it into writer.stream). commit() writes the
 * envelope into the claim, then in one sync phase fsyncs the data, the envelope and msg/ together,
 * renames the envelope into queue/ (that rename is the commit) and fsyncs queue/: two sync phases, and
 * directory fsyncs shared with concurrent commits (or, for the sendmail command's writer, the same fsyncs
 * made one by one on the calling thread). Only when commit() resolves may anyone be told "accepted".
 * abort() removes the files (never after a commit). Recovery (recovery.ts) removes the data of a claim
 * whose writer died.
 * A deferred writer (the daemon's SMTP and LMTP doors) commits into queue/ with one sync phase instead:
 * the envelope goes into the data file behind the message with a checksum (trailer.ts), the data file
 * and msg/ are fsynced, and commit() resolves; a mover then takes the answered messages into queue/ in
 * batches, off the sessions' path (Mover, below). Recovery rolls a dead writer's whole file forward.
 * File system errors become FerryError spool-full / spool-permission / spool-io; after a failed commit
 * nothing of the message is visible in queue/, unless the envelope could not be removed again: it then
 * stays with its data, a whole message.
 */
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import fs from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { spoolError } from '../errors.js';
import type { Envelope } from '../domain/envelope.js';
import { encodeEnvelope } from './envelope-codec.js';
import { newId } from './id.js';
import { spent } from './space.js';
import { DirSyncer, ensureSpool, layoutOf, type Layout, pooled } from './layout.js';
import { crc32, trailerFor } from './trailer.js';
import { streamModule } from '../lazy-node.js';

/** The error of a call on a message already dropped (its descriptors closed). */
function droppedError(): Error {
  return Object.assign(new Error('the message was dropped'), { code: 'EBADF' });
}

/** What a failed header rewrite says it could not do. */
const REWRITE = 'rewrite the header of a message';

/** Messages up to this size are read back and rewritten with synchronous calls (see rewriteHead). */
const SMALL_FILE = 256 * 1024;

/** A small file read whole, never through a symbolic link. */
function readSmall(file: string): Buffer {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** One message being written. */
export interface MessageWriter {
  id: string;
  /** Appends bytes of the message (counted in bytesWritten): undefined when they are written already,
   * else a promise that must settle before the next append (a large message's rest goes through the
   * thread pool); throws or rejects with the file system's error. */
  append(bufs: Buffer[]): Promise<void> | undefined;
  /** The same as a Writable, made when first asked for (node:stream is loaded then); use one or the
   * other. */
  readonly stream: Writable;
  bytesWritten(): number;
  /** The message written so far, read back from its temporary file (once its stream has finished);
   * only a spool's own writer has it. */
  read?(): Readable;
  /** Replaces the first headBytes bytes of the message written (its header fields) with head, once its
   * stream has finished; only a spool's own writer has it. */
  rewriteHead?(headBytes: number, head: Buffer, body?: Buffer): Promise<void>;
  /** Makes the message durable and visible (in queue/, or held in hold/); env.id and env.size are
   * filled in here. */
  commit(env: Omit<Envelope, 'id' | 'size'>, place?: 'queue' | 'hold'): Promise<Envelope>;
  /** Drops the message; safe to call more than once and after a failed commit. */
  abort(): Promise<void>;
}

/** A spool that accepts new messages. */
export interface SpoolWriter {
  layout: Layout;
  begin(): Promise<MessageWriter>;
  /** Resolves once every message this writer has committed is in its place (a deferred writer's
   * answered messages moved into queue/; at once for any other). */
  settle?(): Promise<void>;
}

/** How a writer commits. */
export interface WriterOptions {
  /** fsyncs on the calling thread (the sendmail command; see openSpoolWriter). */
  direct?: boolean;
  /** Commits into queue/ answer after one sync phase, and a mover takes the messages into queue/ after
   * the answer (the daemon's doors). */
  deferred?: DeferredOptions;
}

/** The mover's settings and reports. */
export interface DeferredOptions {
  /** How long the first message of a batch waits for others, in milliseconds (default 10). */
  waitMs?: number;
  /** Messages just moved into queue/. */
  onPlaced?: (envs: Envelope[]) => void;
  /** A batch's step that failed; its messages stay durable where they are and are tried again. */
  onError?: (err: Error) => void;
}

/** Writes every byte of bufs, going on after short writes (a full disk or a file size limit). */
export function writeAll(fh: FileHandle, bufs: Buffer[]): Promise<number> {
  return writeAllWith((rest) => fh.writev(rest).then((r) => r.bytesWritten), bufs);
}

/** writeAll() with the given writev: the bytes a short write left are written again until none is left;
 * a write that stores nothing fails with EIO. */
async function writeAllWith(writev: (bufs: Buffer[]) => Promise<number>, bufs: Buffer[]): Promise<number> {
  let total = 0;
  let rest = bufs.filter((b) => b.length > 0);
  while (rest.length) {
    const n = await writev(rest);
    if (n === 0) throw Object.assign(new Error('no progress writing the message file'), { code: 'EIO' });
    total += n;
    let skip = n;
    while (skip > 0 && rest.length) {
      const first = rest[0]!;
      if (first.length <= skip) {
        skip -= first.length;
        rest = rest.slice(1);
      } else {
        rest = [first.subarray(skip), ...rest.slice(1)];
        skip = 0;
      }
    }
  }
  return total;
}

/** Writes every byte of bufs to fd synchronously, going on after short writes (small messages only): at
 * the file's position, or from `position` on. */
function writeAllSync(fd: number, bufs: Buffer[], position?: number): number {
  let total = 0;
  for (const b of bufs) {
    for (let at = 0; at < b.length; ) {
      const where = position === undefined ? null : position + total + at;
      const n = fs.writeSync(fd, b, at, b.length - at, where);
      if (n === 0) throw Object.assign(new Error('no progress writing the message file'), { code: 'EIO' });
      at += n;
    }
    total += b.length;
  }
  return total;
}

/** writeAll() for a bare descriptor, through the thread pool. */
function writeAllFd(fd: number, bufs: Buffer[]): Promise<number> {
  return writeAllWith(
    (rest) => new Promise((resolve, reject) => fs.writev(fd, rest, (err, n) => (err ? reject(err) : resolve(n)))),
    bufs,
  );
}

/** The bytes a message's data file holds, and their CRC-32 when the writer keeps one (deferred). */
interface Counter {
  n: number;
  crc?: number;
}

/**
 * Appends bufs to the open data file, counting bytes (and their CRC-32 when kept). The first SMALL_FILE
 * bytes, and all of a direct writer's, are written synchronously (a copy into the page cache costs
 * microseconds, a thread-pool hop more): undefined is returned. The rest of a large message goes through
 * the thread pool so that other sessions keep turning: the promise must settle before the next append.
 */
function appendTo(file: DataFile, counter: Counter, bufs: Buffer[], direct: boolean): Promise<void> | undefined {
  if (file.failed) throw file.failed;
  const size = bufs.reduce((a, b) => a + b.length, 0);
  if (counter.crc !== undefined) for (const b of bufs) counter.crc = crc32(b, counter.crc);
  if (direct || counter.n + size <= SMALL_FILE) {
    try {
      counter.n += writeAllSync(file.fd, bufs);
    } catch (err) {
      file.failed = err;
      throw err;
    }
    return undefined;
  }
  const busy = writeAllFd(file.fd, bufs).then(
    (n) => {
      file.busy = null;
      counter.n += n;
    },
    (err: unknown) => {
      file.busy = null;
      file.failed = err;
      throw err;
    },
  );
  file.busy = busy;
  return busy;
}

/** A message writer's `stream`: a Writable over its append(), made when first asked for (node:stream is
 * loaded then). Its errors are reported by the commit, which waits for it. */
export class LazySink {
  private sink: Writable | undefined;
  constructor(private readonly append: (bufs: Buffer[]) => Promise<void> | undefined) {}

  get stream(): Writable {
    if (!this.sink) {
      this.sink = appendSink(this.append);
      this.sink.on('error', () => undefined);
    }
    return this.sink;
  }

  /** Waits until what was streamed is written (ending the stream first); at once when none was made. */
  async written(): Promise<void> {
    if (this.sink) await finished(this.sink);
  }

  destroy(): void {
    this.sink?.destroy();
  }
}

/** A Writable over append(). */
function appendSink(append: (bufs: Buffer[]) => Promise<void> | undefined): Writable {
  const { Writable: Sink } = streamModule();
  return new Sink({
    highWaterMark: 256 * 1024,
    writev(chunks, cb) {
      let busy: Promise<void> | undefined;
      try {
        busy = append(chunks.map((c) => c.chunk as Buffer));
      } catch (err) {
        return cb(err as Error);
      }
      if (!busy) return cb();
      busy.then(() => cb(), cb);
    },
  });
}

/** Fails for data removed under its writer (an older version's orphan sweep knows no claims): such a
 * file is never committed. */
function checkLinked(fd: number): void {
  if (fs.fstatSync(fd).nlink === 0)
    throw Object.assign(new Error('the message file was removed while it was written'), { code: 'EIO' });
}

/** fsync of a descriptor through the thread pool. */
function fsyncFd(fd: number): Promise<void> {
  return pooled((done) => fs.fsync(fd, done));
}

/** Waits until a writable has flushed everything (ending it first), or rejects with its error. */
function finished(w: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    if (w.writableFinished) return resolve();
    if (w.errored) return reject(w.errored);
    w.once('finish', resolve);
    w.once('error', reject);
    if (!w.writableEnded) w.end();
  });
}

/**
 * Opens a spool for writing new messages, creating its directories when needed. `direct`: the commits
 * make their fsyncs on the calling thread, for a process that writes one message and serves no one
 * else meanwhile (the sendmail command). The thread pool lets an event loop serve other sessions while
 * the disk works and lets their fsyncs share the journal's commits; a process with nothing else to do
 * gains neither, and pays for each trip through the pool (a wake-up of a pool thread and one of the
 * loop, eight a commit) and for the pool's four threads, started at the first trip.
 */
export function openSpoolWriter(root: string, opts: WriterOptions = {}): SpoolWriter {
  const layout = layoutOf(root);
  ensureSpool(layout);
  const syncs: Syncs = { msg: DirSyncer.of(layout.dir('msg')), queue: DirSyncer.of(layout.dir('queue')) };
  const mover = opts.deferred ? new Mover(syncs.queue, opts.deferred) : undefined;
  return {
    layout,
    begin: () => beginMessage(layout, syncs, opts.direct === true, mover),
    settle: () => mover?.settle() ?? Promise.resolve(),
  };
}

/** The directory syncers of msg/ and queue/. */
interface Syncs {
  msg: DirSyncer;
  queue: DirSyncer;
}

/** The open data file of a message being written; busy is the write under way in the thread pool, which
 * must end before the descriptor is closed (a closed descriptor's number may be reused at once). */
interface DataFile {
  fd: number;
  busy: Promise<unknown> | null;
  /** Why a write failed: the message can no longer be committed. */
  failed?: unknown;
}

/** Creates a message's two files under a new id: its claim tmp/ID.PID.env (where the envelope will be
 * written; it tells recovery that a live writer owns msg/ID) and its data file msg/ID, both exclusive. An
 * id already taken (two processes drawing one id) is drawn again. While other commits of this process
 * are syncing, the creates go through the thread pool: a create then waits for the file system's
 * journal, and must not stop the event loop meanwhile (made directly under 20 sessions, they took a
 * fifth of the daemon's time). Otherwise they are made directly, two quick calls instead of two trips
 * (a single client's message reaches its 250 sooner). */
async function createFiles(layout: Layout): Promise<{ id: string; claim: string; claimFd: number; dataFd: number }> {
  const open = syncing > 0 ? openFd : (file: string, flags: number) => fs.openSync(file, flags, 0o600);
  for (let tries = 0; ; tries++) {
    const id = newId();
    const claim = path.join(layout.dir('tmp'), `${id}.${process.pid}.env`);
    let claimFd = -1;
    try {
      ownClaims.add(path.basename(claim));
      claimFd = await open(claim, CLAIM_FLAGS);
      const dataFd = await open(layout.data(id), DATA_FLAGS);
      return { id, claim, claimFd, dataFd };
    } catch (err) {
      if (claimFd >= 0) {
        fs.closeSync(claimFd);
        fs.rmSync(claim, { force: true });
      }
      ownClaims.delete(path.basename(claim));
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && tries < 3) continue;
      throw spoolError(err, 'create a message file');
    }
  }
}

/** open(2) through the thread pool, mode 0600. */
function openFd(file: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, flags, 0o600, (err, fd) => (err ? reject(err) : resolve(fd))));
}

/** The claims (tmp/ names) this process's writers hold now: recovery in this process keeps their data,
 * and takes a claim of this pid that is not here for a former process's. */
export const ownClaims = new Set<string>();

/** Commits of this process in their sync phases now. */
let syncing = 0;

const CLAIM_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL;
const DATA_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/** Starts one message: allocates an id and creates its files. */
async function beginMessage(layout: Layout, syncs: Syncs, direct: boolean, mover?: Mover): Promise<MessageWriter> {
  const { msg: msgSync, queue: queueSync } = syncs;
  const { id, claim, claimFd, dataFd } = await createFiles(layout);
  // a deferred commit's data file has its name made durable while the message streams in: the commit
  // then waits for the data's fsync alone (about a tenth of a millisecond less for one client)
  let msgNamed = mover ? msgSync.sync() : undefined;
  msgNamed?.catch(() => undefined);
  const dataPath = layout.data(id);
  const data: DataFile = { fd: dataFd, busy: null };
  const counter: Counter = mover ? { n: 0, crc: 0 } : { n: 0 };
  const append = (bufs: Buffer[]): Promise<void> | undefined => appendTo(data, counter, bufs, direct);
  const sink = new LazySink(append);
  /** Waits until every byte appended or streamed is written; throws a write's error. */
  const written = async (): Promise<void> => {
    await sink.written();
    await data.busy;
    if (data.failed) throw data.failed;
  };
  let open = true;
  /** Set at the rename: from then on only the commit itself may undo the message. */
  let visible = false;
  let committed = false;
  /** Why the data can no longer be committed (an in-place rewrite that failed and could not be undone). */
  let damaged: Error | undefined;
  const closeFiles = async (): Promise<void> => {
    if (!open) return;
    open = false;
    await data.busy?.catch(() => undefined);
    fs.close(data.fd, () => undefined);
    fs.close(claimFd, () => undefined);
  };
  // once the syncs have ended nothing is left to write back, and a close takes a few microseconds: less
  // than the two thread-pool hand-offs it would cost, which a commit under load paid some 40 µs each for
  const closeSynced = (): void => {
    if (!open) return;
    open = false;
    for (const fd of [data.fd, claimFd]) {
      try {
        fs.closeSync(fd);
      } catch {
        // a descriptor that cannot be closed is lost to this process, not to the message
      }
    }
  };
  const drop = async (): Promise<void> => {
    sink.destroy();
    await closeFiles();
    // the data first: a crash between the two leaves the claim, and recovery removes what it claims
    for (const f of [dataPath, `${claim.slice(0, -4)}.new`, claim]) {
      try {
        fs.rmSync(f, { force: true });
      } catch {
        // recovery removes what is left once this process is gone
      }
    }
    ownClaims.delete(path.basename(claim));
  };
  // once the envelope is in view the message is the commit's to finish or undo, never another caller's
  const abort = async (): Promise<void> => (visible || committed ? undefined : drop());
  const commit = async (
    partial: Omit<Envelope, 'id' | 'size'>,
    place: 'queue' | 'hold' = 'queue',
  ): Promise<Envelope> => {
    const env: Envelope = { ...partial, id, size: 0 } as Envelope;
    const target = layout.envelope(place, id);
    let counted = false;
    try {
      if (!open) throw droppedError();
      if (damaged) throw damaged;
      await written();
      env.size = counter.n;
      // the next free-space check within its age counts this message as written (space.ts)
      spent(layout.root, env.size);
      const encoded = Buffer.from(encodeEnvelope(env));
      // written into the claim before any answer, synced only by the mover: a disk too full for the
      // envelope fails the commit here (452), never the mover after a 250
      writeAllSync(claimFd, [encoded]);
      if (mover && place === 'queue' && counter.crc !== undefined) {
        syncing++;
        counted = true;
        await syncBehind(encoded, counter.crc, msgNamed!);
        committed = true;
        open = false;
        mover.add({ env, claim, claimFd, dataFd: data.fd, target });
        return env;
      }
      // one sync phase: the data, the envelope's contents and the data's name in msg/ are durable before
      // the envelope can be seen, so a listed envelope always has whole data
      // directly only while no other commit of this process syncs (one that does shares its syncs)
      const here = direct && syncing === 0;
      syncing++;
      counted = true;
      if (here) {
        fs.fsyncSync(data.fd);
        fs.fsyncSync(claimFd);
        msgSync.syncNow();
      } else {
        // every sync ends before a descriptor is closed, also when one of them fails (a closed number
        // may be reused at once)
        const synced = await Promise.allSettled([fsyncFd(data.fd), fsyncFd(claimFd), msgSync.sync()]);
        for (const r of synced) if (r.status === 'rejected') throw r.reason;
      }
      checkLinked(data.fd);
      fs.renameSync(claim, target);
      visible = true;
      ownClaims.delete(path.basename(claim));
      // the second: the envelope's name is durable before anyone is told "accepted"
      const placeSync = place === 'queue' ? queueSync : DirSyncer.of(layout.dir('hold'));
      if (here) placeSync.syncNow();
      const named = here ? undefined : placeSync.sync();
      closeSynced();
      await named;
      committed = true;
      return env;
    } catch (err) {
      // the envelope out of view again, then the rest removed; an envelope that cannot be taken out of
      // view keeps its data (whole, it is a message, which the sender was told failed and may send
      // again), and the files are closed all the same
      let inView = false;
      try {
        if (visible) fs.rmSync(target, { force: true });
      } catch {
        inView = true;
      }
      // (in view, the first phase's syncs have ended: nothing of the thread pool's still uses the files)
      if (inView) closeSynced();
      else await drop();
      throw spoolError(err, 'commit a message');
    } finally {
      if (counted) syncing--;
    }
  };
  /** The deferred commit's one sync phase: the envelope and its checksum behind the data (trailer.ts),
   * then the data file fsynced, and the sync of msg/ begun after its create ended (`named`). The claim
   * holds the envelope, unsynced, and stays open: the mover syncs it and renames it into queue/ after
   * the answer. */
  const syncBehind = async (encoded: Buffer, crc: number, named: Promise<void>): Promise<void> => {
    writeAllSync(data.fd, [trailerFor(counter.n, encoded, crc)], counter.n);
    const synced = await Promise.allSettled([fsyncFd(data.fd), named]);
    for (const r of synced) if (r.status === 'rejected') throw r.reason;
    checkLinked(data.fd);
  };
  // a small message is read and rewritten with a few synchronous calls: each hop through the thread
  // pool costs more than the copy (a milter or a filter at data_end reads and changes nearly every one)
  const read = (): Readable =>
    counter.n <= SMALL_FILE ? streamModule().Readable.from([readSmall(dataPath)]) : fs.createReadStream(dataPath);
  /** The CRC-32 of parts continued from crc, when this writer keeps one. */
  const crcOf = (parts: Buffer[], crc = 0): number =>
    counter.crc === undefined ? 0 : parts.reduce((c, b) => crc32(b, c), crc);
  /** The new head, then the rest of the old file (or the blank line and a new body): a small message's
   * over its own file, a large one's in a new file that then takes the old one's name in msg/ (made
   * durable by the commit's sync of msg/). */
  const rewriteHead = async (headBytes: number, head: Buffer, body?: Buffer): Promise<void> => {
    // never over a dropped message's descriptor (its number may be reused) or a file already damaged
    if (!open) throw spoolError(droppedError(), REWRITE);
    if (damaged) throw spoolError(damaged, REWRITE);
    await written();
    if (counter.n <= SMALL_FILE) return rewriteInPlace(headBytes, head, body);
    const next = `${claim.slice(0, -4)}.new`;
    let out = -1;
    let old: FileHandle | undefined;
    try {
      out = fs.openSync(next, 'wx', 0o600);
      const parts = body ? [head, Buffer.from('\r\n'), body] : [head];
      old = await fs.promises.open(dataPath, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      let n = await writeAllFd(out, parts);
      let crc = crcOf(parts);
      const buf = Buffer.allocUnsafe(64 * 1024);
      for (let pos = headBytes; !body; ) {
        const { bytesRead } = await old.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        n += await writeAllFd(out, [buf.subarray(0, bytesRead)]);
        crc = crcOf([buf.subarray(0, bytesRead)], crc);
        pos += bytesRead;
      }
      await old.close();
      old = undefined;
      fs.renameSync(next, dataPath);
      // a name the early sync of msg/ may not have carried
      if (msgNamed) (msgNamed = msgSync.sync()).catch(() => undefined);
      fs.close(data.fd, () => undefined);
      data.fd = out;
      counter.n = n;
      if (counter.crc !== undefined) counter.crc = crc;
    } catch (err) {
      await old?.close().catch(() => undefined);
      if (out >= 0) fs.closeSync(out);
      fs.rmSync(next, { force: true });
      throw spoolError(err, REWRITE);
    }
  };
  /**
   * A small message's new head (and the rest, or a new body) written over its own file, read back whole
   * first, and the file cut to its new length: no new file and no rename, whose waits for the file
   * system's journal stopped the event loop while other messages committed (a milter that signs every
   * message made it the intake's largest cost). No envelope names the file before the commit, so no one
   * reads it half rewritten. A write that fails puts the old bytes back; a file that cannot be restored
   * is never committed.
   */
  const rewriteInPlace = (headBytes: number, head: Buffer, body?: Buffer): void => {
    let old: Buffer;
    try {
      old = readSmall(dataPath);
    } catch (err) {
      throw spoolError(err, REWRITE);
    }
    const parts = body ? [head, Buffer.from('\r\n'), body] : [head, old.subarray(headBytes)];
    try {
      const n = writeAllSync(data.fd, parts, 0);
      if (n < old.length) fs.ftruncateSync(data.fd, n);
      counter.n = n;
      if (counter.crc !== undefined) counter.crc = crcOf(parts);
    } catch (err) {
      const failed = spoolError(err, REWRITE);
      try {
        writeAllSync(data.fd, [old], 0);
        fs.ftruncateSync(data.fd, old.length);
      } catch {
        damaged = err as Error;
      }
      throw failed;
    }
  };
  return {
    id,
    append,
    get stream() {
      return sink.stream;
    },
    bytesWritten: () => counter.n,
    read,
    rewriteHead,
    commit,
    abort,
  };
}

/** A message answered by a deferred commit, waiting for the mover. */
interface Moving {
  env: Envelope;
  claim: string;
  claimFd: number;
  dataFd: number;
  /** queue/ID. */
  target: string;
}

/** How long a batch whose step failed waits before it is tried again, in milliseconds. */
const RETRY_MS = 1000;

/**
 * Takes the messages a deferred writer answered into queue/, in batches: the claims (each holding its
 * envelope, written before the answer) fsynced together, renamed into queue/, queue/ fsynced once, and
 * only then each data file cut back to its message (the envelope behind it is no longer needed). A batch
 * starts `waitMs` after its first message, so that one client's next message does not find the journal
 * busy with the previous one's syncs. A step that fails leaves its messages durable where they are (the
 * data file still carries its envelope) and tries them again; a crash leaves them to recovery's
 * roll-forward.
 */
class Mover {
  private pending: Moving[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly queueSync: DirSyncer,
    private readonly opts: DeferredOptions,
  ) {}

  add(m: Moving): void {
    this.pending.push(m);
    this.later(this.opts.waitMs ?? 10);
  }

  /** Starts the next batch after ms, unless one is set to start already. */
  private later(ms: number): void {
    this.timer ??= setTimeout(() => void this.kick(), ms);
  }

  /** Moves every message committed before the call, now; resolves when none is left waiting (a batch
   * that fails is tried again until it succeeds). */
  async settle(): Promise<void> {
    while (this.pending.length || this.running) {
      await this.kick();
      if (this.pending.length && !this.running) await new Promise((r) => setTimeout(r, RETRY_MS / 10));
    }
  }

  /** Starts the next batch unless one runs; resolves when the batch running (or started) ends. */
  private kick(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.running) return this.running;
    const batch = this.pending.splice(0);
    if (!batch.length) return Promise.resolve();
    this.running = this.move(batch).finally(() => {
      this.running = null;
      if (this.pending.length) this.later(this.opts.waitMs ?? 10);
    });
    return this.running;
  }

  private async move(batch: Moving[]): Promise<void> {
    syncing++;
    const again: Moving[] = [];
    const moved: Moving[] = [];
    try {
      const synced = await Promise.allSettled(batch.map((m) => fsyncFd(m.claimFd)));
      for (const [i, r] of synced.entries()) {
        const m = batch[i]!;
        try {
          if (r.status === 'rejected') throw r.reason;
          fs.renameSync(m.claim, m.target);
          ownClaims.delete(path.basename(m.claim));
          moved.push(m);
        } catch (err) {
          again.push(m);
          this.report(err);
        }
      }
      let named = moved.length > 0;
      if (named)
        await this.queueSync.sync().catch((err: unknown) => {
          named = false;
          this.report(err);
        });
      for (const m of moved) this.release(m, named);
    } finally {
      syncing--;
    }
    if (again.length) {
      this.pending.unshift(...again);
      this.later(RETRY_MS);
    }
    if (moved.length) this.opts.onPlaced?.(moved.map((m) => m.env));
  }

  /** Reports a step that failed. */
  private report(err: unknown): void {
    this.opts.onError?.(spoolError(err, 'move a message into the queue'));
  }

  /** A moved message's files closed, its data cut back to the message once its name in queue/ is
   * durable (until then the envelope behind the data is what recovery would roll forward from). */
  private release(m: Moving, named: boolean): void {
    try {
      if (named) fs.ftruncateSync(m.dataFd, m.env.size);
    } catch {
      // the envelope behind the data stays: readers stop at the message's size
    }
    for (const fd of [m.dataFd, m.claimFd]) {
      try {
        fs.closeSync(fd);
      } catch {
        // a descriptor that cannot be closed is lost to this process, not to the message
      }
    }
  }
}
