/**
 * How the queue is shown: the classic mailq listing, ferrymail's own listing, JSON for scripts, and the
 * detail view of one message.
 *
 * Input is envelopes from the spool (already checked by the codec). Addresses and errors may hold
 * peer-supplied text: control characters are escaped. Pure; cannot fail.
 */
import type { Envelope, Recipient } from '../domain/envelope.js';
import type { Entry } from '../spool/store.js';

/** Notes on why recipients wait, keyed by "ID ADDRESS" (queue-why.ts); empty when none was gathered. */
type Notes = ReadonlyMap<string, string>;
const NONE: Notes = new Map();

/** The note of one recipient. */
function noteOf(notes: Notes, id: string, r: Recipient): string | undefined {
  return notes.get(`${id} ${r.address}`);
}

/** Escapes control characters in text shown on a terminal. */
/** Replaces control characters, so that text from the spool cannot drive the terminal. */
export function safe(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, '?');
}

/** Human age: 42s, 5m, 3h, 2d. */
export function age(fromIso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(fromIso)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

/** Why a recipient is where it is, in one line (a reason to act on, or nothing for a final state). */
export function reasonOf(r: Recipient, id: string): string | undefined {
  if (r.state === 'uncertain')
    return `delivery uncertain (it may have arrived): held; 'ferrymail queue release ${id}' tries again, 'ferrymail queue rm ${id}' drops the message`;
  return r.state === 'delivered' ? undefined : r.lastError;
}

/** When the next attempt comes: an ISO time and how far off it is; nothing for mail never tried, and
 * nothing for held mail (no attempt comes until it is released; its note says so). */
function nextOf(r: Recipient, now: number, place: string): string | undefined {
  if (place === 'hold' || (r.state !== 'queued' && r.state !== 'deferred')) return undefined;
  if (!r.nextAttempt) return undefined;
  if (Date.parse(r.nextAttempt) <= now) return `${r.nextAttempt} (due: at the next run)`;
  return `${r.nextAttempt} (in ${age(new Date(now).toISOString(), Date.parse(r.nextAttempt))})`;
}

/** The classic mailq listing (Postfix's shape: id, size, arrival, sender, then recipients), in pieces for
 * a listing printed a slice at a time (queue-listing.ts). */
export const MAILQ_EMPTY = 'Mail queue is empty\n';
export const MAILQ_HEAD = '-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------\n';

/** One message of the mailq listing, with the blank line after it. */
export function mailqBlock({ envelope: e, place }: Entry, notes: Notes = NONE): string {
  const lines: string[] = [];
  const d = new Date(e.arrival).toString().split(' ');
  const arrival = `${d[0]} ${d[1]} ${d[2]} ${d[4]}`;
  const id = e.id + (place === 'hold' ? '!' : ' ');
  lines.push(`${id} ${String(e.size).padStart(8)} ${arrival}  ${safe(e.sender || 'MAILER-DAEMON')}`);
  let said: string | undefined;
  for (const r of e.recipients.filter((x) => x.state !== 'delivered' && x.state !== 'failed')) {
    const why = noteOf(notes, e.id, r) ?? reasonOf(r, e.id);
    // as Postfix: a reason once, above the recipients it holds for
    if (why && why !== said) lines.push(`${' '.repeat(47)}(${safe(why)})`);
    said = why;
    lines.push(`${' '.repeat(47)}${safe(r.address)}`);
  }
  return `${lines.join('\n')}\n\n`;
}

/** The last line of the mailq listing. */
export function mailqFoot(bytes: number, n: number): string {
  return `-- ${Math.ceil(bytes / 1024)} Kbytes in ${n} Request${n === 1 ? '' : 's'}.\n`;
}

/** ferrymail's listing: one block per message, one line per recipient with its state. */
export function formatList(entries: Entry[], now = Date.now(), notes: Notes = NONE): string {
  if (entries.length === 0) return 'queue is empty\n';
  const out: string[] = [];
  for (const { envelope: e, place } of entries) {
    out.push(
      `${e.id}  ${place === 'hold' ? 'HELD  ' : ''}age ${age(e.arrival, now)}  ${e.size} bytes  from <${safe(e.sender)}>`,
    );
    for (const r of e.recipients) {
      const next = nextOf(r, now, place);
      const why = reasonOf(r, e.id);
      const note = noteOf(notes, e.id, r);
      const parts = [
        `attempts ${r.attempts}`,
        r.route ? `route ${safe(r.route)}` : '',
        next ? `next ${next}` : '',
        note ? `now: ${safe(note)}` : '',
        why ? `${r.state === 'uncertain' || !r.lastError ? '' : 'last error: '}${safe(why)}` : '',
      ];
      out.push(`  ${r.state.padEnd(9)} <${safe(r.address)}>  ${parts.filter(Boolean).join('  ')}`);
    }
  }
  return `${out.join('\n')}\n`;
}

/** The JSON shape of one queue entry for scripts. */
export function entryJson(e: Envelope, place: string, now = Date.now(), notes: Notes = NONE): Record<string, unknown> {
  return {
    id: e.id,
    place,
    arrival: e.arrival,
    age_seconds: Math.round((now - Date.parse(e.arrival)) / 1000),
    size: e.size,
    sender: e.sender,
    message_id: e.messageId ?? null,
    origin: e.origin,
    protocol: e.protocol,
    body: e.body ?? null,
    smtputf8: !!e.smtputf8,
    ret: e.ret ?? null,
    envid: e.envid ?? null,
    notes: e.notes ?? {},
    recipients: e.recipients.map((r) => ({
      address: r.address,
      orig: r.orig ?? null,
      local: r.local ?? null,
      notify: r.notify ?? null,
      orcpt: r.orcpt ?? null,
      state: r.state,
      attempts: r.attempts,
      next_attempt: r.nextAttempt ?? null,
      last_attempt: r.lastAttempt ?? null,
      last_error: r.lastError ?? null,
      route: r.route ?? null,
      reason: reasonOf(r, e.id) ?? null,
      now: noteOf(notes, e.id, r) ?? null,
      delay_warnings_sent: r.warned ?? [],
      uncertain_count: r.uncertain ?? 0,
    })),
  };
}

/** The detail view of one message: envelope facts, then the header section. */
export function formatShow(entry: Entry, headerText: string, now = Date.now(), notes: Notes = NONE): string {
  const e = entry.envelope;
  const lines = [
    `id:         ${e.id}${entry.place === 'hold' ? '  (held)' : ''}`,
    `arrival:    ${e.arrival} (${age(e.arrival)} ago)`,
    `size:       ${e.size}`,
    `sender:     <${safe(e.sender)}>`,
    `origin:     ${e.origin.door}${e.origin.peer ? ` [${e.origin.peer}]` : ''}${e.origin.helo ? ` helo=${safe(e.origin.helo)}` : ''}${e.origin.user ? ` user=${safe(e.origin.user)}` : ''}${e.origin.uid !== undefined ? ` uid=${e.origin.uid}` : ''}`,
    `protocol:   ${e.protocol}${e.body ? ` body=${e.body}` : ''}${e.smtputf8 ? ' SMTPUTF8' : ''}`,
  ];
  if (e.ret || e.envid)
    lines.push(`dsn:        ${e.ret ? `ret=${e.ret}` : ''}${e.envid ? ` envid=${safe(e.envid)}` : ''}`.trimEnd());
  const noted = Object.entries(e.notes ?? {});
  if (noted.length) lines.push(`notes:      ${noted.map(([k, v]) => `${safe(k)}=${safe(v)}`).join(' ')}`);
  lines.push('recipients:');
  for (const r of e.recipients) {
    lines.push(
      `  <${safe(r.address)}> ${r.state} attempts=${r.attempts}${r.orig ? ` for=<${safe(r.orig)}>` : ''}${r.local && r.local.kind !== 'refused' ? ` as=${safe(r.local.user)}` : ''}${r.notify ? ` notify=${r.notify.join(',')}` : ''}${r.route ? ` route=${safe(r.route)}` : ''}`,
    );
    const next = nextOf(r, now, entry.place);
    const why = reasonOf(r, e.id);
    const note = noteOf(notes, e.id, r);
    if (note) lines.push(`    now: ${safe(note)}`);
    if (why) lines.push(`    ${r.state === 'uncertain' || !r.lastError ? 'state' : 'last error'}: ${safe(why)}`);
    if (r.lastAttempt) lines.push(`    last attempt: ${r.lastAttempt}`);
    if (next) lines.push(`    next attempt: ${next}`);
    if (r.warned?.length)
      lines.push(
        `    delay notices: after ${r.warned.map((w) => age(new Date(0).toISOString(), w * 1000)).join(', ')}`,
      );
  }
  // eslint-disable-next-line no-control-regex
  lines.push(
    '',
    headerText
      .replace(/\r\n/g, '\n')
      .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '?')
      .trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}
