/**
 * The daemon's side of the control socket: answers status, queue changes and kicks from the CLI.
 *
 * Requests come from the daemon's own user (the socket is 0600 inside the owner-only spool) but are still
 * parsed defensively: a malformed line gets an error answer, never a crash. Queue changes go through the
 * spool store, under the same per-message locks a manual run uses.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { ControlRequest, ControlResponse, DaemonStatus, FlushReport } from '../control/protocol.js';
import { isFerryError } from '../errors.js';
import { checkLayout } from '../spool/layout.js';
import { applyChange, type Store } from '../spool/store.js';
import type { EventFeed } from './events.js';

/** Bytes a watcher may fall behind before it is dropped. */
const WATCH_BACKLOG = 1 << 20;

/** What the control server needs from the daemon. */
export interface ControlDeps {
  store: Store;
  status(): Promise<DaemonStatus>;
  onKick(id: string): void;
  /** Asks for a queue run soon (a message was released). */
  runSoon(): void;
  /** Reads the configuration again; false when it was refused (the log says why). */
  reload(): Promise<boolean>;
  /** Looks at the network again (a network tool's hook said something changed). */
  recheck(why: string): void;
  /** The events that `watch` streams. */
  feed?: EventFeed;
  /** One queue run; resolves with what it did. */
  flush(connection?: string, route?: string): Promise<FlushReport>;
}

/** Answers one request. */
async function answer(deps: ControlDeps, req: ControlRequest): Promise<ControlResponse> {
  switch (req.cmd) {
    case 'status':
      return { ok: true, status: await deps.status() };
    case 'kick':
      deps.onKick(String(req.id));
      return { ok: true };
    case 'rm':
    case 'hold':
    case 'release': {
      if (!Array.isArray(req.ids)) return { ok: false, error: 'ids must be a list' };
      // a spool changed since the daemon's start (its modes, its owner) is refused here as it is by a
      // command that finds no daemon: thrown, it is answered with its code (config)
      checkLayout(deps.store.layout);
      const results = await applyChange(deps.store, req.cmd, req.ids.map(String));
      // a released message is tried now, not at the next minute's run
      if (req.cmd === 'release' && results.some((r) => r.ok)) deps.runSoon();
      return { ok: true, results };
    }
    case 'reload':
      return (await deps.reload())
        ? { ok: true }
        : {
            ok: false,
            error:
              'the configuration has problems and was not reloaded (the daemon log and ferrymail config check say which)',
            code: 'config',
          };
    case 'recheck':
      deps.recheck(typeof req.why === 'string' ? req.why.slice(0, 200) : '');
      return { ok: true };
    case 'flush': {
      const report = await deps.flush(
        typeof req.connection === 'string' ? req.connection : undefined,
        typeof req.route === 'string' ? req.route : undefined,
      );
      return { ok: true, report };
    }
    default:
      return { ok: false, error: `unknown command ${JSON.stringify((req as { cmd?: unknown }).cmd)}` };
  }
}

/** Streams the feed to a watcher: an answer with the status first, then one JSON line per event, until
 * the watcher goes or falls too far behind. */
function watch(deps: ControlDeps, sock: net.Socket): void {
  if (!deps.feed) {
    sock.end(`${JSON.stringify({ ok: false, error: 'this daemon has no event feed' })}\n`);
    return;
  }
  const feed = deps.feed;
  deps.status().then(
    (status) => {
      if (!sock.writable) return;
      sock.write(`${JSON.stringify({ ok: true, status })}\n`);
      const off = feed.subscribe((e) => {
        if (!sock.writable || sock.writableLength > WATCH_BACKLOG) {
          sock.destroy();
          return false;
        }
        sock.write(`${JSON.stringify(e)}\n`);
        return true;
      });
      sock.once('close', off);
    },
    (err: Error) => sock.end(`${JSON.stringify({ ok: false, error: err.message })}\n`),
  );
}

/** Starts listening on the control socket (replacing a stale socket file). */
export function startControl(socketPath: string, deps: ControlDeps): Promise<net.Server> {
  fs.rmSync(socketPath, { force: true });
  const server = net.createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 1_000_000) return sock.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
        } catch {
          sock.write(`${JSON.stringify({ ok: false, error: 'request is not JSON' })}\n`);
          continue;
        }
        if (req?.cmd === 'watch') {
          // the socket is the watcher's from now on: what else it sends is not read
          sock.removeAllListeners('data');
          sock.resume();
          watch(deps, sock);
          return;
        }
        // a client that asks without reading its answers is not answered further until it does
        if (sock.writableLength > WATCH_BACKLOG) {
          sock.destroy();
          return;
        }
        answer(deps, req).then(
          (res) => sock.writable && sock.write(`${JSON.stringify(res)}\n`),
          (err: Error) =>
            sock.writable &&
            sock.write(
              `${JSON.stringify({ ok: false, error: err.message, code: isFerryError(err) ? err.code : undefined })}\n`,
            ),
        );
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const old = process.umask(0o177);
    server.listen(socketPath, () => {
      process.umask(old);
      fs.chmodSync(socketPath, 0o600);
      resolve(server);
    });
  });
}
