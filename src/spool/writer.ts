/**
 * Commits new messages into the spool: the only way a message enters it.
 *
 * begin() opens tmp/ID.PID.msg exclusively; the caller streams the message into writer.stream; commit()
 * fsyncs the data, writes and fsyncs the envelope, links the data into msg/ (a link never replaces an
 * existing file, so an id clash fails instead of overwriting), fsyncs msg/, renames the envelope into
 * queue/ (that rename is the commit) and fsyncs queue/ (directory fsyncs are shared with concurrent
 * commits).
 * Only when commit() resolves may anyone be told "accepted". abort() removes the temporary files.
 * File system errors become FerryError spool-full / spool-permission / spool-io; after a failed commit
 * nothing of the message is visible in queue/.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import fs from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { spoolError } from '../errors.js';
import type { Envelope } from '../domain/envelope.js';
import { encodeEnvelope } from './envelope-codec.js';
import { newId } from './id.js';
import { DirSyncer, ensureSpool, layoutOf, type Layout } from './layout.js';

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
  /** Where the message bytes go; counts them in bytesWritten. */
  stream: Writable;
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
}

/** Writes every byte of bufs, going on after short writes (a full disk or a file size limit). */
export async function writeAll(fh: fsp.FileHandle, bufs: Buffer[]): Promise<number> {
  let total = 0;
  let rest = bufs.filter((b) => b.length > 0);
  while (rest.length) {
    const { bytesWritten } = await fh.writev(rest);
    if (bytesWritten === 0) throw Object.assign(new Error('no progress writing the message file'), { code: 'EIO' });
    total += bytesWritten;
    let skip = bytesWritten;
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

/** A Writable that writes into an open file handle, counting bytes. */
function fileSink(fh: fsp.FileHandle, counter: { n: number }): Writable {
  return new Writable({
    highWaterMark: 256 * 1024,
    writev(chunks, cb) {
      writeAll(
        fh,
        chunks.map((c) => c.chunk as Buffer),
      ).then(
        (n) => {
          counter.n += n;
          cb();
        },
        (err) => cb(err),
      );
    },
  });
}

/** Waits until a writable has flushed everything, or rejects with its error. */
function finished(w: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    if (w.writableFinished) return resolve();
    if (w.errored) return reject(w.errored);
    w.once('finish', resolve);
    w.once('error', reject);
    if (!w.writableEnded) w.end();
  });
}

/** Opens a spool for writing new messages, creating its directories when needed. */
export function openSpoolWriter(root: string): SpoolWriter {
  const layout = layoutOf(root);
  ensureSpool(layout);
  const msgSync = DirSyncer.of(layout.dir('msg'));
  const queueSync = DirSyncer.of(layout.dir('queue'));
  return { layout, begin: () => beginMessage(layout, msgSync, queueSync) };
}

/** Starts one message: allocates an id and opens its temporary data file. */
async function beginMessage(layout: Layout, msgSync: DirSyncer, queueSync: DirSyncer): Promise<MessageWriter> {
  const id = newId();
  const base = path.join(layout.dir('tmp'), `${id}.${process.pid}`);
  const tmpData = `${base}.msg`;
  const tmpEnv = `${base}.env`;
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(tmpData, 'wx', 0o600);
  } catch (err) {
    throw spoolError(err, 'create a message file');
  }
  const counter = { n: 0 };
  const stream = fileSink(fh, counter);
  stream.on('error', () => undefined); // reported through commit()
  let open = true;
  const closeFile = async (): Promise<void> => {
    if (open) {
      open = false;
      await fh.close().catch(() => undefined);
    }
  };
  const abort = async (): Promise<void> => {
    stream.destroy();
    await closeFile();
    await Promise.all([fsp.rm(tmpData, { force: true }), fsp.rm(tmpEnv, { force: true })]).catch(() => undefined);
  };
  const commit = async (
    partial: Omit<Envelope, 'id' | 'size'>,
    place: 'queue' | 'hold' = 'queue',
  ): Promise<Envelope> => {
    const env: Envelope = { ...partial, id, size: 0 } as Envelope;
    let linked = false;
    try {
      await finished(stream);
      env.size = counter.n;
      await Promise.all([fh.sync(), writeDurable(tmpEnv, encodeEnvelope(env))]);
      await closeFile();
      // link, not rename: it refuses to replace an existing message should two writers ever draw one id
      await fsp.link(tmpData, layout.data(id));
      linked = true;
      await fsp.unlink(tmpData);
      // the data's name is durable before the envelope can be seen, so a listed envelope always has data
      await msgSync.sync();
      await fsp.rename(tmpEnv, layout.envelope(place, id));
      if (place === 'queue') await queueSync.sync();
      else await DirSyncer.of(layout.dir('hold')).sync();
      return env;
    } catch (err) {
      if (linked) await rollback(layout, id);
      await abort();
      throw spoolError(err, 'commit a message');
    }
  };
  // a small message is read and rewritten with a few synchronous calls: each hop through the thread
  // pool costs more than the copy (a milter or a filter at data_end reads and changes nearly every one)
  const read = (): Readable =>
    counter.n <= SMALL_FILE ? Readable.from([readSmall(tmpData)]) : fs.createReadStream(tmpData);
  /** The new head, then the rest of the old file (or the blank line and a new body), in a new file that
   * then takes the old one's name. */
  const rewriteHead = async (headBytes: number, head: Buffer, body?: Buffer): Promise<void> => {
    await finished(stream);
    const next = `${tmpData}.new`;
    const out = await fsp.open(next, 'wx', 0o600);
    let old: fsp.FileHandle | undefined;
    try {
      if (counter.n <= SMALL_FILE) {
        const parts = body ? [head, Buffer.from('\r\n'), body] : [head, readSmall(tmpData).subarray(headBytes)];
        let n = 0;
        for (const part of parts) for (let at = 0; at < part.length; ) at += fs.writeSync(out.fd, part, at);
        for (const part of parts) n += part.length;
        fs.renameSync(next, tmpData);
        await fh.close();
        fh = out;
        counter.n = n;
        return;
      }
      old = await fsp.open(tmpData, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      let n = await writeAll(out, body ? [head, Buffer.from('\r\n'), body] : [head]);
      const buf = Buffer.allocUnsafe(64 * 1024);
      for (let pos = headBytes; !body; ) {
        const { bytesRead } = await old.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        n += await writeAll(out, [buf.subarray(0, bytesRead)]);
        pos += bytesRead;
      }
      await old.close();
      old = undefined;
      await fsp.rename(next, tmpData);
      await fh.close();
      fh = out;
      counter.n = n;
    } catch (err) {
      await old?.close().catch(() => undefined);
      await out.close().catch(() => undefined);
      await fsp.rm(next, { force: true });
      throw spoolError(err, 'rewrite the header of a message');
    }
  };
  return { id, stream, bytesWritten: () => counter.n, read, rewriteHead, commit, abort };
}

/** Removes a half-committed message from queue/ and msg/ after a failed commit. */
async function rollback(layout: Layout, id: string): Promise<void> {
  await fsp.rm(layout.envelope('queue', id), { force: true }).catch(() => undefined);
  await fsp.rm(layout.data(id), { force: true }).catch(() => undefined);
}

/** Writes a small file and fsyncs it (no rename). */
export async function writeDurable(file: string, text: string): Promise<void> {
  const fh = await fsp.open(file, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
