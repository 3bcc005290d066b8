/**
 * When to try again: exponential backoff per recipient between a minimum and a maximum, and a maximum
 * time in the queue after which a recipient fails whether or not it was ever attempted (mail that waited
 * offline is not kept forever).
 *
 * Pure; cannot fail.
 */

/** Retry settings in seconds. */
export interface RetryPolicy {
  min: number;
  max: number;
  lifetime: number;
}

/** Postfix-like defaults: 5 minutes doubling to 4 hours, 5 days in all. */
export const DEFAULT_RETRY: RetryPolicy = { min: 300, max: 14_400, lifetime: 432_000 };

/** The delay before the next attempt after `attempts` failed ones (1, 2, ...). */
export function backoff(p: RetryPolicy, attempts: number): number {
  return Math.min(p.max, p.min * 2 ** Math.max(0, attempts - 1));
}

/** True when a message that arrived at `arrival` has been queued longer than allowed. */
export function expired(p: RetryPolicy, arrival: string, now: number): boolean {
  return now - Date.parse(arrival) > p.lifetime * 1000;
}
