/**
 * The notices a message's run owes its sender: RFC 3464 failure notices for recipients that failed in
 * this run, delay notices for recipients past a queue.delay_warnings age, each queued through the spool
 * (bounce.ts builds them) and also delivered on this host when no route could carry it now.
 *
 * Trusts the run's envelope. A notice that cannot be queued is an error for the caller (runner.ts keeps
 * the failure waiting so that its notice is never lost); a failing local delivery is only logged.
 */
import { newRecipient, type Recipient } from '../domain/envelope.js';
import { awaitsAttempt } from '../domain/outcome.js';
import { plan } from '../route/select.js';
import { buildNotice } from './bounce.js';
import type { MessageRun } from './deliver.js';
import { expiresAt, warningsDue } from './retry.js';
import type { RunnerDeps } from './runner.js';

/** Puts a failed recipient back to deferred because its failure notice could not be queued. */
export function deferForNotice(deps: RunnerDeps, r: Recipient, now: number, why: string): void {
  r.state = 'deferred';
  r.lastError = `${r.lastError ?? 'failed'} (the failure notice could not be queued: ${why})`;
  r.nextAttempt = new Date(now + deps.retry.min * 1000).toISOString();
}

/** Sends one delay notice for the recipients that passed a warning age not yet dealt with, and records
 * those ages as dealt with (also for recipients whose NOTIFY wants no delay notice). */
export async function warnDelayed(
  deps: RunnerDeps,
  run: MessageRun,
  now: number,
  skip: Set<Recipient> = new Set(),
): Promise<void> {
  const ages = new Map(
    run.env.recipients
      .filter((r) => awaitsAttempt(r.state) && !skip.has(r))
      .map((r) => [r, warningsDue(deps.retry, run.env.arrival, r.warned ?? [], now)] as const),
  );
  const late = [...ages].filter(([, due]) => due.length);
  if (!late.length) return;
  await sendNotice(
    deps,
    run,
    late.map(([r]) => r),
    'delayed',
    now,
  );
  for (const [r, due] of late) r.warned = [...(r.warned ?? []), ...due];
}

/** Builds, queues and logs one notice; delivers it locally too when the rule says so. */
export async function sendNotice(
  deps: RunnerDeps,
  run: MessageRun,
  rcpts: Recipient[],
  kind: 'failed' | 'delayed',
  now: number,
): Promise<void> {
  if (!deps.enqueueNotice && !deps.localNotice) return;
  const notice = buildNotice(
    run.env,
    rcpts,
    kind,
    run.head,
    deps.hostname ?? 'localhost',
    new Date(now),
    new Date(expiresAt(deps.retry, run.env.arrival)),
  );
  if (!notice) return;
  const leaves = isLocal(deps, notice.recipient) || routable(deps, run, notice.recipient);
  const copy = leaves ? undefined : submitterAddress(deps, run);
  if (copy && copy.toLowerCase() !== notice.recipient.toLowerCase()) notice.copies = [copy];
  if (deps.enqueueNotice) {
    await deps.enqueueNotice(notice);
    deps.log.log('info', `${run.env.id} ${kind === 'failed' ? 'failure' : 'delay'} notice queued`, {
      to: `<${notice.recipient}>`,
      ...(notice.copies ? { copy: notice.copies.map((c) => `<${c}>`).join(',') } : {}),
      rcpts: rcpts.length,
    });
  }
  if (!deps.localNotice || (deps.localNotices !== 'always' && leaves)) return;
  await deps.localNotice(notice).then(
    () =>
      deps.log.log('info', `${run.env.id} ${kind === 'failed' ? 'failure' : 'delay'} notice delivered locally`, {
        to: `<${notice.recipient}>`,
      }),
    (err: Error) => deps.log.log('warn', `${run.env.id} local notice failed`, { error: err.message }),
  );
}

/** Whether an address is this host's own (the local route always carries it). */
function isLocal(deps: RunnerDeps, to: string): boolean {
  return deps.local?.isLocal(newRecipient(to)) ?? false;
}

/** The local address of the user who handed the message in on this host (the sendmail door, the drop
 * folder), when it is one this host delivers; a login from SMTP AUTH is not a local account. */
function submitterAddress(deps: RunnerDeps, run: MessageRun): string | undefined {
  const o = run.env.origin;
  if ((o.door !== 'sendmail' && o.door !== 'sendmail-bs') || !o.user || o.user === 'MAILER-DAEMON') return undefined;
  if (!/^[a-z_][a-z0-9_.-]*\$?$/i.test(o.user)) return undefined;
  const address = `${o.user}@${deps.hostname ?? 'localhost'}`;
  return isLocal(deps, address) ? address : undefined;
}

/**
 * Whether a notice to `to` could leave now: some route accepts the null sender to that address on the
 * current connection, and not only routes that just failed temporarily for this very message (then
 * the failing route is the only way out and the notice would wait behind the same trouble).
 */
function routable(deps: RunnerDeps, run: MessageRun, to: string): boolean {
  const [p] = plan(deps.routes, run.state, '', [to], []);
  return !!p && 'routes' in p && p.routes.some((r) => !run.troubled.has(r.name));
}
