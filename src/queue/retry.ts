/**
 * When to try again: exponential backoff per recipient between a minimum and a maximum, a maximum time
 * in the queue after which a recipient fails whether or not it was ever attempted (mail that waited
 * offline is not kept forever), and the ages at which the sender is told that mail is delayed.
 *
 * Pure; cannot fail.
 */

/** Retry settings in seconds (queue.retry_min, queue.retry_max, queue.lifetime, queue.delay_warnings). */
export interface RetryPolicy {
  min: number;
  max: number;
  lifetime: number;
  /** Ages after arrival at which a delay notice is owed, ascending. */
  warnings: number[];
}

/** Postfix-like defaults: 5 minutes doubling to 4 hours, 5 days in all, one delay warning at 4 hours. */
export const DEFAULT_RETRY: RetryPolicy = { min: 300, max: 14_400, lifetime: 432_000, warnings: [14_400] };

/** The delay before the next attempt after `attempts` failed ones (1, 2, ...). */
export function backoff(p: RetryPolicy, attempts: number): number {
  return Math.min(p.max, p.min * 2 ** Math.max(0, attempts - 1));
}

/** True when a message that arrived at `arrival` has been queued longer than allowed. */
export function expired(p: RetryPolicy, arrival: string, now: number): boolean {
  return now - Date.parse(arrival) > p.lifetime * 1000;
}

/** The moment (ms) after which the message has expired. */
export function expiresAt(p: RetryPolicy, arrival: string): number {
  return Date.parse(arrival) + p.lifetime * 1000;
}

/**
 * The next attempt after a failure: the backoff, but never later than the next delay warning still
 * owed or than the expiry, so that warnings and expiry happen on time even when the backoff is long.
 */
export function nextAttemptAt(
  p: RetryPolicy,
  attempts: number,
  arrival: string,
  warned: readonly number[],
  now: number,
): number {
  const start = Date.parse(arrival);
  const marks = p.warnings.filter((w) => !warned.includes(w)).map((w) => start + w * 1000);
  const limits = [
    now + backoff(p, Math.max(1, attempts)) * 1000,
    expiresAt(p, arrival) + 1000,
    ...marks.filter((t) => t > now),
  ];
  return Math.min(...limits);
}

/** The warning ages reached by `now` and not yet dealt with for a recipient warned of `warned`. */
export function warningsDue(p: RetryPolicy, arrival: string, warned: readonly number[], now: number): number[] {
  const age = (now - Date.parse(arrival)) / 1000;
  return p.warnings.filter((w) => w <= age && !warned.includes(w));
}
