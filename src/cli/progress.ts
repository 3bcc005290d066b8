/**
 * A progress line for long work on a terminal (`ferrymail flush`): messages tried of those waiting, what
 * became of their recipients, and the rate, redrawn at most five times a second on standard error, so
 * that standard output keeps only the report. Events come from the run (a run made here) or from the
 * daemon's feed (a run made by the daemon). Does nothing when standard error is no terminal.
 */
import { netModule } from '../lazy-node.js';
import type { QueueEvent } from '../queue/observe.js';

const REDRAW_MS = 200;

/** Counts of a run so far. */
export interface Tally {
  messages: number;
  sent: number;
  deferred: number;
  bounced: number;
}

/** The progress line for a tally. */
export function progressLine(t: Tally, total: number, seconds: number): string {
  const rate = seconds > 0 ? Math.round(t.messages / seconds) : 0;
  const of = total > 0 ? ` of ${total}` : '';
  return `flush: ${t.messages}${of} messages tried · ${t.sent} sent, ${t.deferred} deferred, ${t.bounced} bounced · ${rate} msg/s`;
}

/** A progress line on a stream; feed it the run's events. */
export class Progress {
  private readonly ids = new Set<string>();
  private readonly tally: Tally = { messages: 0, sent: 0, deferred: 0, bounced: 0 };
  private readonly start = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private shown = false;

  constructor(
    private readonly total: number,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  /** Whether a line is drawn at all. */
  get active(): boolean {
    return !!this.stream.isTTY;
  }

  /** Counts one event. */
  event(e: Pick<QueueEvent, 'kind' | 'id' | 'recipients'>): void {
    if (e.kind === 'delivering') return;
    if (!this.ids.has(e.id)) {
      this.ids.add(e.id);
      this.tally.messages++;
    }
    const n = e.recipients.length || 1;
    if (e.kind === 'delivered') this.tally.sent += n;
    else if (e.kind === 'bounced') this.tally.bounced += n;
    else this.tally.deferred += n;
    if (this.active && !this.timer) this.timer = setTimeout(() => this.draw(), REDRAW_MS);
  }

  private draw(): void {
    this.timer = null;
    this.shown = true;
    const line = progressLine(this.tally, this.total, (Date.now() - this.start) / 1000);
    this.stream.write(`\r\x1b[K${line.slice(0, (this.stream.columns || 100) - 1)}`);
  }

  /** Clears the line (the report follows on standard output). */
  end(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.shown) this.stream.write('\r\x1b[K');
  }
}

/** Follows the daemon's feed into a progress line until stop() (nothing when there is no terminal). */
export function followDaemon(socket: string, p: Progress): { stop(): void } {
  if (!p.active) return { stop: () => undefined };
  const sock = netModule().connect(socket);
  let buf = '';
  let first = true;
  sock.setEncoding('utf8');
  sock.on('error', () => undefined);
  sock.on('connect', () => sock.write(`${JSON.stringify({ cmd: 'watch' })}\n`));
  sock.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (first) {
        first = false;
        continue;
      }
      try {
        const e = JSON.parse(line) as QueueEvent;
        if (['delivered', 'deferred', 'bounced', 'uncertain'].includes(e.kind)) p.event(e);
      } catch {
        /* a line that is not an event: not counted */
      }
    }
  });
  return { stop: () => sock.destroy() };
}
