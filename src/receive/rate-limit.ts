/**
 * The built-in hook `rate_limit`: how much one client address (an IPv6 client by its /64) or one
 * authenticated user may do in a window: connections and messages per client, messages and recipients
 * per user (Postfix's anvil limits: smtpd_client_connection_rate_limit, smtpd_client_message_rate_limit;
 * per user as policyd-rate-limit does). Each limit is a bucket that refills evenly over the window, so a
 * client may use it in a burst and then only as fast as it refills; past it, the command is deferred
 * with 451 4.7.1 and the log says who hit which limit.
 *
 * Trusts the configuration. Counts in memory: a restart forgets the counts (as Postfix's anvil does).
 * Trusted clients (loopback, local_nets) are exempt unless options.exempt_trusted is false.
 */
import { parseDuration } from '../config/schema.js';
import { clientNetwork } from '../domain/ip.js';
import type { HookApi, HookHandlers } from './hook-api.js';
import type { Verdict } from './stages.js';

/** A bucket: what is left, as of when. */
interface Bucket {
  tokens: number;
  at: number;
}

/** The limits that may be configured, and what they count. */
const LIMITS = ['client_connections', 'client_messages', 'user_messages', 'user_recipients'] as const;
type LimitName = (typeof LIMITS)[number];

/** Buckets of one limit, by client network or user. */
export class Buckets {
  private readonly map = new Map<string, Bucket>();
  constructor(
    readonly limit: number,
    readonly windowMs: number,
  ) {}

  /** Takes one from key's bucket; false when it is empty. */
  take(key: string, now = Date.now()): boolean {
    const b = this.map.get(key) ?? { tokens: this.limit, at: now };
    b.tokens = Math.min(this.limit, b.tokens + ((now - b.at) * this.limit) / this.windowMs);
    b.at = now;
    if (b.tokens < 1) {
      this.map.set(key, b);
      return false;
    }
    b.tokens -= 1;
    this.map.set(key, b);
    if (this.map.size > 50_000) this.prune(now);
    return true;
  }

  /** Forgets the buckets that have refilled (they are as good as new). */
  private prune(now: number): void {
    for (const [k, b] of this.map)
      if (b.tokens + ((now - b.at) * this.limit) / this.windowMs >= this.limit) this.map.delete(k);
  }
}

/** The built-in: connect, mail and rcpt handlers for the limits configured. */
export function rateLimit(options: Record<string, unknown>, api: HookApi): HookHandlers {
  const windowS = parseDuration(options.window ?? '1h');
  if (!windowS || windowS < 1) throw new Error('options.window must be a duration such as 1m or 1h');
  const buckets = new Map<LimitName, Buckets>();
  for (const name of LIMITS) {
    const v = options[name];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
      throw new Error(`options.${name} must be a whole number of 1 or more`);
    buckets.set(name, new Buckets(v, windowS * 1000));
  }
  if (!buckets.size) throw new Error(`options: give at least one of ${LIMITS.join(', ')}`);
  const exemptTrusted = options.exempt_trusted !== false;
  const every = typeof options.window === 'string' ? options.window : `${windowS}s`;

  /** Takes from a limit's bucket; a deferral when it is empty. */
  const take = (name: LimitName, key: string | undefined, what: string, who: string): Verdict => {
    const b = buckets.get(name);
    if (!b || !key || b.take(key)) return { action: 'continue' };
    api.log(`rate_limit: ${who} reached ${name} (${b.limit} per ${every})`);
    return {
      action: 'defer',
      reply: {
        code: 451,
        enhanced: '4.7.1',
        text: `Rate limit reached: ${b.limit} ${what} per ${every}; try again later`,
      },
    };
  };
  const exempt = (trusted: boolean): boolean => exemptTrusted && trusted;

  const handlers: HookHandlers = {};
  if (buckets.has('client_connections'))
    handlers.connect = (s) =>
      exempt(s.trusted)
        ? { action: 'continue' }
        : take('client_connections', clientNetwork(s.peer), 'connections', `client [${s.peer}]`);
  if (buckets.has('client_messages') || buckets.has('user_messages'))
    handlers.mail = (s) => {
      if (exempt(s.trusted) && !s.user) return { action: 'continue' };
      const byClient = exempt(s.trusted)
        ? ({ action: 'continue' } as Verdict)
        : take('client_messages', clientNetwork(s.peer), 'messages', `client [${s.peer}]`);
      if (byClient.action !== 'continue') return byClient;
      return take('user_messages', s.user, 'messages', `user ${s.user}`);
    };
  if (buckets.has('user_recipients'))
    handlers.rcpt = (s) => take('user_recipients', s.user, 'recipients', `user ${s.user}`);
  return handlers;
}
