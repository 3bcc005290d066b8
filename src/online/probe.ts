/**
 * A rule's probe: can a TCP connection to host:port (a route's own server) be opened within the timeout?
 * The connection is closed as soon as it is open; nothing is sent.
 *
 * The target comes from the validated configuration. Never throws: the answer is null (connected) or the
 * reason it failed (ECONNREFUSED, ENOTFOUND, "no answer within 2000 ms").
 */
import net from 'node:net';
import { splitHostPort } from '../domain/ip.js';

/** Connects to target; resolves with null when it answered, else the reason. */
export function probe(target: string, timeoutMs: number): Promise<string | null> {
  const hp = splitHostPort(target);
  if (!hp?.host) return Promise.resolve('not host:port');
  return new Promise((resolve) => {
    const sock = net.connect({ host: hp.host, port: hp.port });
    const done = (why: string | null): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    sock.once('connect', () => done(null));
    sock.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}
