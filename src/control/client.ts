/**
 * Talks to a running daemon over its control socket.
 *
 * Resolves null when no daemon listens (no socket, or connection refused): callers then work on the spool
 * themselves. A daemon that answers garbage or not at all within the timeout is a FerryError (control).
 */
import fs from 'node:fs';
import { FerryError } from '../errors.js';
import type { ControlRequest, ControlResponse } from './protocol.js';

/** Sends one request; resolves with the answer, or null when no daemon runs. */
export async function callDaemon(
  socketPath: string,
  req: ControlRequest,
  timeoutMs = 10_000,
): Promise<ControlResponse | null> {
  if (!fs.existsSync(socketPath)) return null;
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let buf = '';
    let settled = false;
    const done = (err: Error | null, value?: ControlResponse | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value ?? null);
    };
    const timer = setTimeout(
      () => done(new FerryError('control', `the daemon did not answer within ${timeoutMs / 1000}s`)),
      timeoutMs,
    );
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        done(null, JSON.parse(buf.slice(0, nl)) as ControlResponse);
      } catch {
        done(new FerryError('control', 'the daemon answered something that is not JSON'));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') done(null, null);
      else done(new FerryError('control', `cannot reach the daemon: ${err.code ?? err.message}`));
    });
    sock.on('close', () => done(new FerryError('control', 'the daemon closed the connection without answering')));
  });
}

/** Tells the daemon about a new message without waiting for it (best effort, never throws); resolves
 * true when a daemon took the word, false when none listens. */
export async function kickDaemon(socketPath: string, id: string): Promise<boolean> {
  // no socket, no daemon: the sendmail command then does not even load the network code
  if (!fs.existsSync(socketPath)) return false;
  const net = await import('node:net');
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    const end = (reached: boolean): void => {
      sock.destroy();
      resolve(reached);
    };
    // a daemon too busy to answer in half a second still runs
    const timer = setTimeout(() => end(true), 500);
    sock.on('connect', () =>
      sock.end(`${JSON.stringify({ cmd: 'kick', id })}\n`, () => {
        clearTimeout(timer);
        end(true);
      }),
    );
    sock.on('error', () => {
      clearTimeout(timer);
      end(false);
    });
  });
}
