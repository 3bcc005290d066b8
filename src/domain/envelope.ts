/**
 * The envelope: everything about a queued message except its content.
 *
 * Plain data handed between stages. Per-recipient state is the truth about delivery; a message leaves the
 * queue when every recipient is final. The spool codec (spool/envelope-codec.ts) is the only code that
 * turns this into bytes and back.
 */
import type { RecipientState } from './outcome.js';

/** Which door a message came in by. */
export type Door = 'smtp' | 'lmtp' | 'sendmail' | 'sendmail-bs';

/** DSN NOTIFY keywords (RFC 3461). */
export type NotifyKeyword = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

/** Where a message came from. */
export interface Origin {
  door: Door;
  /** SMTP peer address, absent for local submissions. */
  peer?: string;
  peerPort?: number;
  /** The HELO/EHLO name the peer gave. */
  helo?: string;
  /** The authenticated SMTP user, or the local user name for the sendmail door. */
  user?: string;
  uid?: number;
}

/**
 * How the local transport delivers a recipient, decided when local recipients are expanded (aliases,
 * .forward): a user's mailbox as the host delivers it, a file or Maildir named by an alias, a command,
 * each as the user named; or a recipient a door that cannot refuse (the sendmail command) took, to be
 * bounced with this reply.
 */
export type LocalTarget =
  | { kind: 'mailbox'; user: string; extension?: string }
  | { kind: 'file'; path: string; user: string }
  | { kind: 'command'; argv: string[]; user: string }
  | { kind: 'refused'; reply: string };

/** One recipient and its delivery state. */
export interface Recipient {
  /** The address; for a command or file an alias named, the target as written (`|/usr/bin/x`, `/var/log/m`). */
  address: string;
  /** The recipient the sender gave, when this one is a target of its alias or .forward. */
  orig?: string;
  /** Set for local recipients: how the local transport delivers them. */
  local?: LocalTarget;
  /** DSN ORCPT as given, e.g. "rfc822;user@example.org". */
  orcpt?: string;
  notify?: NotifyKeyword[];
  state: RecipientState;
  attempts: number;
  /** ISO time of the next attempt; absent when due now. */
  nextAttempt?: string;
  lastAttempt?: string;
  /** Last delivery error, one line with its status code, e.g. "451 4.4.1 connection refused". */
  lastError?: string;
  /** Route that handled the last attempt. */
  route?: string;
  /** Delay-warning ages (seconds after arrival) already dealt with: a notice went, or was not owed. */
  warned?: number[];
  /** How many attempts ended uncertain (the message may have arrived). */
  uncertain?: number;
  /** How many of the attempts were a person's (a manual flush) that failed temporarily: they do not
   * count towards the backoff, so trying by hand never pushes the automatic schedule back. */
  manual?: number;
}

/**
 * Envelope format versions: 1 has none of the delivery bookkeeping of 2 (warned, uncertain, manual); 3 adds
 * local recipients (orig, local), which an older ferrymail must not take for remote ones. A file is
 * written in the oldest version that holds it, so that mail that never needed the new fields stays
 * readable by older ferrymail.
 */
export type EnvelopeVersion = 1 | 2 | 3;

/** The envelope of one queued message. */
export interface Envelope {
  version: EnvelopeVersion;
  id: string;
  /** ISO time the message was committed. */
  arrival: string;
  /** Envelope sender; "" is the null sender. */
  sender: string;
  recipients: Recipient[];
  origin: Origin;
  /** RFC 3848 protocol name used in Received: ESMTP, ESMTPS, ESMTPSA, LMTP, local ... */
  protocol: string;
  /** Size of the data file in bytes. */
  size: number;
  body?: '7BIT' | '8BITMIME';
  smtputf8?: boolean;
  /** DSN RET and ENVID (RFC 3461). */
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  /** Message-ID header value, for listings. */
  messageId?: string;
  /** A connection name forced for this message (sendmail -qo at submission). */
  connection?: string;
  /** Notes the data_end hooks set (docs/hooks.md), by name. */
  notes?: Record<string, string>;
}

/** A new recipient, not yet attempted. */
export function newRecipient(address: string, extra: Partial<Recipient> = {}): Recipient {
  return { address, state: 'queued', attempts: 0, ...extra };
}

/** The longest ENVID, counted in its xtext form (RFC 3461 4.4). */
export const ENVID_MAX = 100;

/** xtext (RFC 3461 4): "!" to "~" except "+" and "=", and "+XX" (upper-case hex) for any other byte. */
const XTEXT = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+$/;

/** A DSN ENVID given in xtext, decoded; or why it cannot be one (not xtext, over ENVID_MAX characters, or
 * not printable ASCII once decoded: an ENVID is copied into failure notices). */
export function parseEnvid(xtext: string): { ok: true; value: string } | { ok: false; reason: string } {
  if (xtext.length > ENVID_MAX) return { ok: false, reason: `longer than ${ENVID_MAX} characters` };
  if (!XTEXT.test(xtext))
    return { ok: false, reason: 'not xtext (printable ASCII without "+", "=" and spaces; "+XX" for others)' };
  const value = xtext.replace(/\+([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  const problem = envidProblem(value);
  return problem ? { ok: false, reason: `${problem} once decoded` } : { ok: true, value };
}

/** Why a decoded ENVID (as smtp-server hands it over) cannot be kept, or undefined when it can. */
export function envidProblem(value: string): string | undefined {
  if (!/^[\x20-\x7e]+$/.test(value)) return 'not printable ASCII';
  const encoded = value.replace(
    /[^\x21-\x2a\x2c-\x3c\x3e-\x7e]/g,
    (c) => `+${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`,
  );
  return encoded.length > ENVID_MAX ? `longer than ${ENVID_MAX} characters as xtext` : undefined;
}
