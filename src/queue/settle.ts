/**
 * Recording one recipient's outcome in its envelope (in memory; runner.ts writes the envelope back) and
 * logging it with its mark: delivered (=>), failed (**), deferred (==) with the next attempt by the
 * retry policy, uncertain (held, or deferred for its one retry).
 *
 * A manual run (a person's flush) that fails temporarily does not push the automatic schedule back: the
 * attempt is counted and recorded (time, error), but not for the backoff (`manual`), and an automatic
 * attempt already scheduled stays where it was. Pure apart from the logger; cannot fail.
 */
import type { Envelope, Recipient } from '../domain/envelope.js';
import type { Outcome } from '../domain/outcome.js';
import type { Route } from '../route/types.js';
import { nextAttemptAt } from './retry.js';
import type { RunnerDeps, RunReport } from './runner.js';

/** What settle does: an outcome, or an uncertain delivery that is tried once more. */
export type Step = Outcome | 'uncertain-retry';

/** How a recipient got its outcome. */
export interface SettleHow {
  route?: string;
  relay?: string;
  /** Something was tried (false: deferred without an attempt, e.g. offline or the route down). */
  attempted?: boolean;
}

/** Records one recipient's outcome in the envelope (in memory) and logs it. */
export function settle(
  deps: RunnerDeps,
  env: Envelope,
  r: Recipient,
  step: Step,
  reply: string,
  now: number,
  report: RunReport,
  how: SettleHow = {},
): void {
  const attempted = how.attempted ?? true;
  // a person's run that fails leaves the automatic schedule as it was
  const manualFailure = !!deps.force && step === 'tempfail';
  const scheduled = r.nextAttempt && Date.parse(r.nextAttempt) > now ? r.nextAttempt : undefined;
  if (attempted) r.attempts++;
  if (attempted && manualFailure) r.manual = (r.manual ?? 0) + 1;
  r.lastAttempt = new Date(now).toISOString();
  r.route = how.route ?? r.route;
  const fields = {
    to: `<${r.address}>`,
    route: how.route,
    relay: how.relay,
    status: reply,
    delay: `${Math.round((now - Date.parse(env.arrival)) / 1000)}s`,
  };
  const s = SETTLE[step];
  r.state = s.state;
  report[s.count]++;
  if (step === 'ok') delete r.lastError;
  else r.lastError = step === 'uncertain' || step === 'uncertain-retry' ? `uncertain: ${reply}` : reply;
  const counted = r.attempts - (r.manual ?? 0);
  if (s.state === 'deferred')
    r.nextAttempt =
      manualFailure && scheduled
        ? scheduled
        : new Date(nextAttemptAt(deps.retry, counted, env.arrival, r.warned ?? [], now)).toISOString();
  else delete r.nextAttempt;
  deps.log.log(
    s.event,
    s.text ? `${env.id} ${s.text}` : env.id,
    s.state === 'deferred' ? { ...fields, next: r.nextAttempt } : fields,
  );
  deps.observe?.({
    kind:
      step === 'ok' ? 'delivered' : step === 'permfail' ? 'bounced' : step === 'tempfail' ? 'deferred' : 'uncertain',
    id: env.id,
    sender: env.sender,
    recipients: [r.address],
    route: how.route,
    relay: how.relay,
    reply,
    attempts: r.attempts,
  });
}

/** What each step does to a recipient, which log mark it gets, what it counts as. */
const SETTLE = {
  ok: { state: 'delivered', event: 'delivered', count: 'delivered', text: '' },
  permfail: { state: 'failed', event: 'failed', count: 'failed', text: '' },
  uncertain: {
    state: 'uncertain',
    event: 'warn',
    count: 'uncertain',
    text: 'delivery uncertain (it may have arrived): held for a decision; ferrymail queue release retries, queue rm drops',
  },
  'uncertain-retry': {
    state: 'deferred',
    event: 'warn',
    count: 'uncertain',
    text: 'delivery uncertain (it may have arrived): retrying once, so the recipient may get it twice',
  },
  tempfail: { state: 'deferred', event: 'deferred', count: 'deferred', text: '' },
} as const;

/** An uncertain delivery: retried once unless the route says hold; a second uncertain one is held. */
export function uncertainStep(route: Route, r: Recipient): Step {
  r.uncertain = (r.uncertain ?? 0) + 1;
  return route.uncertain !== 'hold' && r.uncertain === 1 ? 'uncertain-retry' : 'uncertain';
}
