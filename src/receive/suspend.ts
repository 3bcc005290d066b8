/**
 * Suspension of authenticated users whose mail keeps being refused: each refusal (reject or defer) a
 * hook gives a logged-in user's transaction at MAIL, RCPT, DATA or the end of data (a rate limit, a
 * filter, a milter, a policy server) is a strike; submission.suspend_after strikes within
 * submission.suspend_window suspend the user until a person releases them (`ferrymail auth release`).
 * A suspended user's MAIL gets 550 5.7.1, the log says so, and postmaster gets a notice, once.
 *
 * The list lives in the spool (SPOOL/suspended, JSON, 0600), written whole and renamed into place, so
 * that a restart keeps it and the command line can change it; the daemon reads it again when its
 * modification time changes. Strikes are counted in memory (a restart forgets them). A hook's own
 * failure (a throw, a timeout) is no strike: it is not the user's doing. Trusts the spool; a list that
 * cannot be read counts as empty, with a log line, and one that cannot be written leaves the user
 * suspended in memory until the daemon stops.
 */
import { randomBytes } from '../random.js';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.js';
import { stampOfFile } from '../spool/envelope-file.js';
import { newRecipient, type Envelope } from '../domain/envelope.js';
import type { Logger } from '../log/logger.js';
import type { SpoolWriter } from '../spool/writer.js';
import type { Hook, HookEntry, Hooks, SessionFacts, StageInput, Verdict } from './stages.js';

/** One suspended user: since when and why. */
export interface Suspension {
  since: string;
  reason: string;
}

/** The suspended users by login name. */
export type SuspendedList = Record<string, Suspension>;

/** Sets a user's entry as an own property (the list has no prototype: any name is a user). */
export function setSuspension(list: SuspendedList, user: string, s: Suspension): void {
  Object.defineProperty(list, user, { value: s, enumerable: true, writable: true, configurable: true });
}

/** The list's file in a spool. */
export function suspendedFile(spool: string): string {
  return path.join(spool, 'suspended');
}

/** Reads the list; an absent file is an empty list. Throws when it is there but not a list. */
export function readSuspended(file: string): SuspendedList {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  const data = JSON.parse(text) as unknown;
  if (!data || typeof data !== 'object' || Array.isArray(data)) throw new Error(`${file} holds no list of users`);
  // no prototype: a user named like an Object property (constructor, __proto__) is a user like any other
  const list: SuspendedList = Object.create(null);
  for (const [user, v] of Object.entries(data as Record<string, Partial<Suspension>>))
    if (v && typeof v.since === 'string' && typeof v.reason === 'string')
      setSuspension(list, user, { since: v.since, reason: v.reason });
  return list;
}

/** Writes the list whole: a new file (the spool owner's), synced, renamed over the old one. */
export function writeSuspended(file: string, list: SuspendedList): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  let written = false;
  try {
    fs.writeSync(fd, `${JSON.stringify(list, null, 2)}\n`);
    // written by root from the command line, it stays the spool owner's to read
    if (process.geteuid?.() === 0) {
      const dir = fs.statSync(path.dirname(file));
      fs.fchownSync(fd, dir.uid, dir.gid);
    }
    fs.fsyncSync(fd);
    written = true;
  } finally {
    fs.closeSync(fd);
    if (!written) fs.rmSync(tmp, { force: true });
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** What a Suspensions tells the daemon. */
export interface SuspendEvents {
  /** A user was just suspended (the list is written when this is called, if it could be). */
  suspended(user: string, reason: string, strikes: string[]): void;
  /** The list could not be read or written. */
  trouble(text: string): void;
}

/** The strikes of each user and the list of suspended users. */
export class Suspensions {
  private readonly strikes = new Map<string, Array<{ at: number; why: string }>>();
  private list: SuspendedList = {};
  /** The list file's identity when last read: '' for none yet, 'none' while there is no file. */
  private seen = '';

  constructor(
    private readonly file: string,
    private readonly after: number,
    private readonly windowMs: number,
    private readonly events: SuspendEvents,
  ) {}

  /** The user's suspension, if any (the list read again when its file changed). */
  suspended(user: string): Suspension | undefined {
    this.refresh();
    return Object.hasOwn(this.list, user) ? this.list[user] : undefined;
  }

  /** Counts a refusal against a user; suspends them at the limit. */
  strike(user: string, why: string, now = Date.now()): void {
    if (this.suspended(user)) return;
    const kept = (this.strikes.get(user) ?? []).filter((s) => now - s.at < this.windowMs);
    kept.push({ at: now, why });
    this.strikes.set(user, kept);
    if (kept.length < this.after) return;
    this.strikes.delete(user);
    const reason = `${kept.length} refusals within ${Math.round(this.windowMs / 1000)} s, the last: ${why}`;
    const next: SuspendedList = Object.create(null);
    Object.assign(next, this.list);
    setSuspension(next, user, { since: new Date(now).toISOString(), reason });
    this.list = next;
    try {
      writeSuspended(this.file, this.list);
      this.seen = stampOf(this.file);
    } catch (err) {
      this.events.trouble(`the list of suspended users was not written: ${(err as Error).message}`);
    }
    this.events.suspended(
      user,
      reason,
      kept.map((s) => s.why),
    );
  }

  /** Reads the list again when its file changed (another file renamed over it, or its content). */
  private refresh(): void {
    const now = stampOf(this.file);
    if (now === this.seen) return;
    this.seen = now;
    try {
      this.list = now !== 'none' ? readSuspended(this.file) : {};
    } catch (err) {
      this.events.trouble(`the list of suspended users was not read: ${(err as Error).message}`);
    }
  }
}

/**
 * The identity of the list file: inode, size and times, or 'none'. The modification time alone is not
 * enough: the clock that stamps it moves in steps of some milliseconds, so two writes within one step
 * (the command line's right after the daemon's) looked unchanged. Every write renames a new file over
 * the list, so its inode changes.
 */
function stampOf(file: string): string {
  try {
    return stampOfFile(file) ?? 'none';
  } catch {
    return 'none'; // a list that cannot be looked at suspends no one, as before
  }
}

/** The stages at which a refusal is a strike. */
const COUNTED = ['mail', 'rcpt', 'data', 'data_end'] as const;

/** The hooks with each refusal of a logged-in user at a counted stage reported to strike(). */
export function withStrikes(hooks: Hooks, strike: (user: string, why: string) => void): Hooks {
  const out: Hooks = { ...hooks };
  for (const stage of COUNTED) {
    const list = hooks[stage];
    if (!list?.length) continue;
    out[stage] = list.map((h) => {
      const e: HookEntry | undefined = typeof h === 'function' ? undefined : h;
      const run: Hook = e ? e.run : (h as Hook);
      const counted: Hook = async (s: SessionFacts, input: StageInput) => {
        const v = (await run(s, input)) as Verdict | undefined;
        if (s.user && (v?.action === 'reject' || v?.action === 'defer') && v.reply)
          strike(s.user, `${e?.name ?? 'a hook'} at ${input.stage}: ${v.reply.code} ${v.reply.text}`);
        return v as Verdict;
      };
      return e ? { ...e, run: counted } : counted;
    });
  }
  return out;
}

/** The notice for postmaster: an RFC 5322 message from MAILER-DAEMON. */
export function suspensionNotice(hostname: string, user: string, reason: string, strikes: string[], now: Date): string {
  const clean = (t: string): string => t.replace(/[\x00-\x1f\x7f]/g, ' ');
  return [
    `From: Mail Delivery System <MAILER-DAEMON@${hostname}>`,
    `To: postmaster@${hostname}`,
    `Subject: ferrymail: user ${clean(user)} suspended`,
    `Date: ${now.toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <suspended.${now.getTime()}.${process.pid}@${hostname}>`,
    'Auto-Submitted: auto-generated',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    `The user ${clean(user)} may send no more mail through ${hostname}: their mail was refused`,
    `${strikes.length} times within the configured window (submission.suspend_after).`,
    '',
    ...strikes.map((s) => `  - ${clean(s)}`),
    '',
    `Reason recorded: ${clean(reason)}`,
    '',
    'When the cause is dealt with (a stolen password changed, a program fixed), release them:',
    '',
    `  ferrymail auth release ${clean(user)}`,
    '',
  ].join('\r\n');
}

/** The daemon's suspensions, when submission.suspend_after is set: strikes logged, each suspension
 * logged and told to postmaster by a message queued in the spool. */
export function suspensionsFor(
  cfg: Config,
  spool: SpoolWriter,
  log: Logger,
  onMessage?: (env: Envelope) => void,
): Suspensions | undefined {
  if (!cfg.submission.suspend_after) return undefined;
  const queueNotice = async (text: string): Promise<void> => {
    const w = await spool.begin();
    w.stream.end(Buffer.from(text, 'utf8'));
    const env = await w.commit({
      version: 1,
      arrival: new Date().toISOString(),
      sender: '',
      recipients: [newRecipient(`postmaster@${cfg.hostname}`)],
      origin: { door: 'sendmail', user: 'MAILER-DAEMON' },
      protocol: 'local',
    });
    onMessage?.(env);
  };
  return new Suspensions(suspendedFile(cfg.spool), cfg.submission.suspend_after, cfg.submission.suspend_window * 1000, {
    suspended(user, reason, strikes) {
      log.log('warn', 'user suspended', { user, reason });
      queueNotice(suspensionNotice(cfg.hostname, user, reason, strikes, new Date())).then(
        () => log.log('info', 'suspension notice queued', { user, to: `<postmaster@${cfg.hostname}>` }),
        (err: Error) => log.log('error', 'suspension notice not queued', { user, error: err.message }),
      );
    },
    trouble: (text) => log.log('error', text),
  });
}
