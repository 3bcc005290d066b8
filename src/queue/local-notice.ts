/**
 * Local delivery of delivery status notices, for when the notice cannot leave this host: appended to an
 * mbox file (queue.notice_mailbox) and/or handed to a command (queue.notify_command, e.g. notify-send).
 *
 * The notice text holds untrusted peer replies: in the mbox, lines starting with "From " are escaped
 * (">From ", mboxrd) so a reply cannot start a message of its own; for the command it only ever becomes
 * whole argv elements (no shell) and stdin. The mbox gets one O_APPEND write per notice (whole messages,
 * never interleaved with another writer's), created 0600, never through a symbolic link. The command runs
 * with a clean environment and a timeout that kills its process group. Failures reject with a readable
 * reason; the runner logs them and goes on.
 */
import fs from 'node:fs';
import type { Notice } from './bounce.js';
import { fromLineOf } from '../transport/pipe.js';
import { runCommand } from '../proc/run.js';

/** Where notices go on this host. */
export interface LocalNoticeSettings {
  mailbox?: string;
  /** argv template: ${summary}, ${subject}, ${sender}, ${id} are filled in. */
  command: string[];
  timeoutMs?: number;
}

/** One mbox entry: From line, LF line ends, ">From" escaping (mboxrd), ending in a blank line. */
export function mboxEntry(text: string, now: Date): string {
  const body = text
    .replace(/\r\n/g, '\n')
    .replace(/\n$/, '')
    .split('\n')
    .map((l) => (/^>*From /.test(l) ? `>${l}` : l));
  return `${fromLineOf('', now)}${body.join('\n')}\n\n`;
}

/** Appends one notice to an mbox file with a single O_APPEND write. */
export async function appendMbox(file: string, notice: Notice, now = new Date()): Promise<void> {
  const flags = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW;
  const fh = await fs.promises.open(file, flags, 0o600);
  try {
    await fh.write(Buffer.from(mboxEntry(notice.text, now), 'utf8'));
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The environment of the command: PATH, and what a desktop notifier needs to find the session. */
function cleanEnv(): Record<string, string> {
  const env: Record<string, string> = { PATH: '/usr/local/bin:/usr/bin:/bin' };
  for (const k of ['HOME', 'DISPLAY', 'WAYLAND_DISPLAY', 'DBUS_SESSION_BUS_ADDRESS', 'XDG_RUNTIME_DIR']) {
    const v = process.env[k];
    if (v) env[k] = v;
  }
  return env;
}

/** Runs the notify command for one notice; resolves on exit 0, rejects with the reason otherwise. */
export async function runNotifyCommand(argvTemplate: string[], notice: Notice, timeoutMs = 10_000): Promise<void> {
  const vars: Record<string, string> = {
    summary: notice.summary,
    subject: notice.subject,
    sender: notice.recipient,
    id: notice.id,
  };
  const argv = argvTemplate.map((w) =>
    w.replace(/\$\{(summary|subject|sender|id)\}/g, (_m, k: string) => vars[k] ?? ''),
  );
  const r = await runCommand(argv, {
    env: cleanEnv(),
    timeoutMs,
    stdin: `${notice.subject}\n${notice.summary}\n`,
    maxOut: 1000,
    capture: { stdout: false },
  });
  if (r.code === 0 && !r.timedOut) return;
  const how = r.error ?? (r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`);
  const first = r.stderr.split('\n')[0];
  throw new Error(`notify_command ${argv[0]}: ${how}${first ? `: ${first}` : ''}`);
}

/** The local delivery for the runner, or undefined when nothing is configured. */
export function localNoticeDelivery(s: LocalNoticeSettings): ((n: Notice) => Promise<void>) | undefined {
  if (!s.mailbox && !s.command.length) return undefined;
  return async (n) => {
    const results = await Promise.allSettled([
      s.mailbox ? appendMbox(s.mailbox, n) : null,
      s.command.length ? runNotifyCommand(s.command, n, s.timeoutMs) : null,
    ]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length) throw new Error(failed.map((f) => (f.reason as Error).message).join('; '));
  };
}
