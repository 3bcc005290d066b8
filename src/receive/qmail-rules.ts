/**
 * qmail-inject's header rules for a local submission (the sendmail command called as qmail-inject), as
 * qmail-inject(8) and qmail-header(5) describe them: which fields name the recipients (To, Cc, Bcc and
 * Apparently-To; Resent-To, Resent-Cc and Resent-Bcc for a resent message), the envelope sender an
 * incoming Return-Path gives, the fields added when missing (From, Date, Message-ID, "Cc: recipient list
 * not shown: ;", Mail-Followup-To; with Resent- in front for a resent message) and the fields removed
 * (Bcc, Resent-Bcc, Return-Path, Content-Length; From and Message-ID when QMAILINJECT asks).
 *
 * Pure. The header fields are untrusted; the rules come from the command line and environment of the
 * submitting user, who may only spoil their own message. Throws nothing: a Return-Path is only read
 * here and checked by the caller like any other sender.
 */
import { addressesIn, displayName, fieldValue, fold, rfc5322Date, type HeaderField } from '../scan/headers.js';

/** What the qmail-inject name changes in a submission (from its flags and environment). */
export interface QmailRules {
  /** The address of an added From (QMAILUSER@QMAILHOST and their fallbacks); a bare name is qualified. */
  from: string;
  /** Address-comment style for an added From, `addr (Full Name)` (QMAILINJECT=c). */
  comment: boolean;
  /** The envelope sender without -f (QMAILSUSER@QMAILSHOST and their fallbacks, with QMAILINJECT=m's
   * per-message VERP); a bare name is qualified. */
  sender: string;
  /** An incoming Return-Path sets the envelope sender (no -f, no QMAILINJECT=s). */
  returnPath: boolean;
  /** Remove any incoming From (QMAILINJECT=f) and Message-ID (QMAILINJECT=i). */
  deleteFrom: boolean;
  deleteMessageId: boolean;
  /** Mailing list addresses (QMAILMFTFILE): To or Cc naming one of them adds Mail-Followup-To. */
  lists?: string[];
}

/** The fields that make a message a resent one. */
const RESENT = new Set([
  'resent-sender',
  'resent-from',
  'resent-reply-to',
  'resent-to',
  'resent-cc',
  'resent-bcc',
  'resent-date',
  'resent-message-id',
]);

/** True when the header holds any Resent- field qmail-inject counts. */
export function isResent(fields: HeaderField[]): boolean {
  return fields.some((f) => RESENT.has(f.lower));
}

/** The fields whose addresses are the recipients. */
export function recipientFields(fields: HeaderField[]): string[] {
  return isResent(fields) ? ['resent-to', 'resent-cc', 'resent-bcc'] : ['to', 'cc', 'bcc', 'apparently-to'];
}

/**
 * The envelope sender the first Return-Path field names, without angle brackets and source route ("" for
 * `<>`); undefined when there is none.
 */
export function returnPathOf(fields: HeaderField[]): string | undefined {
  const f = fields.find((x) => x.lower === 'return-path');
  if (!f) return undefined;
  const value = fieldValue(f)
    .replace(/\([^()]*\)/g, '')
    .trim();
  const inner = /<([^<>]*)>/.exec(value)?.[1] ?? value;
  return inner.replace(/^@[^:]*:/, '').trim();
}

/** A comment's text: parentheses and backslashes escaped, anything not ASCII as an encoded word. */
function commentText(name: string): string {
  const clean = name.replace(/[\r\n]+/g, ' ').trim();
  if (/[^\x20-\x7e]/.test(clean)) return `=?UTF-8?B?${Buffer.from(clean, 'utf8').toString('base64')}?=`;
  return clean.replace(/([()\\])/g, '\\$1');
}

/** The From line for an address and full name, in name-address or address-comment style. */
export function fromLine(prefix: string, address: string, fullName: string | undefined, comment: boolean): string {
  if (!fullName?.trim()) return fold(`${prefix}From: ${address}`);
  return fold(
    comment
      ? `${prefix}From: ${address} (${commentText(fullName)})`
      : `${prefix}From: ${displayName(fullName)} <${address}>`,
  );
}

/** The header edits of the qmail-inject rules: what to drop and what to add after the message's fields. */
export function qmailHeaders(
  fields: HeaderField[],
  o: { id: string; now: Date; hostname: string; from: string; fullName?: string; rules: QmailRules },
): { append: string; drop: Set<string>; added: { messageId?: string } } {
  const drop = new Set(['bcc', 'resent-bcc', 'return-path', 'content-length']);
  if (o.rules.deleteFrom) drop.add('from');
  if (o.rules.deleteMessageId) drop.add('message-id');
  const has = (n: string): boolean => fields.some((f) => f.lower === n && !drop.has(n));
  const p = isResent(fields) ? 'resent-' : '';
  const P = p ? 'Resent-' : '';
  const added: { messageId?: string } = {};
  let append = '';
  if (!has(`${p}date`)) append += `${P}Date: ${rfc5322Date(o.now)}\r\n`;
  if (!has(`${p}message-id`)) {
    added.messageId = `<${o.id}@${o.hostname}>`;
    append += `${P}Message-ID: ${added.messageId}\r\n`;
  }
  if (!has(`${p}from`)) append += fromLine(P, o.from, o.fullName, o.rules.comment);
  if (!has(`${p}to`) && !has(`${p}cc`)) append += `${P}Cc: recipient list not shown: ;\r\n`;
  if (!p && o.rules.lists?.length && !has('mail-followup-to')) append += followupTo(fields, o.hostname, o.rules.lists);
  return { append, drop, added };
}

/** Mail-Followup-To with every To and Cc address, when one of them is a mailing list of `lists`. */
function followupTo(fields: HeaderField[], hostname: string, lists: string[]): string {
  const tocc = addressesIn(fields, ['to', 'cc']).map((a) => (a.includes('@') ? a : `${a}@${hostname}`));
  const known = new Set(lists.map((l) => l.toLowerCase()));
  if (!tocc.some((a) => known.has(a.toLowerCase()))) return '';
  return fold(`Mail-Followup-To: ${tocc.join(', ')}`);
}
