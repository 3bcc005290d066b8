/**
 * `ferrymail watch`: what the daemon does, one line per event as it happens (the connection as it changes
 * and why, each message queued, each delivery and its outcome), in colour on a terminal, or as JSON lines
 * with --json for a status bar. `ferrymail status --short`: one line for a prompt or a bar.
 *
 * Everything shown comes from the daemon's control socket; text from peers (replies) and addresses is
 * shown with control characters replaced. Exits 69 when no daemon runs (with --retry it waits for one,
 * and comes back when the daemon restarts); a daemon that stops ends the watch with exit 0.
 */
import net from 'node:net';
import type { Config } from '../config/types.js';
import type { DaemonStatus } from '../control/protocol.js';
import type { FeedEvent } from '../daemon/events.js';
import type { OnlineState } from '../domain/online.js';
import { EX } from '../domain/sysexits.js';
import { FerryError } from '../errors.js';
import { layoutOf } from '../spool/layout.js';
import { safe } from './queue-view.js';

/** Colours by what an event means. */
const COLOURS = { good: '32', wait: '33', bad: '31', info: '36', dim: '2' } as const;
type Tone = keyof typeof COLOURS;

/** A byte count for people. */
function size(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`;
}

/** The online state in a few words. */
export function stateWords(s: OnlineState | null | undefined): string {
  if (!s) return 'state not yet known';
  return s.online ? `online ${safe(s.connection ?? '')}` : `offline${s.why ? ` (${safe(s.why)})` : ''}`;
}

/** One event as a line of text, with how it should look. */
export function eventLine(e: FeedEvent): { tone: Tone; text: string } {
  const time = e.at.slice(11, 19);
  const to = (list: string[]): string => list.map((a) => `<${safe(a)}>`).join(' ');
  const why = (r?: string): string => (r ? `: ${safe(r)}` : '');
  const by = (route?: string): string => (route ? ` by ${safe(route)}` : '');
  switch (e.kind) {
    case 'online': {
      const what = [e.online ? safe(e.connection ?? '') : '', e.why ? `(${safe(e.why)})` : ''].filter(Boolean);
      return {
        tone: e.online ? 'info' : 'wait',
        text: `${time} ${e.online ? 'online  ' : 'offline '} ${what.join(' ')}`,
      };
    }
    case 'queued':
      return {
        tone: 'dim',
        text: `${time} queued   ${e.id} from <${safe(e.sender)}> to ${to(e.recipients)} (${size(e.size)}, ${e.door})`,
      };
    case 'delivering':
      return { tone: 'dim', text: `${time} sending  ${e.id} to ${to(e.recipients)}${by(e.route)}` };
    case 'delivered':
      return { tone: 'good', text: `${time} sent     ${e.id} to ${to(e.recipients)}${by(e.route)}${why(e.reply)}` };
    case 'deferred':
      return { tone: 'wait', text: `${time} deferred ${e.id} to ${to(e.recipients)}${by(e.route)}${why(e.reply)}` };
    case 'uncertain':
      return { tone: 'bad', text: `${time} unsure   ${e.id} to ${to(e.recipients)}${by(e.route)}${why(e.reply)}` };
    case 'bounced':
      return { tone: 'bad', text: `${time} bounced  ${e.id} to ${to(e.recipients)}${by(e.route)}${why(e.reply)}` };
  }
}

/** The one line of status --short. */
export function shortStatus(
  running: boolean,
  online: OnlineState | null | undefined,
  queued: number,
  held: number,
): string {
  const parts = [running ? stateWords(online) : `not running, ${stateWords(online)}`, `${queued} queued`];
  if (held) parts.push(`${held} held`);
  return parts.join(' · ');
}

/** Follows the daemon's feed until it ends; resolves with how: 'ended' (the daemon went) or 'none'. */
function follow(
  socket: string,
  onStatus: (s: DaemonStatus) => void,
  onEvent: (e: FeedEvent) => void,
): Promise<'ended' | 'none'> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socket);
    let buf = '';
    let first = true;
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify({ cmd: 'watch' })}\n`));
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          sock.destroy();
          return reject(new FerryError('control', 'the daemon sent something that is not JSON'));
        }
        if (first) {
          first = false;
          const m = msg as { ok: boolean; status?: DaemonStatus; error?: string };
          if (!m.ok || !m.status) {
            sock.destroy();
            return reject(new FerryError('control', m.error ?? 'the daemon did not start the watch'));
          }
          onStatus(m.status);
        } else onEvent(msg as FeedEvent);
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (first && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED')) resolve('none');
      else if (first) reject(new FerryError('control', `cannot reach the daemon: ${err.code ?? err.message}`));
    });
    sock.on('close', () => resolve(first ? 'none' : 'ended'));
  });
}

/** ferrymail watch. */
export async function watchCommand(
  cfg: Config,
  o: { json?: boolean; retry?: boolean; colour?: boolean },
  out: (s: string) => void,
): Promise<number> {
  const socket = layoutOf(cfg.spool).control;
  const paint = (tone: Tone, text: string): string => (o.colour ? `\x1b[${COLOURS[tone]}m${text}\x1b[0m` : text);
  const line = (v: unknown): void => out(`${JSON.stringify(v)}\n`);
  for (;;) {
    const how = await follow(
      socket,
      (s) => {
        if (o.json)
          line({
            at: new Date().toISOString(),
            kind: 'status',
            online: s.online,
            queued: s.queued,
            held: s.held,
            pid: s.pid,
          });
        else
          out(paint('info', `watching the daemon (pid ${s.pid}): ${shortStatus(true, s.online, s.queued, s.held)}\n`));
      },
      (e) => {
        if (o.json) return line(e);
        const { tone, text } = eventLine(e);
        out(`${paint(tone, text)}\n`);
      },
    );
    if (!o.retry) {
      if (how === 'none') throw new FerryError('control', 'no daemon runs: nothing to watch (--retry waits for one)');
      if (o.json) line({ at: new Date().toISOString(), kind: 'stopped' });
      else out(paint('wait', 'the daemon stopped\n'));
      return EX.OK;
    }
    if (how === 'ended') {
      if (o.json) line({ at: new Date().toISOString(), kind: 'stopped' });
      else out(paint('wait', 'the daemon stopped; waiting for it\n'));
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
