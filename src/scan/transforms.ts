/**
 * The streaming stages every message passes through once on its way into the spool, whatever door it
 * came in by: line-end policing, and the header stage (loop check, header size limit, header edits).
 *
 * Input is untrusted bytes. The body is never buffered: only the header section is held, up to the
 * configured limit. Problems surface as stream errors carrying a FerryError with an SMTP reply.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { dataError } from '../errors.js';
import { parseHeaderBlock, type HeaderField } from './headers.js';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

/**
 * Polices line ends of SMTP DATA: a bare LF or CR is refused (reject) or made into CRLF (normalize), so
 * that no later hop can read a line end, or an end of data, that this one did not see; a NUL byte is
 * refused either way.
 */
export class LineEndGuard extends Transform {
  private pendingCR = false;
  constructor(private readonly mode: 'reject' | 'normalize') {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (chunk.includes(0)) return cb(nulError());
    const parts: Buffer[] = [];
    let start = 0;
    let i = 0;
    if (this.pendingCR) {
      this.pendingCR = false;
      if (chunk[0] === LF) {
        parts.push(CRLF);
        start = i = 1;
      } else if (!this.bare(parts)) return cb(this.error());
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
        if (!this.bare(parts)) return cb(this.error());
        start = i + 1;
      } else if (b === LF) {
        parts.push(chunk.subarray(start, i));
        if (!this.bare(parts)) return cb(this.error());
        start = i + 1;
      }
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
    cb(null, parts.length === 1 ? parts[0] : Buffer.concat(parts));
  }

  override _flush(cb: TransformCallback): void {
    if (this.pendingCR) {
      this.pendingCR = false;
      const parts: Buffer[] = [];
      if (!this.bare(parts)) return cb(this.error());
      return cb(null, parts[0]);
    }
    cb();
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

/**
 * Line ends of a whole local SMTP session (sendmail -bs): the first line decides. A session in CRLF
 * passes through untouched (DATA is then policed like any SMTP client's); a session in LF alone has
 * each LF turned into CRLF and its CRs left as they are, for the DATA policing to refuse. Mixing the two
 * can therefore never end a message early (no smuggling through a lenient conversion).
 */
export class SessionLineEnds extends Transform {
  private mode: 'crlf' | 'lf' | null = null;
  private head: Buffer[] = [];
  private prevCR = false;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.mode === null) {
      this.head.push(chunk);
      const buf = Buffer.concat(this.head);
      const nl = buf.indexOf(LF);
      if (nl < 0) return cb();
      this.head = [];
      this.mode = nl > 0 && buf[nl - 1] === CR ? 'crlf' : 'lf';
      chunk = buf;
    }
    if (this.mode === 'crlf') return cb(null, chunk);
    const parts: Buffer[] = [];
    let start = 0;
    for (let i = chunk.indexOf(LF); i >= 0; i = chunk.indexOf(LF, i + 1)) {
      const before = i > 0 ? chunk[i - 1] : this.prevCR ? CR : undefined;
      if (before === CR) continue;
      parts.push(chunk.subarray(start, i), CRLF);
      start = i + 1;
    }
    parts.push(chunk.subarray(start));
    this.prevCR = chunk.length > 0 && chunk[chunk.length - 1] === CR;
    cb(null, Buffer.concat(parts));
  }

  override _flush(cb: TransformCallback): void {
    cb(null, this.head.length ? Buffer.concat(this.head) : undefined);
  }
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
export interface HeaderStageOptions {
  maxHeaderBytes: number;
  maxHops: number;
  /** Called once with the parsed fields; may throw a FerryError to refuse the message. */
  edit(fields: HeaderField[]): HeaderEdit;
}

/**
 * Holds the header section (never more than maxHeaderBytes), checks it, applies the edit, then passes
 * the body through untouched.
 */
export class HeaderStage extends Transform {
  private held: Buffer[] = [];
  private heldBytes = 0;
  private tail: Buffer = Buffer.alloc(0);
  private done = false;
  fields: HeaderField[] = [];
  /** Bytes of the header fields as passed on (the edits included), before the blank line. */
  headBytes = 0;
  /** The header fields as passed on (the edits included), before the blank line. */
  headText = '';

  constructor(private readonly opts: HeaderStageOptions) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.done) return cb(null, chunk);
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
    if (blank < 0 && this.heldBytes <= this.opts.maxHeaderBytes) return cb();
    this.finishHeaders(Buffer.concat(this.held), blank, false, cb);
  }

  override _flush(cb: TransformCallback): void {
    if (this.done) return cb();
    const buf = Buffer.concat(this.held);
    const blank = buf.subarray(0, 2).equals(CRLF) ? 0 : buf.indexOf('\r\n\r\n');
    this.finishHeaders(buf, blank, true, cb);
  }

  /** Parses the held header section, applies the edit and releases everything held. */
  private finishHeaders(buf: Buffer, blank: number, atEnd: boolean, cb: TransformCallback): void {
    this.done = true;
    this.held = [];
    const limit = blank < 0 ? buf.length : blank === 0 ? 0 : blank + 2;
    const text = buf.subarray(0, limit).toString('latin1');
    const { fields, consumed } = parseHeaderBlock(text);
    const endedEarly = consumed < limit;
    if (!endedEarly && blank < 0 && !atEnd) {
      return cb(dataError(552, '5.3.4', `Message header section exceeds ${this.opts.maxHeaderBytes} bytes`));
    }
    if (consumed > this.opts.maxHeaderBytes) {
      return cb(dataError(552, '5.3.4', `Message header section exceeds ${this.opts.maxHeaderBytes} bytes`));
    }
    const hops = fields.filter((f) => f.lower === 'received').length;
    if (hops > this.opts.maxHops) {
      return cb(dataError(554, '5.4.6', `Too many hops (${hops} Received headers): mail loop?`));
    }
    this.fields = fields;
    let edit: HeaderEdit;
    try {
      edit = this.opts.edit(fields);
    } catch (err) {
      return cb(err as Error);
    }
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
    cb(null, Buffer.concat([Buffer.from(head, 'latin1'), rest]));
  }
}
