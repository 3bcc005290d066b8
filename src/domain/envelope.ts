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

/** One recipient and its delivery state. */
export interface Recipient {
  address: string;
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
 * Envelope format versions: 1 has none of the delivery bookkeeping of 2 (warned, uncertain, manual). A version 1
 * file still loads; a version 2 file is written only when it uses a field of version 2, so that mail
 * that never needed them stays readable by older ferrymail.
 */
export type EnvelopeVersion = 1 | 2;

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
}

/** A new recipient, not yet attempted. */
export function newRecipient(address: string, extra: Partial<Recipient> = {}): Recipient {
  return { address, state: 'queued', attempts: 0, ...extra };
}
