/**
 * The one outcome vocabulary: from an SMTP reply to a pipe exit code to a log line.
 *
 * Pure types and tiny helpers; cannot fail.
 */

/** What happened to one recipient on one attempt. */
export type Outcome = 'ok' | 'tempfail' | 'permfail' | 'uncertain';

/** The state a recipient is in inside the queue. */
export type RecipientState = 'queued' | 'deferred' | 'delivered' | 'failed' | 'uncertain';

/** True when a recipient needs no more delivery attempts. */
export function isFinal(state: RecipientState): boolean {
  return state === 'delivered' || state === 'failed';
}

/** True when a recipient waits for an automatic attempt: not final, not held as uncertain. */
export function awaitsAttempt(state: RecipientState): boolean {
  return !isFinal(state) && state !== 'uncertain';
}

/** An SMTP-style reply with an enhanced status code, used by receive/ and in envelopes. */
export interface Reply {
  code: number; // 250, 451, 550 ...
  enhanced: string; // "2.0.0", "4.3.1"
  text: string;
}

/** What one queue run did, counted per recipient (messages: how many were due). */
export interface RunCounts {
  messages: number;
  delivered: number;
  deferred: number;
  failed: number;
  uncertain: number;
  busy: number;
  /** Of the messages due, those left unopened: they wait, offline, for what they waited for before. */
  unopened?: number;
}
