/**
 * Which envelope senders a local user may give (submission.local_senders, as Postfix's
 * local_login_sender_maps): each entry names a login (or * for everyone) and the senders it may use, as
 * addresses with * and ? globs, ${user} for the login name, and <> for the null sender.
 *
 * Pure; trusts the validated configuration. An empty list allows every sender. The sender the system
 * gives a user who names none is always allowed, and so is anything for root and the spool's owner.
 */
import type { LocalSenders } from '../config/types.js';
import { FerryError } from '../errors.js';

/** A glob on an address: * and ? match, nothing else is special; case-insensitive. */
function globMatch(pattern: string, value: string): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i').test(value);
}

/** True when `login` may use `sender` ("" is the null sender) under the rules. */
export function senderAllowed(rules: readonly LocalSenders[], login: string, sender: string): boolean {
  if (rules.length === 0) return true;
  const mine = rules.filter((r) => r.user === '*' || r.user === login).flatMap((r) => r.senders);
  return mine.some((p) =>
    p === '<>' ? sender === '' : sender !== '' && globMatch(p.split('${user}').join(login), sender),
  );
}

/** Who is submitting, and what they ask. */
export interface SenderCheck {
  login: string;
  uid: number;
  /** The spool owner's uid (the daemon's user): always allowed, as root is. */
  ownerUid: number;
  /** The sender asked for; undefined when the user named none. */
  sender: string | undefined;
}

/** Throws a not-allowed FerryError when the user may not use the sender they named. */
export function checkLocalSender(rules: readonly LocalSenders[], c: SenderCheck): void {
  if (c.sender === undefined || c.uid === 0 || c.uid === c.ownerUid) return;
  if (senderAllowed(rules, c.login, c.sender)) return;
  throw new FerryError('not-allowed', `user ${c.login} may not send as <${c.sender}> (submission.local_senders)`, {
    reply: {
      code: 553,
      enhanced: '5.7.1',
      text: `Sender address rejected: <${c.sender}> is not one of ${c.login}'s addresses`,
    },
  });
}
