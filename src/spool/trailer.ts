/**
 * The envelope a data file carries behind its message while the daemon's door has answered and the
 * envelope is not yet in queue/ (writer.ts, the deferred commit; docs/spool.md):
 *
 *   msg/ID = the message (size bytes) | the envelope as encoded (len bytes) | trailer (TRAILER_BYTES)
 *   trailer = "\0ferrymail-envelope " size(16 hex) " " len(8 hex) " " crc(8 hex) "\n"
 *
 * crc is the CRC-32 (IEEE, as zlib's) of the message and the envelope. A file whose trailer, lengths,
 * checksum and envelope (its id and size) all agree was written whole and synced before its client was
 * told "accepted"; any other was never acknowledged. Readers of a message stop at its envelope's size, so
 * the bytes behind it never leave.
 *
 * Trusts nothing in the file. Fails with the file system's error; a file that does not check out is
 * reported as such (null), never half read.
 */
import fs from 'node:fs';
import type { Envelope } from '../domain/envelope.js';
import { decodeEnvelope } from './envelope-codec.js';
import { readAt } from './layout.js';

const MAGIC = '\0ferrymail-envelope ';

/** The trailer's length in bytes. */
export const TRAILER_BYTES = MAGIC.length + 16 + 1 + 8 + 1 + 8 + 1;

const TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

/** The CRC-32 of buf continued from crc (0 to start). */
export function crc32(buf: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < buf.length; i++) c = TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** The bytes written behind a message of `size` bytes whose data so far has checksum `crc`. */
export function trailerFor(size: number, envelope: Buffer, crc: number): Buffer {
  const all = crc32(envelope, crc);
  const hex = (n: number, w: number): string => n.toString(16).padStart(w, '0');
  const tail = `${MAGIC}${hex(size, 16)} ${hex(envelope.length, 8)} ${hex(all, 8)}\n`;
  return Buffer.concat([envelope, Buffer.from(tail, 'latin1')]);
}

/** The CRC-32 of a file's first `size` bytes, read synchronously in 64 KB steps. */
function crcOfFile(fd: number, size: number): number {
  const buf = Buffer.allocUnsafe(64 * 1024);
  let crc = 0;
  for (let pos = 0; pos < size; ) {
    const got = fs.readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
    if (got === 0) throw Object.assign(new Error('the message file ended early'), { code: 'EIO' });
    crc = crc32(buf.subarray(0, got), crc);
    pos += got;
  }
  return crc;
}

/** What a file's last TRAILER_BYTES say, when they are a trailer: the message's size, the envelope's
 * length and the checksum (nothing is checked against the file). */
export function parseTrailer(tail: Buffer): { size: number; len: number; crc: number } | null {
  const m = /^\0ferrymail-envelope ([0-9a-f]{16}) ([0-9a-f]{8}) ([0-9a-f]{8})\n$/.exec(tail.toString('latin1'));
  if (!m) return null;
  return { size: Number.parseInt(m[1]!, 16), len: Number.parseInt(m[2]!, 16), crc: Number.parseInt(m[3]!, 16) };
}

/** The trailer at the end of an open data file, when it has one whose lengths add up to the file's. */
function trailerIn(fd: number): { size: number; len: number; crc: number } | null {
  const length = fs.fstatSync(fd).size;
  if (length < TRAILER_BYTES) return null;
  const t = parseTrailer(readAt(fd, TRAILER_BYTES, length - TRAILER_BYTES));
  return t && t.size + t.len + TRAILER_BYTES === length ? t : null;
}

/** Cuts a data file back to its message of `size` bytes when what follows is an envelope and a trailer
 * naming that size, and nothing else; true when it cut. Anything else behind the message stays. */
export function cutTrailer(fd: number, size: number): boolean {
  if (trailerIn(fd)?.size !== size) return false;
  fs.ftruncateSync(fd, size);
  return true;
}

/** The envelope a data file carries behind its message, when the file is whole and names `id`; null
 * for a file without a trailer or one that does not check out. */
export function envelopeBehind(fd: number, id: string): Envelope | null {
  const t = trailerIn(fd);
  if (!t) return null;
  const { size } = t;
  const text = readAt(fd, t.len, size);
  if (crc32(text, crcOfFile(fd, size)) !== t.crc) return null;
  try {
    const env = decodeEnvelope(text.toString('utf8'), id);
    return env.size === size ? env : null;
  } catch {
    return null;
  }
}
