/**
 * What a queue run needs to know of every queued message before it opens one: its id, its arrival and, for
 * each recipient, the address, state, next attempt, last error, delay warnings and local target (a
 * "brief"). The briefs are
 * kept in memory between the runs of one process (the daemon's runs every minute), and used again as long
 * as queue/ has not changed since they were read: every change of a queued message (a new one, an update,
 * a hold, a removal) is a rename or an unlink in queue/, which moves the directory's change time. So a run
 * with 100,000 messages waiting offline reads one directory's status instead of 100,000 envelopes.
 *
 * Trusts the directory times the kernel keeps. A listing taken less than two seconds after the last change
 * of queue/ is not used again (a change in the same clock tick would not move the time), nor one older than
 * REREAD_MS (an envelope edited in place by hand moves no directory time). Fails like the store's reads.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Envelope, Recipient } from '../domain/envelope.js';
import { readStamped } from './envelope-file.js';
import type { Layout } from './layout.js';

/** A recipient as a queue run decides on it, without what only delivery needs. */
export type BriefRecipient = Pick<
  Recipient,
  'address' | 'state' | 'attempts' | 'nextAttempt' | 'lastError' | 'local' | 'warned'
>;

/** A queued message as a queue run decides on it. */
export interface Brief {
  id: string;
  arrival: string;
  recipients: BriefRecipient[];
}

/** The briefs of one spool's queue/ as last read by this process. */
interface Kept {
  stamp: string;
  /** When the listing was taken (ms). */
  at: number;
  /** Taken too soon after a change of queue/ to be sure of the next one. */
  racy: boolean;
  briefs: Brief[];
}

/** A full read at least this often, whatever the directory says. */
const REREAD_MS = 30 * 60_000;
const RACY_MS = 2000;

const kept = new Map<string, Kept>();

/** The status of a spool folder that any rename or unlink in it moves, and whether it is too recent to
 * be sure of (a change in the same clock tick would not move it again); null when the folder is gone. */
export function dirStamp(dir: string, now = Date.now()): { stamp: string; racy: boolean } | null {
  const st = fs.statSync(dir, { bigint: true, throwIfNoEntry: false });
  if (!st) return null;
  // the later of the two times: utimes (rsync, tar) can set the modification time back, not the change time
  const last = Math.max(Number(st.mtimeNs / 1_000_000n), Number(st.ctimeNs / 1_000_000n));
  return {
    stamp: `${st.dev}:${st.ino}:${st.mtimeNs}:${st.ctimeNs}`,
    racy: now - last < RACY_MS,
  };
}

/** The brief of an envelope. */
export function briefOf(env: Pick<Envelope, 'id' | 'arrival' | 'recipients'>): Brief {
  return {
    id: env.id,
    arrival: env.arrival,
    recipients: env.recipients.map(({ address, state, attempts, nextAttempt, lastError, local, warned }) => ({
      address,
      state,
      attempts,
      nextAttempt,
      lastError,
      local,
      warned,
    })),
  };
}

/** The briefs kept from an earlier listing, when queue/ has not changed since; else null (read anew). */
export function keptBriefs(layout: Layout, now = Date.now()): Brief[] | null {
  const k = kept.get(layout.root);
  if (!k || k.racy || now - k.at > REREAD_MS) return null;
  return dirStamp(layout.dir('queue'))?.stamp === k.stamp ? k.briefs : null;
}

/** Starts a new listing: the directory's status before anything is read, to keep with the briefs. */
export function beginListing(layout: Layout, now = Date.now()): (briefs: Brief[]) => void {
  const s = dirStamp(layout.dir('queue'), now);
  return (briefs) => {
    if (!s) return void kept.delete(layout.root);
    kept.set(layout.root, { stamp: s.stamp, at: now, racy: s.racy, briefs });
  };
}

/** Forgets what this process knows of the spool's queue (a test, or a change it made itself). */
export function forgetBriefs(layout: Layout): void {
  kept.delete(layout.root);
}

/** The stamps of queue/ and hold/ (a folder not there yet: "none"), or null when one is too recent. */
export function countStamps(layout: Layout, now = Date.now()): { queue: string; hold: string } | null {
  const q = dirStamp(layout.dir('queue'), now);
  const h = dirStamp(layout.dir('hold'), now);
  if (q?.racy || h?.racy) return null;
  return { queue: q?.stamp ?? 'none', hold: h?.stamp ?? 'none' };
}

/**
 * The message counts saved in the spool's `counts` file (saveCounts) when queue/ and hold/ have not
 * changed since they were counted; else null (count anew). A command without a daemon (`status`) then
 * reads two folder stamps and a small file instead of 100,000 names.
 */
export function savedCounts(layout: Layout, at = Date.now()): { queued: number; held: number } | null {
  const now = countStamps(layout, at);
  if (!now) return null;
  try {
    const c = JSON.parse(readStamped(path.join(layout.root, 'counts')).text) as Record<string, unknown>;
    const fine = (n: unknown): n is number => Number.isSafeInteger(n) && (n as number) >= 0;
    if (c.queue !== now.queue || c.hold !== now.hold || !fine(c.queued) || !fine(c.held)) return null;
    return { queued: c.queued, held: c.held };
  } catch {
    return null;
  }
}

/**
 * Saves counts taken between two equal readings of the folders' stamps (`before`, taken before the
 * listing, at least RACY_MS after the last change): any later change moves a stamp and voids them.
 * Written to a new file in tmp/ (which recovery clears after a crash) renamed over the old one; only the
 * spool's owner saves (root looking at another user's spool writes nothing there).
 */
export function saveCounts(
  layout: Layout,
  before: { queue: string; hold: string },
  queued: number,
  held: number,
  now = Date.now(),
): void {
  const after = countStamps(layout, now);
  if (!after || after.queue !== before.queue || after.hold !== before.hold) return;
  if (fs.statSync(layout.root, { throwIfNoEntry: false })?.uid !== process.geteuid?.()) return;
  const file = path.join(layout.root, 'counts');
  const tmp = path.join(layout.dir('tmp'), `counts.${process.pid}.cnt`);
  try {
    fs.writeFileSync(tmp, JSON.stringify({ ...before, queued, held }), { mode: 0o600, flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
  }
}
