/**
 * The in-flight journal, SPOOL/inflight: before the last byte of a message goes to a server or a command
 * (and so before the final dot), the queue run notes durably which recipients of which message are being
 * handed over, by which route, when, and after how many attempts. A run killed between the server's
 * final reply and the envelope's update leaves such a note behind; the next run (journalled()) finds it,
 * sees that the envelope recorded no attempt after it (the count did not grow), and treats those recipients as uncertain instead of sending the
 * message again as if nothing had happened.
 *
 * One line of JSON per note, appended; notes of concurrent deliveries share one fdatasync. Only the
 * holder of the runner lock writes or truncates the journal. Reading trusts nothing: lines that cannot
 * be parsed are skipped. Failures are FerryError (spool-*); a note that could not be made durable makes
 * the delivery stop before its end.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spoolError } from '../errors.js';
import { isId } from './id.js';
import { type Layout, pooled } from './layout.js';

/** One note: these recipients of message id were being handed over by route since t (ms), each with the
 * number of attempts its envelope recorded before this one. */
export interface InflightNote {
  id: string;
  route: string;
  addresses: string[];
  /** Parallel to addresses; missing in notes of older versions, where t is compared instead. */
  attempts?: number[];
  /** What the transport recorded to check the delivery later (the local transport's mailbox detail). */
  local?: Record<string, unknown>;
  t: number;
}

/** The journal as the runner writes it. */
export interface InflightJournal {
  /** Appends a note and resolves once it is durable. */
  mark(note: Omit<InflightNote, 't'>): Promise<void>;
  /** Empties the journal (every note in it is settled); durable before it resolves. */
  clear(): Promise<void>;
  close(): Promise<void>;
}

/** The journal's file. */
function journalFile(layout: Layout): string {
  return path.join(layout.root, 'inflight');
}

/** Reads every note left in the journal (none when there is no journal). */
export function journalled(layout: Layout): InflightNote[] {
  let text: string;
  try {
    const fd = fs.openSync(journalFile(layout), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      text = fs.readFileSync(fd, 'utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw spoolError(err, 'read the in-flight journal');
  }
  const notes: InflightNote[] = [];
  for (const line of text.split('\n')) {
    const n = parseNote(line);
    if (n) notes.push(n);
  }
  return notes;
}

/** One line as a note, or null when it is not one (a torn last line). */
function parseNote(line: string): InflightNote | null {
  try {
    const v = JSON.parse(line) as Partial<InflightNote>;
    const ok =
      typeof v.id === 'string' &&
      isId(v.id) &&
      typeof v.route === 'string' &&
      typeof v.t === 'number' &&
      Array.isArray(v.addresses) &&
      v.addresses.every((a) => typeof a === 'string') &&
      (v.attempts === undefined ||
        (Array.isArray(v.attempts) &&
          v.attempts.length === v.addresses.length &&
          v.attempts.every((n) => Number.isInteger(n)))) &&
      (v.local === undefined || (typeof v.local === 'object' && v.local !== null && !Array.isArray(v.local)));
    return ok ? (v as InflightNote) : null;
  } catch {
    return null;
  }
}

/** Opens the journal for appending (created owner-only when missing). */
export async function openJournal(layout: Layout): Promise<InflightJournal> {
  // a descriptor and callbacks, not node:fs/promises: every queue run opens the journal, and the daemon
  // would load that module (some 0.4 MB) at its start only for this
  let fd: number;
  try {
    fd = await pooled<number>((done) =>
      fs.open(
        journalFile(layout),
        fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW,
        0o600,
        done,
      ),
    );
  } catch (err) {
    throw spoolError(err, 'open the in-flight journal');
  }
  let syncing: Promise<void> | null = null;
  let next: Promise<void> | null = null;
  /** One fdatasync for every note appended before it started; later callers share the next one. */
  const sync = (): Promise<void> => {
    if (!syncing) {
      const p = pooled((done) => fs.fdatasync(fd, done));
      syncing = p;
      void p.catch(() => undefined).finally(() => syncing === p && (syncing = null));
      return p;
    }
    next ??= syncing
      .catch(() => undefined)
      .then(() => {
        next = null;
        return sync();
      });
    return next;
  };
  return {
    mark: async (note) => {
      try {
        // one small append, written at once (O_APPEND); the fdatasync after it is shared and async
        const line = Buffer.from(`${JSON.stringify({ ...note, t: Date.now() })}\n`);
        for (let off = 0; off < line.length; ) off += fs.writeSync(fd, line, off);
        await sync();
      } catch (err) {
        throw spoolError(err, `note the delivery of ${note.id} in the in-flight journal`);
      }
    },
    clear: async () => {
      try {
        await pooled((done) => fs.ftruncate(fd, 0, done));
        await pooled((done) => fs.fdatasync(fd, done));
      } catch (err) {
        throw spoolError(err, 'empty the in-flight journal');
      }
    },
    // after any sync under way (a closed number may be reused at once, and its sync would reach another file)
    close: async () => {
      while (syncing || next) await (next ?? syncing)?.catch(() => undefined);
      await pooled((done) => fs.close(fd, done));
    },
  };
}
