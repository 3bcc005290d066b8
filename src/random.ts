/**
 * Random bytes for names (queue ids, temporary files, lock tags, drop files) without loading
 * node:crypto, whose load is some 7 ms of the sendmail command's start: read from the kernel's
 * /dev/urandom (the same generator node:crypto draws from), a kilobyte at a time into a pool.
 *
 * Trusts the kernel's generator. Where /dev/urandom cannot be opened or read in full, node:crypto fills
 * the pool instead; never fails otherwise. For names and nonces (smtp-server's session ids and CRAM-MD5
 * challenges among them), not for keys or password salts: those use node:crypto directly.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';

const pool = Buffer.alloc(1024);
let used = pool.length;
let urandom: number | null | undefined;

/** Refills the pool from /dev/urandom, or from node:crypto when that is not possible. */
function refill(): void {
  if (urandom === undefined) {
    try {
      urandom = fs.openSync('/dev/urandom', fs.constants.O_RDONLY);
    } catch {
      urandom = null;
    }
  }
  try {
    if (urandom !== null && fs.readSync(urandom, pool, 0, pool.length, null) === pool.length) {
      used = 0;
      return;
    }
  } catch {
    /* an interrupted or failed read: node:crypto fills the pool instead */
  }
  (createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).randomFillSync(pool);
  used = 0;
}

/** Hands out the pool's next n bytes to read(), then clears them: a byte handed out is not left behind
 * for anyone else. */
function take<T>(n: number, read: (at: number) => T): T {
  if (used + n > pool.length) refill();
  const v = read(used);
  pool.fill(0, used, used + n);
  used += n;
  return v;
}

/** n fresh random bytes (n at most the pool's size). */
export function randomBytes(n: number): Buffer {
  if (n > pool.length) throw new RangeError('randomBytes: at most 1024 bytes');
  return take(n, (at) => Buffer.from(pool.subarray(at, at + n)));
}

/** The next n (1 to 4) random bytes as an unsigned big-endian number. */
export function randomUInt(n: 1 | 2 | 3 | 4): number {
  return take(n, (at) => pool.readUIntBE(at, n));
}
