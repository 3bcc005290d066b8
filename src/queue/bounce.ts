/**
 * Delivery status notifications (RFC 3464): a multipart/report telling the sender which recipients
 * failed (or are delayed) and why, with the original message's header section attached.
 *
 * Inputs are the spool's checked envelope and the stored header text (untrusted content, attached as
 * text/rfc822-headers, never interpreted). A bounce goes to the envelope sender with the null sender, so a
 * bounce is never bounced; a message with the null sender gets none. Pure; cannot fail.
 */
import { randomBytes } from '../random.js';
import type { Envelope, Recipient } from '../domain/envelope.js';

/** Whether a recipient wants a notice of this kind (RFC 3461 NOTIFY; default FAILURE and DELAY). */
export function wantsNotice(r: Recipient, kind: 'failed' | 'delayed'): boolean {
  if (!r.notify) return true;
  if (r.notify.includes('NEVER')) return false;
  return r.notify.includes(kind === 'failed' ? 'FAILURE' : 'DELAY');
}

/** The enhanced status code inside a reply line ("550 5.1.1 ..." → "5.1.1"); a delay is always 4.x.x and
 * a failure 5.x.x (RFC 3464 2.3.4). */
function statusOf(reply: string | undefined, kind: 'failed' | 'delayed'): string {
  const m = /\b([245])\.(\d{1,3}\.\d{1,3})\b/.exec(reply ?? '');
  const cls = kind === 'failed' ? '5' : '4';
  return m ? `${cls}.${m[2]!}` : `${cls}.0.0`;
}

/** Replaces control characters in text going into a one-line summary. */
function oneLine(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, ' ');
}

/** Formats a date as RFC 5322 wants it (UTC). */
function date(d: Date): string {
  return d.toUTCString().replace('GMT', '+0000');
}

/** A notice's parts: the envelope and text to queue, and a subject and summary for a local notice. */
export interface Notice {
  sender: '';
  recipient: string;
  text: string;
  kind: 'failed' | 'delayed';
  /** The message the notice is about. */
  id: string;
  subject: string;
  /** One line per recipient: address and reason, control characters replaced. */
  summary: string;
  /** Local addresses that get the same notice (the submitting user's, when no route can carry it now). */
  copies?: string[];
}

/** Builds the notice for the given recipients, or null when none is owed (null sender, NOTIFY=NEVER, or
 * for a delay: NOTIFY without DELAY). A delay notice says until when delivery is tried (retryUntil). */
export function buildNotice(
  env: Envelope,
  rcpts: Recipient[],
  kind: 'failed' | 'delayed',
  head: string,
  hostname: string,
  now = new Date(),
  retryUntil?: Date,
): Notice | null {
  const owed = rcpts.filter((r) => wantsNotice(r, kind));
  if (env.sender === '' || owed.length === 0) return null;
  const boundary = `=_ferrymail_${randomBytes(9).toString('base64url')}`;
  const subject = kind === 'failed' ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)';
  const human = [
    `This is the mail system at host ${hostname}.`,
    '',
    kind === 'failed'
      ? 'Your message could not be delivered to one or more recipients. It is attached below.'
      : 'Your message has not been delivered yet to one or more recipients. It stays in the queue and delivery is retried; you need not send it again.',
    ...(kind === 'delayed' && retryUntil ? ['', `Delivery will be tried until ${date(retryUntil)}.`] : []),
    '',
    ...owed.map((r) => `<${r.address}>: ${r.lastError ?? 'no reason recorded'}`),
  ];
  const perRecipient = owed.map((r) =>
    [
      r.orcpt ? `Original-Recipient: ${r.orcpt}` : null,
      `Final-Recipient: rfc822; ${r.address}`,
      `Action: ${kind}`,
      `Status: ${statusOf(r.lastError, kind)}`,
      r.lastError ? `Diagnostic-Code: smtp; ${r.lastError}` : null,
      r.lastAttempt ? `Last-Attempt-Date: ${date(new Date(r.lastAttempt))}` : null,
      kind === 'delayed' && retryUntil ? `Will-Retry-Until: ${date(retryUntil)}` : null,
    ]
      .filter(Boolean)
      .join('\r\n'),
  );
  const lines = [
    `From: MAILER-DAEMON@${hostname} (Mail Delivery System)`,
    `To: <${env.sender}>`,
    `Subject: ${subject}`,
    `Date: ${date(now)}`,
    `Message-ID: <${env.id}.${kind}.${now.getTime()}@${hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    '',
    ...human,
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    `Reporting-MTA: dns; ${hostname}`,
    env.envid ? `Original-Envelope-Id: ${env.envid.replace(/[\x00-\x1f\x7f]/g, '?')}` : null,
    `Arrival-Date: ${date(new Date(env.arrival))}`,
    '',
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    '',
    head.replace(/\r?\n$/, '').replace(/\0/g, ''),
    '',
    `--${boundary}--`,
    '',
  ].filter((l) => l !== null);
  const summary = owed
    .map((r) => `<${oneLine(r.address)}>: ${oneLine(r.lastError ?? 'no reason recorded')}`)
    .join('\n');
  return {
    sender: '',
    recipient: env.sender,
    text: lines.join('\r\n'),
    kind,
    id: env.id,
    subject: `${subject}: message ${env.id}`,
    summary,
  };
}
