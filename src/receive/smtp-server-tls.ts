/**
 * What the bundle gives smtp-server for its `import tls from 'node:tls'` (scripts/bundle.js): the two
 * members it uses, createSecureContext() and the TLSSocket class, each loading node:tls on first touch
 * (src/lazy-node.ts). A server that offers no TLS makes no TLS context (FerryServer), so node:tls is
 * never loaded for it.
 *
 * Trusts smtp-server to use no other member; one it used would be undefined and fail its test at once.
 */
import type * as Tls from 'node:tls';
import { tlsModule } from '../lazy-node.js';

export default {
  createSecureContext: (options?: Tls.SecureContextOptions): Tls.SecureContext =>
    tlsModule().createSecureContext(options),
  get TLSSocket(): typeof Tls.TLSSocket {
    return tlsModule().TLSSocket;
  },
};
