/**
 * What the bundle gives smtp-server for its `import crypto from 'node:crypto'` (scripts/bundle.js).
 * Its random bytes (a session id per connection, a CRAM-MD5 challenge) come from the kernel's generator
 * through src/random.ts, a pool read a kilobyte at a time, where node:crypto's cost some 20 µs per
 * connection; its hashes (the TLS options' session id context, CRAM-MD5 should it ever be offered) load
 * node:crypto on first use (src/lazy-node.ts).
 *
 * Trusts smtp-server to use no other member; one it used would be undefined and fail its test at once.
 */
import type * as Crypto from 'node:crypto';
import { cryptoModule } from '../lazy-node.js';
import { randomBytes } from '../random.js';

export default {
  randomBytes: (n: number): Buffer => randomBytes(n),
  createHash: (algorithm: string): Crypto.Hash => cryptoModule().createHash(algorithm),
  createHmac: (algorithm: string, key: Crypto.BinaryLike): Crypto.Hmac => cryptoModule().createHmac(algorithm, key),
  timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView): boolean =>
    cryptoModule().timingSafeEqual(a, b),
};
