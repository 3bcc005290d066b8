/**
 * What a queue run does first, under the runner lock, about earlier runs that did not finish: outcomes a
 * full disk kept in memory are written (pending), and deliveries the in-flight journal says were being
 * handed over, with no outcome recorded after them, become uncertain (the message may have arrived), as
 * the route that was carrying them says: retried once with a warning, or held for a person. Nothing is
 * ever sent again as if it had not been sent.
 *
 * Trusts the journal only as far as it parses; envelopes are re-read under their locks. A message that
 * cannot be updated now keeps its journal notes for the next run.
 */
import type { Envelope, Recipient } from '../domain/envelope.js';
import { isFinal } from '../domain/outcome.js';
import type { Logger } from '../log/logger.js';
import type { Route } from '../route/types.js';
import { journalled, type InflightNote } from '../spool/inflight.js';
import { withReserve } from '../spool/space.js';
import type { Store } from '../spool/store.js';

/** Outcomes recorded in memory because the envelope could not be written (a full disk), by spool. */
const pendingBySpool = new Map<string, Map<string, Envelope>>();

/** The outcomes of a spool still waiting to be written. */
export function pendingOf(root: string): Map<string, Envelope> {
  let m = pendingBySpool.get(root);
  if (!m) pendingBySpool.set(root, (m = new Map()));
  return m;
}

/** Writes the outcomes kept in memory; those that still cannot be written stay. */
export async function writePending(store: Store, log: Logger): Promise<void> {
  const pending = pendingOf(store.layout.root);
  for (const [id, env] of pending) {
    const l = await store.lockMessage(id, 0).catch(() => null);
    if (!l) continue;
    try {
      if (env.recipients.every((r) => isFinal(r.state))) await store.removeLocked(id);
      else await withReserve(store.layout, () => store.update(env, 'queue'));
      pending.delete(id);
      log.log('info', `${id} outcome kept in memory is now written`);
    } catch {
      /* still no room: the next run tries again */
    } finally {
      await l.release();
    }
  }
}

/** Asks whether a delivery a transport recorded (a note's `local` detail) happened: delivered, absent,
 * repaired (half of it was found and cut away: not delivered), or unknown. */
export type Verify = (detail: Record<string, unknown>) => Promise<string>;

/** What settling found: whether the journal may be cleared, and the messages whose notes could not be
 * settled now (busy, no room), which this run must leave alone: delivering one would take the note that
 * says it may already have arrived for an ordinary first try. */
export interface Settled {
  clean: boolean;
  unsettled: Set<string>;
}

/** Settles every delivery the journal left in flight. */
export async function settleInflight(
  store: Store,
  routes: readonly Route[],
  log: Logger,
  now = Date.now(),
  verify?: Verify,
): Promise<Settled> {
  const pending = pendingOf(store.layout.root);
  const unsettled = new Set<string>();
  for (const [id, notes] of byMessage(journalled(store.layout))) {
    if (pending.has(id)) continue; // its outcome is known here, and written later
    if (!(await settleMessage(store, routes, log, id, notes, now, verify))) unsettled.add(id);
  }
  return { clean: pending.size === 0 && unsettled.size === 0, unsettled };
}

/** The journal's notes grouped by message. */
function byMessage(notes: InflightNote[]): Map<string, InflightNote[]> {
  const m = new Map<string, InflightNote[]>();
  for (const n of notes) m.set(n.id, [...(m.get(n.id) ?? []), n]);
  return m;
}

/** Settles one message's notes; false when it could not be done now (busy, no room). */
async function settleMessage(
  store: Store,
  routes: readonly Route[],
  log: Logger,
  id: string,
  notes: InflightNote[],
  now: number,
  verify?: Verify,
): Promise<boolean> {
  const l = await store.lockMessage(id, 2000).catch(() => null);
  if (!l) return false;
  try {
    const entry = await store.get(id).catch(() => null);
    if (!entry) return true; // gone: delivered and removed, or removed by a person
    const env = entry.envelope;
    const checked = await checkRecorded(env, notes, log, now, verify);
    const changed = notes
      .flatMap((n) =>
        n.addresses.filter((a) => !checked.has(a.toLowerCase())).map((a) => settleRecipient(env, a, n, routes, now)),
      )
      .filter((r): r is Recipient => !!r);
    if (!changed.length && !checked.size) return true;
    if (env.recipients.every((r) => isFinal(r.state))) await store.removeLocked(id);
    else await withReserve(store.layout, () => store.update(env, entry.place));
    for (const r of changed)
      log.log('warn', `${id} ${r.state === 'uncertain' ? HELD : RETRY}`, { to: `<${r.address}>`, route: r.route });
    return true;
  } catch (err) {
    log.log('error', `${id} an interrupted delivery could not be recorded as uncertain now; tried again next run`, {
      error: (err as Error).message,
    });
    return false;
  } finally {
    await l.release();
  }
}

/**
 * Settles the recipients whose transport recorded how to check the delivery (the local transport): found
 * whole, the recipient is delivered; not there (or cut back), it is tried again as if the run had not
 * begun; unknown, it is left to the uncertain handling. Returns the addresses settled here.
 */
async function checkRecorded(
  env: Envelope,
  notes: InflightNote[],
  log: Logger,
  now: number,
  verify?: Verify,
): Promise<Set<string>> {
  const done = new Set<string>();
  for (const n of notes) {
    if (!n.local || !verify) continue;
    const address = n.addresses[0]!;
    const r = env.recipients.find((x) => x.address.toLowerCase() === address.toLowerCase());
    if (!r || isFinal(r.state) || r.state === 'uncertain' || outcomeWritten(r, n, address)) {
      done.add(address.toLowerCase());
      continue;
    }
    const found = await verify(n.local);
    if (found === 'unknown') continue;
    done.add(address.toLowerCase());
    if (found === 'delivered') {
      r.state = 'delivered';
      r.attempts++;
      r.lastAttempt = new Date(now).toISOString();
      r.route = n.route;
      delete r.nextAttempt;
      delete r.lastError;
      log.log('delivered', env.id, {
        to: `<${r.address}>`,
        route: n.route,
        status: '250 2.0.0 found delivered after the queue run that made it stopped',
      });
    } else
      log.log(
        'info',
        `${env.id} a queue run stopped before this delivery was made${found === 'repaired' ? ' (its half-written copy was removed)' : ''}; it is made again`,
        {
          to: `<${r.address}>`,
          route: n.route,
        },
      );
  }
  return done;
}

const HELD =
  'delivery uncertain: a queue run stopped after handing the message over (it may have arrived): held for a decision; ferrymail queue release retries, queue rm drops';
const RETRY =
  'delivery uncertain: a queue run stopped after handing the message over (it may have arrived): retrying once, so the recipient may get it twice';

/** Whether the envelope recorded an attempt after the note: by the attempts count the note carries (a
 * clock set back cannot fool it), or by time for notes of older versions. */
function outcomeWritten(r: Recipient, note: InflightNote, address: string): boolean {
  const i = note.addresses.indexOf(address);
  if (note.attempts && i >= 0) return r.attempts > note.attempts[i]!;
  return !!r.lastAttempt && Date.parse(r.lastAttempt) >= note.t;
}

/** Makes one recipient uncertain when the note is newer than its last recorded attempt; the changed
 * recipient, or null when there was nothing to settle. */
function settleRecipient(
  env: Envelope,
  address: string,
  note: InflightNote,
  routes: readonly Route[],
  now: number,
): Recipient | null {
  const r = env.recipients.find((x) => x.address.toLowerCase() === address.toLowerCase());
  if (!r || isFinal(r.state) || r.state === 'uncertain') return null;
  if (outcomeWritten(r, note, address)) return null;
  const setting = routes.find((x) => x.name === note.route)?.uncertain ?? 'hold';
  r.attempts++;
  r.uncertain = (r.uncertain ?? 0) + 1;
  r.lastAttempt = new Date(now).toISOString();
  r.route = note.route;
  const why = `uncertain: 451 4.4.2 the queue run stopped after handing the message over by route ${note.route}; it may have been delivered`;
  r.lastError = why;
  if (setting !== 'hold' && r.uncertain === 1) {
    r.state = 'deferred';
    delete r.nextAttempt;
  } else {
    r.state = 'uncertain';
    delete r.nextAttempt;
  }
  return r;
}
