/**
 * Takes one message from a door into the spool: source → door-specific line handling → size limit →
 * header stage (scan/steps.ts) → spool writer, then the durable commit. The steps run in one pass per
 * chunk: from one Writable for a stream (the SMTP and LMTP doors, pickups), or from blocking reads (the
 * sendmail command's standard input, which then never loads node:stream).
 *
 * The source is untrusted and may be an SMTP DATA stream that must be drained, not destroyed, when the
 * message is refused (the client is still sending). Resolves with the committed envelope; rejects with
 * a FerryError (data: refused content; spool-*: could not store) and leaves nothing behind.
 */
import type { Readable, Writable } from 'node:stream';
import { dataError, FerryError, spoolError } from '../errors.js';
import type { Envelope } from '../domain/envelope.js';
import { parseHeaderBlock, type HeaderField } from '../scan/headers.js';
import { HeaderStep, runSteps, type HeaderEdit, type Step } from '../scan/steps.js';
import type { MessageWriter, SpoolWriter } from '../spool/writer.js';
import { streamModule } from '../lazy-node.js';
import { noteBytes } from '../spool/reclaim.js';
import { freeBytes, INTAKE_FREE_AGE_MS } from '../spool/space.js';

/** The refusal of a message larger than max bytes. */
export function tooLarge(max: number): FerryError {
  return dataError(552, '5.3.4', `Message exceeds the size limit of ${max} bytes`);
}

/** Refuses a message once more than max bytes have passed. */
export class SizeLimit implements Step {
  private seen = 0;
  constructor(private readonly max: number) {}
  push(chunk: Buffer): Buffer {
    this.seen += chunk.length;
    noteBytes(chunk.length);
    if (this.seen > this.max) throw tooLarge(this.max);
    return chunk;
  }
  end(): undefined {
    return undefined;
  }
}

/** A source read with blocking calls (the sendmail command's standard input). */
export interface BlockingSource {
  /** The next chunk, a buffer of its own, or null at the end; throws the system's error. */
  readSync(): Buffer | null;
}

/** One chunk (null: the end of the input) through the steps. `last` once the message has ended: at
 * the input's end, or at a lone dot inside it (a step is done), after which the steps are ended too and
 * nothing more is read, even while the sender keeps its end of the pipe open. */
function passChunk(steps: Step[], chunk: Buffer | null): { out: Buffer[]; last: boolean } {
  const out = runSteps(steps, chunk);
  if (!chunk) return { out, last: true };
  if (!steps.some((st) => st.done)) return { out, last: false };
  out.push(...runSteps(steps, null));
  return { out, last: true };
}

/** Feeds a blocking source through the steps into the writer, until the message's end. */
async function feedBlocking(source: BlockingSource, steps: Step[], writer: MessageWriter): Promise<void> {
  for (;;) {
    const { out, last } = passChunk(steps, source.readSync());
    const busy = writer.append(out);
    if (busy) await busy;
    if (last) return;
  }
}

/**
 * Feeds a stream through the steps into the writer, from one Writable; resolves once the last bytes are
 * written, rejects with the first refusal or error. A source destroyed before its end (an SMTP client
 * that went away in the middle of DATA) fails it: pipe() would pass no end on, and the writer's files
 * would stay open.
 */
function feedStream(source: Readable, steps: Step[], writer: MessageWriter): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    /** The message ended inside the input (a lone dot): what follows is ignored. */
    let resolved = false;
    const { Writable: Sink } = streamModule();
    const pass = (chunk: Buffer | null, cb: (err?: Error | null) => void): void => {
      let busy: Promise<void> | undefined;
      let done = false;
      try {
        const { out, last } = passChunk(steps, chunk);
        done = chunk !== null && last;
        busy = writer.append(out);
      } catch (err) {
        return cb(err as Error);
      }
      if (done) {
        // the message ended inside the input: the rest is not read (nor drained: a writer that keeps its
        // end open would keep this process waiting), and a close of the source no longer matters
        source.removeListener('close', gone);
        source.unpipe(sink);
        resolved = true;
        busy ? busy.then(() => finish(), fail) : finish();
        return cb();
      }
      busy ? busy.then(() => cb(), cb) : cb();
    };
    const sink: Writable = new Sink({
      highWaterMark: 64 * 1024,
      write: (chunk: Buffer, _e, cb) => (resolved ? cb() : pass(chunk, cb)),
      final: (cb) => (resolved ? cb() : pass(null, cb)),
    });
    const finish = (): void => {
      if (failed) return;
      source.removeListener('close', gone);
      resolve();
    };
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      source.removeListener('close', gone);
      source.unpipe(sink);
      source.resume();
      sink.destroy();
      reject(err);
    };
    const gone = (): void => {
      if (!source.readableEnded && !sink.writableEnded) fail(new FerryError('data', CLIENT_GONE));
    };
    sink.on('error', fail);
    sink.once('finish', () => !resolved && finish());
    source.once('close', gone);
    // the source may have been destroyed while the spool file was being created
    if (source.destroyed && !source.readableEnded) queueMicrotask(gone);
    source.pipe(sink);
  });
}

/** The reason given when a client leaves in the middle of a message. */
export const CLIENT_GONE = 'the client went away before the end of the message';

/** How one door wants its message taken in. */
export interface IntakePlan {
  /** Line-end handling before the size limit (LineEndGuard for SMTP, LocalLines for sendmail). */
  pre: Step[];
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
export async function intake(
  spool: SpoolWriter,
  source: Readable | BlockingSource,
  plan: IntakePlan,
): Promise<Envelope> {
  const blocking = 'readSync' in source;
  if (plan.minFree && freeBytes(spool.layout.root, INTAKE_FREE_AGE_MS) - (plan.declaredSize ?? 0) < plan.minFree) {
    // keep the last of the disk for the queue's own state: the sender tries again later
    if (!blocking) source.resume();
    throw new FerryError(
      'spool-full',
      `spool is full: less than limits.spool_minfree (${plan.minFree} bytes) would be left free`,
    );
  }
  const writer = await spool.begin();
  const headers = new HeaderStep({
    maxHeaderBytes: plan.maxHeaderBytes,
    maxHops: plan.maxHops,
    edit: (fields) => plan.edit(fields, writer.id),
  });
  const steps = [...plan.pre, new SizeLimit(plan.maxSize), headers];
  try {
    await (blocking ? feedBlocking(source, steps, writer) : feedStream(source, steps, writer));
  } catch (err) {
    await writer.abort();
    throw err instanceof FerryError ? err : spoolError(err, 'write a message');
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
