/**
 * What the bundle gives smtp-server for its own `./tls-options.js` (scripts/bundle.js). That module
 * computes its defaults when it loads, a hash among them, which would load node:crypto at the daemon's
 * start; only a server that offers TLS asks for them (FerryServer). Here the same module is reached
 * through require(), which esbuild bundles as a module that runs at its first require, not at start:
 * it is in the bundle, so the bundle needs no installed smtp-server at run time.
 *
 * Trusts smtp-server's module (the version package.json pins). Used only by the bundle: the unbundled
 * build's smtp-server imports its own.
 */

type TlsOptions = (opts?: object) => object;
let real: TlsOptions | undefined;

/** smtp-server's TLS options: its defaults with opts over them. */
export default function getTLSOptions(opts?: object): object {
  real ??= require('smtp-server/lib/tls-options.js') as TlsOptions;
  return real(opts);
}
