/**
 * What the bundle gives smtp-server for its own `./tls-options.js` (scripts/bundle.js). That module
 * computes its defaults when it loads, a hash among them, which loads node:crypto at the daemon's start;
 * only a server that offers TLS asks for them (FerryServer). Here smtp-server's module is loaded at that
 * first ask, from the installed package, and answers from then on.
 *
 * Trusts the installed smtp-server (the version package.json pins); one that cannot be loaded throws
 * where the TLS context is made, as the server's construction would have.
 */
import { createRequire } from 'node:module';

type TlsOptions = (opts?: object) => object;
let real: TlsOptions | undefined;

/** smtp-server's TLS options: its defaults with opts over them. */
export default function getTLSOptions(opts?: object): object {
  real ??= createRequire(import.meta.url)('smtp-server/lib/tls-options.js') as TlsOptions;
  return real(opts);
}
