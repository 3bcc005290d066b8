/**
 * The steps every message passes through once on its way into the spool, whatever door it came in by:
 * line-end policing, and the header stage (loop check, header size limit, header edits). A step is a
 * plain object fed one chunk at a time, with no stream of its own: the intake (receive/intake.ts) runs a
 * door's steps in one pass per chunk, from one Writable or from blocking reads, where a stream per step
 * cost a message four pipes' worth of events, and the sendmail command the loading of node:stream.
 *
 * Input is untrusted bytes. The body is never buffered: only the header section is held, up to the
 * configured limit. Problems are thrown as FerryErrors carrying an SMTP reply (data).
 */
import { dataError } from '../errors.js';
import { parseHeaderBlock, type HeaderField } from './headers.js';

/** One step of a message's way into the spool. */
export interface Step {
  /** Takes the next chunk; returns what passes on now, if anything. Throws to refuse the message. */
  push(chunk: Buffer): Buffer | undefined;
  /** The input has ended: returns what is left to pass on. Throws to refuse the message. */
  end(): Buffer | undefined;
  /** True once the message has ended inside the input (a lone dot): nothing more is to be read. */
  readonly done?: boolean;
}

/** Passes one chunk (null: the end of the input) through the steps in order; returns what comes out of
 * the last. Throws the first step's refusal. */
export function runSteps(steps: readonly Step[], chunk: Buffer | null): Buffer[] {
  let parts: Buffer[] = chunk ? [chunk] : [];
  for (const step of steps) {
    const next: Buffer[] = [];
    for (const part of parts) {
      const out = step.push(part);
      if (out?.length) next.push(out);
    }
    if (chunk === null) {
      const out = step.end();
      if (out?.length) next.push(out);
    }
    parts = next;
  }
  return parts;
}

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

/**
 * Polices line ends of SMTP DATA: a bare LF or CR is refused (reject) or made into CRLF (normalize), so
 * that no later hop can read a line end, or an end of data, that this one did not see; a NUL byte is
 * refused either way.
 */
export class LineEndGuard implements Step {
  private pendingCR = false;
  constructor(private readonly mode: 'reject' | 'normalize') {}

  push(chunk: Buffer): Buffer | undefined {
    if (chunk.includes(0)) throw nulError();
    const parts: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.pendingCR) {
      this.pendingCR = false;
      if (chunk[0] === LF) {
        parts.push(CRLF);
        start = i = 1;
      } else if (!this.bare(parts)) throw this.error();
    }
    for (; i < chunk.length; i++) {
      const b = chunk[i];
      if (b === CR) {
        if (i + 1 === chunk.length) {
          parts.push(chunk.subarray(start, i));
          this.pendingCR = true;
          start = chunk.length;
          break;
        }
        if (chunk[i + 1] === LF) {
          i++;
          continue;
        }
        parts.push(chunk.subarray(start, i));
        if (!this.bare(parts)) throw this.error();
        start = i + 1;
      } else if (b === LF) {
        parts.push(chunk.subarray(start, i));
        if (!this.bare(parts)) throw this.error();
        start = i + 1;
      }
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  end(): Buffer | undefined {
    if (!this.pendingCR) return undefined;
    this.pendingCR = false;
    const parts: Buffer[] = [];
    if (!this.bare(parts)) throw this.error();
    return parts[0];
  }

  /** Handles one bare line end: in normalize mode adds CRLF and returns true. */
  private bare(parts: Buffer[]): boolean {
    if (this.mode === 'reject') return false;
    parts.push(CRLF);
    return true;
  }

  private error(): Error {
    return dataError(550, '5.6.0', 'Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 2.3.8)');
  }
}

/**
 * The refusal of a message holding a NUL byte: RFC 5321 allows NUL nowhere, and a next hop that drops it
 * could read `\r\n\0.\r\n` as an end of data (SMTP smuggling).
 */
export function nulError(): Error {
  return dataError(550, '5.6.0', 'Message contains NUL characters');
}

/** What the header stage does with the parsed header fields. */
export interface HeaderEdit {
  /** Header lines (CRLF-terminated) to put before the message's own. */
  prepend: string;
  /** Lower-case names of fields to leave out (e.g. "bcc"). */
  drop?: Set<string>;
  /** Header lines (CRLF-terminated) to put after the message's own. */
  append?: string;
  /** A field's new lines (CRLF-terminated), or undefined to keep it as it is. */
  replace?: (f: HeaderField) => string | undefined;
}

/** Options of the header stage. */
export interface HeaderStepOptions {
  maxHeaderBytes: number;
  maxHops: number;
  /** Called once with the parsed fields; may throw a FerryError to refuse the message. */
  edit(fields: HeaderField[]): HeaderEdit;
}

/**
 * Holds the header section (never more than maxHeaderBytes), checks it, applies the edit, then passes
 * the body through untouched.
 */
export class HeaderStep implements Step {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private tail: Buffer = Buffer.alloc(0);
  /** The header section is done: everything passes through. */
  private passing = false;
  fields: HeaderField[] = [];
  /** Bytes of the header fields as passed on (the edits included), before the blank line. */
  headBytes = 0;
  /** The header fields as passed on (the edits included), before the blank line. */
  headText = '';

  constructor(private readonly opts: HeaderStepOptions) {}

  push(chunk: Buffer): Buffer | undefined {
    if (this.passing) return chunk;
    // only the new bytes (and the three before them) are searched: a client sending tiny chunks must
    // not make the header stage quadratic
    const before = this.heldBytes;
    const probe = Buffer.concat([this.tail, chunk]);
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    this.tail = probe.subarray(Math.max(0, probe.length - 3));
    let blank = -1;
    if (before < 2 && this.heldBytes >= 2 && Buffer.concat(this.held).subarray(0, 2).equals(CRLF)) blank = 0;
    else {
      const at = probe.indexOf('\r\n\r\n');
      if (at >= 0) blank = before - (probe.length - chunk.length) + at;
    }
    if (blank < 0 && this.heldBytes <= this.opts.maxHeaderBytes) return undefined;
    return this.finishHeaders(Buffer.concat(this.held), blank, false);
  }

  end(): Buffer | undefined {
    if (this.passing) return undefined;
    const buf = Buffer.concat(this.held);
    const blank = buf.subarray(0, 2).equals(CRLF) ? 0 : buf.indexOf('\r\n\r\n');
    return this.finishHeaders(buf, blank, true);
  }

  /** Parses the held header section, applies the edit and releases everything held. */
  private finishHeaders(buf: Buffer, blank: number, atEnd: boolean): Buffer {
    this.passing = true;
    this.held = [];
    const limit = blank < 0 ? buf.length : blank === 0 ? 0 : blank + 2;
    const text = buf.subarray(0, limit).toString('latin1');
    const { fields, consumed } = parseHeaderBlock(text);
    const endedEarly = consumed < limit;
    if ((!endedEarly && blank < 0 && !atEnd) || consumed > this.opts.maxHeaderBytes) {
      throw dataError(552, '5.3.4', `Message header section exceeds ${this.opts.maxHeaderBytes} bytes`);
    }
    const hops = fields.filter((f) => f.lower === 'received').length;
    if (hops > this.opts.maxHops) {
      throw dataError(554, '5.4.6', `Too many hops (${hops} Received headers): mail loop?`);
    }
    this.fields = fields;
    const edit = this.opts.edit(fields);
    const kept = fields
      .filter((f) => !edit.drop?.has(f.lower))
      .map((f) => edit.replace?.(f) ?? f.raw)
      .join('');
    const rest = buf.subarray(consumed);
    let head = edit.prepend + kept + (edit.append ?? '');
    this.headText = head;
    this.headBytes = Buffer.byteLength(head, 'latin1');
    // a header section that ended at a non-header line gets the blank line it lacked
    if (endedEarly || (atEnd && blank < 0 && rest.length === 0)) head += '\r\n';
    return Buffer.concat([Buffer.from(head, 'latin1'), rest]);
  }
}
