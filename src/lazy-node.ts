/**
 * node:tls and node:crypto, each loaded at its first use instead of at start. Loading them costs a
 * resident daemon some 0.85 and 0.65 MB of memory, which a relay that offers no TLS, takes no AUTH and
 * has not yet signed or delivered anything does not need; the sendmail command needs them only to run
 * the queue (`-q`).
 *
 * Trusts Node's module loader; a module that cannot load throws at its first use, as the import would
 * have at start.
 */
import { createRequire } from 'node:module';
import type * as Crypto from 'node:crypto';
import type * as Tls from 'node:tls';

const load = createRequire(import.meta.url);
let tls: typeof Tls | undefined;
let crypto: typeof Crypto | undefined;

/** node:tls, loaded once. */
export function tlsModule(): typeof Tls {
  tls ??= load('node:tls') as typeof Tls;
  return tls;
}

/** node:crypto, loaded once. */
export function cryptoModule(): typeof Crypto {
  crypto ??= load('node:crypto') as typeof Crypto;
  return crypto;
}
