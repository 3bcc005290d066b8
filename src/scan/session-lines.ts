/**
 * Line ends of a whole local SMTP session (sendmail -bs), as a stream in front of the SMTP door: see
 * SessionLineEnds. Trusts nothing it reads; never fails.
 */
import { Transform, type TransformCallback } from 'node:stream';

const CR = 0x0d;
const LF = 0x0a;
const CRLF = Buffer.from('\r\n');

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
