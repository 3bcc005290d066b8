/**
 * Desktop notifications for a relay that runs in a user's session (desktop.notify): one for each bounce,
 * and one when mail has waited longer than desktop.waiting_after (once per message), through the
 * freedesktop notification service by way of a command (notify-send by default).
 *
 * Reads the event feed and, once a minute, the names in queue/ (a queue id holds its arrival time: no
 * envelope is read). The command gets the summary and the body as arguments (no shell), with a clean
 * environment but for what a session's notification service needs (DISPLAY, WAYLAND_DISPLAY,
 * DBUS_SESSION_BUS_ADDRESS, XDG_RUNTIME_DIR). A command that fails is logged once; nothing here can stop
 * the daemon or a delivery.
 */
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import type { OnlineState } from '../domain/online.js';
import type { Logger } from '../log/logger.js';
import { runCommand } from '../proc/run.js';
import { idTime, isId } from '../spool/id.js';
import type { EventFeed } from './events.js';

const CHECK_MS = 60_000;

/** Replaces control characters, escapes markup (notification bodies are markup: a server's reply must
 * not become a link) and cuts text for a notification. */
function clean(s: string, max = 300): string {
  return s
    .replace(/[\x00-\x1f\x7f]/g, ' ')
    .slice(0, max)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;');
}

/** Bounces told at once, then gathered into one notification per this much time. */
const BOUNCE_GATHER_MS = 30_000;

/** The environment a notification command needs from the session, and no more. */
function sessionEnv(): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'DISPLAY', 'WAYLAND_DISPLAY', 'DBUS_SESSION_BUS_ADDRESS', 'XDG_RUNTIME_DIR', 'LANG'];
  return Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
}

/** The waiting mail to tell of now: ids past the age not told before (the told set is kept to what
 * is still queued). */
export function overdue(ids: string[], told: Set<string>, now: number, ageMs: number): string[] {
  const queued = new Set(ids);
  for (const id of told) if (!queued.has(id)) told.delete(id);
  return ids.filter((id) => isId(id) && now - idTime(id) > ageMs && !told.has(id));
}

/** Starts the notices; returns the function that stops them. */
export function startDesktopNotices(
  cfg: Config,
  feed: EventFeed,
  queueDir: string,
  log: Logger,
  state: () => OnlineState | null,
): () => void {
  if (!cfg.desktop.notify || !cfg.desktop.command.length) return () => undefined;
  let failed = false;
  const tell = (summary: string, body: string, critical = false): void => {
    const argv = [
      ...cfg.desktop.command,
      ...(critical ? ['--urgency=critical'] : []),
      clean(summary, 100),
      clean(body),
    ];
    void runCommand(argv, { env: sessionEnv(), timeoutMs: 10_000, capture: { stdout: false, stderr: true } }).then(
      (r) => {
        if (r.code === 0 || failed) return;
        failed = true;
        log.log('warn', 'desktop notification failed', {
          command: argv[0],
          error: r.error ?? (r.stderr.trim() || `exit ${r.code}`),
        });
      },
    );
  };
  // the first bounce is told at once; more within the next half minute come as one notification
  let gathering: NodeJS.Timeout | null = null;
  let gathered: string[] = [];
  const off = feed.subscribe((e) => {
    if (e.kind !== 'bounced') return true;
    const what = `to ${e.recipients.join(', ')}: ${e.reply ?? 'refused'}`;
    if (!gathering) {
      tell('Mail could not be delivered', what, true);
      gathering = setTimeout(() => {
        gathering = null;
        if (gathered.length)
          tell(`${gathered.length} more messages could not be delivered`, `${gathered[0]} (ferrymail watch)`, true);
        gathered = [];
      }, BOUNCE_GATHER_MS);
      gathering.unref();
    } else gathered.push(what);
    return true;
  });
  const told = new Set<string>();
  const ageMs = cfg.desktop.waiting_after * 1000;
  const check = (): void => {
    let ids: string[];
    try {
      ids = fs.readdirSync(queueDir);
    } catch {
      return;
    }
    const late = overdue(ids, told, Date.now(), ageMs);
    if (!late.length) return;
    for (const id of late) told.add(id);
    const s = state();
    const why = !s ? '' : s.online ? `online (${s.connection}), not yet delivered` : `offline: ${s.why ?? ''}`;
    const a = cfg.desktop.waiting_after;
    const hours = a >= 3600 ? `${Math.round(a / 360) / 10} h` : a >= 60 ? `${Math.round(a / 60)} min` : `${a} s`;
    tell(
      `${late.length} message${late.length === 1 ? '' : 's'} waiting for over ${hours}`,
      `${why} (ferrymail queue list)`,
    );
  };
  const timer = ageMs > 0 ? setInterval(check, Math.min(CHECK_MS, Math.max(1000, ageMs / 2))) : null;
  timer?.unref();
  return () => {
    off();
    if (timer) clearInterval(timer);
    if (gathering) clearTimeout(gathering);
  };
}
