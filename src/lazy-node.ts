/**
 * node:tls, node:crypto, node:stream and node:net, each loaded at its first use instead of at start.
 * Loading the first two costs a resident daemon some 0.85 and 0.65 MB of memory, which a relay that
 * offers no TLS, takes no AUTH and has not yet signed or delivered anything does not need; the sendmail
 * command needs them only to run the queue (`-q`), and the last two not at all for a submission.
 *
 * Trusts Node's module loader; a module that cannot load throws at its first use, as the import would
 * have at start.
 */
import { createRequire } from 'node:module';
import type * as Crypto from 'node:crypto';
import type * as Tls from 'node:tls';
import type * as Stream from 'node:stream';
import type * as Net from 'node:net';

let required: NodeJS.Require | undefined;
/** require() of a built-in, made when first needed: making it (the module's URL, a require of its own)
 * took the sendmail command's start about a millisecond. */
const load = (id: string): unknown => (required ??= createRequire(import.meta.url))(id);
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

let stream: typeof Stream | undefined;

/** node:stream, loaded once: the sendmail command's submission reads and writes without it. */
export function streamModule(): typeof Stream {
  stream ??= load('node:stream') as typeof Stream;
  return stream;
}

let net: typeof Net | undefined;

/** node:net, loaded once (it loads node:stream): a submission by the sendmail command with no daemon to
 * tell takes no lock and opens no socket. */
export function netModule(): typeof Net {
  net ??= load('node:net') as typeof Net;
  return net;
}
