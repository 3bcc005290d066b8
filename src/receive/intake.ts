/**
 * Takes one message from a door into the spool: source → door-specific line handling → size limit →
 * header stage (scan/) → spool writer, then the durable commit.
 *
 * The source is untrusted and may be an SMTP DATA stream that must be drained, not destroyed, when the
 * message is refused (the client is still sending). Resolves with the committed envelope; rejects with
 * a FerryError (data: refused content; spool-*: could not store) and leaves nothing behind.
 */
import { Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import { dataError, FerryError, spoolError } from '../errors.js';
import type { Envelope } from '../domain/envelope.js';
import { parseHeaderBlock, type HeaderField } from '../scan/headers.js';
import { HeaderStage, type HeaderEdit } from '../scan/transforms.js';
import type { SpoolWriter } from '../spool/writer.js';
import { noteBytes } from '../spool/reclaim.js';
import { freeBytes, INTAKE_FREE_AGE_MS } from '../spool/space.js';

/** Refuses a message once more than max bytes have passed. */
export class SizeLimit extends Transform {
  private seen = 0;
  constructor(private readonly max: number) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    noteBytes(chunk.length);
    if (this.seen > this.max) return cb(dataError(552, '5.3.4', `Message exceeds the size limit of ${this.max} bytes`));
    cb(null, chunk);
  }
}

/**
 * Pipes streams into each other; resolves when the last has flushed, rejects with the first error and
 * destroys the rest. (stream/promises' pipeline does the same with an AbortController and a captured
 * stack per call, which costs more than the rest of a small message's intake.)
 */
export function chain(streams: [...Transform[], Writable]): Promise<void> {
  return new Promise((resolve, reject) => {
    const last = streams[streams.length - 1]!;
    let failed = false;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      for (const s of streams) s.destroy();
      reject(err);
    };
    for (let i = 0; i < streams.length; i++) {
      const s = streams[i]!;
      s.on('error', fail);
      if (i + 1 < streams.length) (s as Transform).pipe(streams[i + 1]!);
    }
    last.once('finish', () => !failed && resolve());
    last.once('close', () => !failed && !last.writableFinished && fail(new Error('stream closed early')));
  });
}

/** The reason given when a client leaves in the middle of a message. */
export const CLIENT_GONE = 'the client went away before the end of the message';

/** How one door wants its message taken in. */
export interface IntakePlan {
  /** Line-end handling before the size limit (LineEndGuard for SMTP, LocalLines for sendmail). */
  pre: Transform[];
  maxSize: number;
  maxHeaderBytes: number;
  maxHops: number;
  /** Bytes the spool's file system must keep free after the message (limits.spool_minfree). */
  minFree?: number;
  /** The size the sender announced (SIZE=), counted against the free space before anything is written. */
  declaredSize?: number;
  /** Header edits, given the parsed fields and the new message's id. */
  edit(fields: HeaderField[], id: string): HeaderEdit;
  /** The envelope, built once the whole message has been read. */
  envelope(fields: HeaderField[], id: string): Omit<Envelope, 'id' | 'size'> | Promise<Omit<Envelope, 'id' | 'size'>>;
  /** Last word before the commit, with the whole message readable: false drops it (it was dealt with
   * otherwise) and intake resolves with its envelope uncommitted; a throw refuses it. */
  beforeCommit?(env: Envelope, held: HeldMessage): Promise<boolean | 'hold'>;
}

/** A message written to the spool's temporary file and not yet committed. */
export interface HeldMessage {
  /** The whole message, as it stands. */
  read(): Readable;
  /** The header fields as written (the door's own edits included), read from the file when first asked. */
  fields(): Promise<HeaderField[]>;
  /** Replaces the header fields with head (the blank line and the body stay, or the body is the new
   * one given); size follows. */
  rewriteHead(head: Buffer, body?: Buffer): Promise<void>;
}

/** Streams a message into the spool and commits it; see the module header. */
export async function intake(spool: SpoolWriter, source: Readable, plan: IntakePlan): Promise<Envelope> {
  if (plan.minFree && freeBytes(spool.layout.root, INTAKE_FREE_AGE_MS) - (plan.declaredSize ?? 0) < plan.minFree) {
    // keep the last of the disk for the queue's own state: the sender tries again later
    source.resume();
    throw new FerryError(
      'spool-full',
      `spool is full: less than limits.spool_minfree (${plan.minFree} bytes) would be left free`,
    );
  }
  const writer = await spool.begin();
  const headers = new HeaderStage({
    maxHeaderBytes: plan.maxHeaderBytes,
    maxHops: plan.maxHops,
    edit: (fields) => plan.edit(fields, writer.id),
  });
  const stages = [...plan.pre, new SizeLimit(plan.maxSize), headers];
  const first = stages[0]!;
  // pipe() does not pass on a source destroyed before its end (an SMTP client that went away in the
  // middle of DATA): without this the pipeline would wait forever and keep the temporary file open
  const gone = (): void => {
    if (!source.readableEnded && !first.writableEnded) first.destroy(new FerryError('data', CLIENT_GONE));
  };
  source.once('close', gone);
  // the source may have been destroyed while the spool file was being created
  if (source.destroyed && !source.readableEnded) queueMicrotask(gone);
  source.pipe(first);
  try {
    await chain([...stages, writer.stream]);
  } catch (err) {
    source.unpipe(first);
    source.resume();
    await writer.abort();
    throw err instanceof FerryError ? err : spoolError(err, 'write a message');
  } finally {
    source.removeListener('close', gone);
  }
  try {
    const partial = await plan.envelope(headers.fields, writer.id);
    const read = writer.read?.bind(writer);
    const rewrite = writer.rewriteHead?.bind(writer);
    if (plan.beforeCommit && read && rewrite) {
      const env = { ...partial, id: writer.id, size: writer.bytesWritten() } as Envelope;
      let fields: HeaderField[] | undefined;
      const held: HeldMessage = {
        read,
        // the fields a hook sees are the ones written (the door's edits included), kept from the writing
        fields: async () => (fields ??= parseHeaderBlock(headers.headText).fields),
        rewriteHead: async (head, body) => {
          await rewrite(headers.headBytes, head, body);
          headers.headBytes = head.length;
          fields = parseHeaderBlock(head.toString('latin1')).fields;
          env.size = writer.bytesWritten();
        },
      };
      const go = await plan.beforeCommit(env, held);
      if (!go) {
        await writer.abort();
        return env;
      }
      // what the step added (notes) is committed with it; the id and size are the writer's
      return await writer.commit(env, go === 'hold' ? 'hold' : 'queue');
    }
    return await writer.commit(partial);
  } catch (err) {
    await writer.abort();
    throw err;
  }
}
