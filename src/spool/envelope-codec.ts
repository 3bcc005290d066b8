/**
 * Turns envelopes into spool bytes and back.
 *
 * Format: one JSON object, keys in a fixed order, "version" first, newline-terminated. Decoding trusts
 * nothing (the file may be truncated or edited by hand) and checks every field; a bad file yields an
 * error, never a half-filled envelope.
 */
import type { Envelope, LocalTarget, Recipient } from '../domain/envelope.js';

const RECIPIENT_STATES = new Set(['queued', 'deferred', 'delivered', 'failed', 'uncertain']);
const DOORS = new Set(['smtp', 'lmtp', 'sendmail', 'sendmail-bs']);

/** The oldest format that can hold the envelope (3 for local recipients, 2 for delivery bookkeeping). */
function versionFor(env: Envelope): 1 | 2 | 3 {
  if (env.recipients.some((r) => r.orig !== undefined || r.local !== undefined)) return 3;
  return env.recipients.some((r) => r.warned?.length || r.uncertain || r.manual) ? 2 : 1;
}

/** Serialises an envelope in the fixed field order. */
export function encodeEnvelope(env: Envelope): string {
  const ordered: Envelope = {
    version: versionFor(env),
    id: env.id,
    arrival: env.arrival,
    sender: env.sender,
    recipients: env.recipients.map((r) => ({
      address: r.address,
      orig: r.orig,
      local: r.local,
      orcpt: r.orcpt,
      notify: r.notify,
      state: r.state,
      attempts: r.attempts,
      nextAttempt: r.nextAttempt,
      lastAttempt: r.lastAttempt,
      lastError: r.lastError,
      route: r.route,
      warned: r.warned?.length ? r.warned : undefined,
      uncertain: r.uncertain || undefined,
      manual: r.manual || undefined,
    })),
    origin: env.origin,
    protocol: env.protocol,
    size: env.size,
    body: env.body,
    smtputf8: env.smtputf8,
    ret: env.ret,
    envid: env.envid,
    messageId: env.messageId,
    connection: env.connection,
    notes: env.notes && Object.keys(env.notes).length ? env.notes : undefined,
  };
  return `${JSON.stringify(ordered, null, 1)}\n`;
}

/** Throws with a reason when cond is false. */
function need(cond: unknown, reason: string): asserts cond {
  if (!cond) throw new Error(reason);
}

/** Checks one decoded recipient. */
function checkRecipient(r: Recipient, i: number): void {
  need(r && typeof r === 'object', `recipient ${i} is not an object`);
  need(typeof r.address === 'string' && r.address.length > 0, `recipient ${i} has no address`);
  need(RECIPIENT_STATES.has(r.state), `recipient ${i} has unknown state`);
  need(Number.isInteger(r.attempts) && r.attempts >= 0, `recipient ${i} has bad attempts`);
  need(
    r.warned === undefined || (Array.isArray(r.warned) && r.warned.every((w) => Number.isInteger(w) && w >= 0)),
    `recipient ${i} has bad warned`,
  );
  need(
    r.uncertain === undefined || (Number.isInteger(r.uncertain) && r.uncertain >= 0),
    `recipient ${i} has bad uncertain`,
  );
  need(
    r.manual === undefined || (Number.isInteger(r.manual) && r.manual >= 0 && r.manual <= r.attempts),
    `recipient ${i} has bad manual`,
  );
  need(r.orig === undefined || (typeof r.orig === 'string' && r.orig.length > 0), `recipient ${i} has bad orig`);
  need(r.local === undefined || localOk(r.local), `recipient ${i} has a bad local target`);
}

/** Checks a local target: a known kind with the fields of that kind. */
function localOk(t: LocalTarget): boolean {
  if (!t || typeof t !== 'object') return false;
  const str = (v: unknown): boolean => typeof v === 'string' && v.length > 0;
  switch (t.kind) {
    case 'mailbox':
      return str(t.user) && (t.extension === undefined || typeof t.extension === 'string');
    case 'file':
      return str(t.user) && str(t.path) && t.path.startsWith('/');
    case 'command':
      return str(t.user) && Array.isArray(t.argv) && t.argv.length > 0 && t.argv.every((a) => typeof a === 'string');
    case 'refused':
      return str(t.reply) && /^5\d\d /.test(t.reply);
    default:
      return false;
  }
}

/** Parses and checks an envelope; throws an Error saying what is wrong. */
export function decodeEnvelope(text: string, expectId?: string): Envelope {
  const env = JSON.parse(text) as Envelope;
  need(env && typeof env === 'object', 'not an object');
  need(env.version === 1 || env.version === 2 || env.version === 3, `unknown envelope version ${String(env.version)}`);
  need(typeof env.id === 'string' && (!expectId || env.id === expectId), 'id does not match file name');
  need(typeof env.arrival === 'string' && !Number.isNaN(Date.parse(env.arrival)), 'bad arrival time');
  need(typeof env.sender === 'string', 'bad sender');
  need(Array.isArray(env.recipients) && env.recipients.length > 0, 'no recipients');
  env.recipients.forEach(checkRecipient);
  // version 1 knows no delivery bookkeeping: such fields in it are an edit, not data
  need(
    env.version >= 2 ||
      env.recipients.every((r) => r.warned === undefined && r.uncertain === undefined && r.manual === undefined),
    'version 1 envelope with version 2 fields',
  );
  need(
    env.version >= 3 || env.recipients.every((r) => r.orig === undefined && r.local === undefined),
    `version ${env.version} envelope with local recipients (version 3 fields)`,
  );
  need(env.origin && DOORS.has(env.origin.door), 'bad origin');
  need(typeof env.protocol === 'string', 'bad protocol');
  need(Number.isInteger(env.size) && env.size >= 0, 'bad size');
  need(
    env.notes === undefined ||
      (typeof env.notes === 'object' &&
        env.notes !== null &&
        !Array.isArray(env.notes) &&
        Object.values(env.notes).every((v) => typeof v === 'string')),
    'bad notes',
  );
  return env;
}
