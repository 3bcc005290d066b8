/**
 * The queue runner: for each message that is due, under its lock, choose routes for the recipients still
 * to be delivered (route/, from the online state of this moment), deliver through the routes' transports
 * in order, and write every recipient's new state back through the spool before anything else happens.
 * A message leaves the queue when every recipient is final.
 *
 * Trusts the spool's envelopes (decoded and checked) and the loaded routes. Transport failures arrive as
 * outcomes; a spool error for one message is logged and that message is left for the next run. Failed
 * recipients, and recipients waiting longer than a delay-warning age, get an RFC 3464 notice to the sender
 * (bounce.ts) through enqueueNotice, queued before the envelope changes; a notice no route could carry
 * now is also handed to localNotice. A failing local notice is logged, never fatal. Several messages are
 * delivered at once (PARALLEL_MESSAGES); runs never deliver the same message twice because each is
 * delivered under its lock.
 */
import { formatDuration } from '../config/schema.js';
import type { Envelope, Recipient } from '../domain/envelope.js';
import { isFerryError } from '../errors.js';
import type { OnlineState } from '../domain/online.js';
import { awaitsAttempt, isFinal, type Outcome, type RunCounts } from '../domain/outcome.js';
import type { Logger } from '../log/logger.js';
import { headerFromAddresses } from '../route/header-rewrite.js';
import { rewriteAddress } from '../route/rewrite.js';
import { fallThrough, plan } from '../route/select.js';
import type { Route } from '../route/types.js';
import { Transform, type Readable } from 'node:stream';
import type { Entry, Store } from '../spool/store.js';
import type { DeliveryRequest, DeliveryResult, Transport } from '../transport/types.js';
import type { InflightJournal, InflightNote } from '../spool/inflight.js';
import { withReserve } from '../spool/space.js';
import { buildNotice, type Notice } from './bounce.js';
import { pendingOf } from './recover.js';
import { expired, expiresAt, nextAttemptAt, warningsDue, type RetryPolicy } from './retry.js';

/** What a run needs. */
export interface RunnerDeps {
  store: Store;
  routes: Route[];
  online: () => Promise<OnlineState>;
  /** The transport of a route (built from its transport settings). */
  transportFor: (route: Route) => Transport;
  /** A fresh stream of a message's data as it should leave by a route. */
  messageFor: (env: Envelope, route: Route, head?: string) => Readable;
  retry: RetryPolicy;
  log: Logger;
  now?: () => number;
  /** Queues a delivery status notice durably (the runner waits for it before changing the original). */
  enqueueNotice?: (notice: Notice) => Promise<void>;
  hostname?: string;
  /** Try deferred recipients now, whatever their next attempt time (a manual flush, as postqueue -f). */
  force?: boolean;
  /** Messages delivered at once (default PARALLEL_MESSAGES). */
  parallel?: number;
  /** Try only this route in this run; recipients it would not carry are left as they are. */
  onlyRoute?: string;
  /** Delivers a notice on this host too (queue.notice_mailbox, queue.notify_command). */
  localNotice?: (notice: Notice) => Promise<void>;
  /** When localNotice is used: only for notices no route could carry now (default), or for all. */
  localNotices?: 'unroutable' | 'always';
  /** Notes each hand-over durably before the message's end is sent (spool/inflight.ts). */
  journal?: InflightJournal;
  /** Whether the spool has room to start another delivery (its state updates must always fit). */
  roomToDeliver?: () => boolean;
}

/** What one run did. */
export type RunReport = RunCounts;

/** Messages delivered at once in a run; each route's transport bounds its own connections. */
export const PARALLEL_MESSAGES = 8;

/** Runs the queue once; resolves with counts. One transport per route serves the whole run (so that it
 * can keep its connection open from message to message) and is closed at the end. */
export async function runQueue(deps: RunnerDeps): Promise<RunReport> {
  const now = deps.now ?? Date.now;
  const report: RunReport = { messages: 0, delivered: 0, deferred: 0, failed: 0, uncertain: 0, busy: 0 };
  const state = await deps.online();
  const { entries } = await deps.store.list();
  const at = (): number => (deps.force ? Infinity : now());
  const transports = new Map<Route, Transport>();
  const run: RunnerDeps = { ...deps, transportFor: (r) => transports.get(r) ?? transports.set(r, deps.transportFor(r)).get(r)! };
  // a message whose outcome waits in memory for room on the disk is not delivered again meanwhile
  const pending = pendingOf(deps.store.layout.root);
  const waiting = entries.filter((e) => e.place === 'queue' && due(e.envelope, at()) && !pending.has(e.envelope.id));
  try {
    await eachLimited(waiting, deps.parallel ?? PARALLEL_MESSAGES, (entry) => runLocked(run, state, entry, report, now, at));
  } finally {
    await Promise.all([...transports.values()].map((t) => t.close?.().catch(() => undefined)));
  }
  return report;
}

/** Calls fn for every item, at most `limit` at a time; resolves when all are done. */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** Delivers one message under its lock; a message another process holds is counted busy and left, and
 * none is started while the spool has no room for what delivery writes. */
async function runLocked(deps: RunnerDeps, state: OnlineState, entry: Entry, report: RunReport, now: () => number, at: () => number): Promise<void> {
  report.messages++;
  if (deps.roomToDeliver && !deps.roomToDeliver()) {
    report.busy++;
    if (!noRoomSaid.has(deps.store)) deps.log.log('warn', 'the spool is nearly full: no delivery is started until there is room again');
    noRoomSaid.add(deps.store);
    return;
  }
  let lock;
  try {
    lock = await deps.store.lockMessage(entry.envelope.id, 0);
  } catch {
    report.busy++;
    return;
  }
  try {
    await runMessage(deps, state, entry, report, now, at);
  } catch (err) {
    deps.log.log('error', 'queue run failed for a message', { id: entry.envelope.id, error: (err as Error).message });
  } finally {
    await lock.release();
  }
}

/** Runs that said they start no delivery for lack of room (said once per run). */
const noRoomSaid = new WeakSet<Store>();

/** True when some recipient of the message is due now. */
function due(env: Envelope, now: number): boolean {
  return env.recipients.some((r) => isDue(r, now));
}

/** True when a recipient waits for an automatic attempt and its time has come. */
function isDue(r: Recipient, now: number): boolean {
  return awaitsAttempt(r.state) && (!r.nextAttempt || Date.parse(r.nextAttempt) <= now);
}

/** What happened in one message's run, for the notices at its end. */
interface MessageRun {
  env: Envelope;
  head: string;
  state: OnlineState;
  failedBefore: Set<string>;
  /** Routes that failed temporarily for this message in this run (they cannot carry a notice now). */
  troubled: Set<string>;
}

/** Delivers one message's pending recipients and records the outcome of each. */
async function runMessage(deps: RunnerDeps, state: OnlineState, entry: Entry, report: RunReport, now: () => number, at: () => number): Promise<void> {
  // re-read under the lock: another process may have changed, held or removed it since the listing
  const current = await deps.store.fresh(entry).catch((err: unknown) => {
    if (isFerryError(err, 'not-found')) return null;
    throw err;
  });
  if (!current || current.place !== 'queue') return;
  const env = current.envelope;
  const run: MessageRun = { env, head: await deps.store.readHead(env.id), state, failedBefore: new Set(env.recipients.filter((r) => r.state === 'failed').map((r) => r.address)), troubled: new Set() };
  dropRepeated(env);
  const pending = env.recipients.filter((r) => isDue(r, at()));
  if (expired(deps.retry, env.arrival, now())) {
    for (const r of pending) settle(deps, env, r, 'permfail', `550 4.4.7 message expired after ${formatDuration(deps.retry.lifetime)} in the queue${r.lastError ? ` (last error: ${r.lastError})` : ''}`, undefined, now(), report);
    return finish(deps, run, now, report);
  }
  const plans = plan(deps.routes, state, env.sender, pending.map((r) => r.address), headerFromAddresses(run.head));
  const routesOf = new Map<string, Route[]>();
  for (const p of plans) {
    const r = pending.find((x) => x.address === p.recipient)!;
    if ('defer' in p) {
      if (!deps.onlyRoute) settle(deps, env, r, 'tempfail', `451 4.4.1 ${p.defer}`, undefined, now(), report, false);
      continue;
    }
    const routes = deps.onlyRoute ? p.routes.filter((x) => x.name === deps.onlyRoute) : p.routes;
    if (routes.length) routesOf.set(p.recipient, routes);
  }
  await deliverByRoutes(deps, run, pending, routesOf, now, report);
  await finish(deps, run, now, report);
}

/** Removes a recipient listed again (older spools could hold one twice): one delivery per address;
 * of the copies, one whose state is final wins (a delivered copy is never delivered again). */
function dropRepeated(env: Envelope): void {
  const kept = new Map<string, Recipient>();
  for (const r of env.recipients) {
    const k = r.address.toLowerCase();
    const first = kept.get(k);
    if (!first || (!isFinal(first.state) && isFinal(r.state))) kept.set(k, r);
  }
  if (kept.size !== env.recipients.length) env.recipients = env.recipients.filter((r) => kept.get(r.address.toLowerCase()) === r);
}

/** One delivery attempt through a route's transport; a transport that throws, or that leaves a
 * recipient without a result, counts as a temporary failure for those recipients (never a lost state). */
async function attempt(deps: RunnerDeps, route: Route, req: DeliveryRequest): Promise<DeliveryResult> {
  let result: DeliveryResult;
  try {
    result = await deps.transportFor(route).deliver(req);
  } catch (err) {
    result = { relay: 'none', results: [] };
    deps.log.log('error', `${req.id} route ${route.name} failed unexpectedly`, { error: (err as Error).message });
  }
  const got = new Map(result.results.map((r) => [r.address, r] as const));
  return { relay: result.relay, results: req.recipients.map((r) => got.get(r.address) ?? { address: r.address, outcome: 'tempfail', reply: `451 4.3.0 route ${route.name} gave no result for this recipient` }) };
}

/** Walks the routes: each route takes the recipients still waiting for it; tempfail falls through. */
async function deliverByRoutes(deps: RunnerDeps, run: MessageRun, pending: Recipient[], routesOf: Map<string, Route[]>, now: () => number, report: RunReport): Promise<void> {
  const env = run.env;
  while (routesOf.size) {
    // the next route to try is the first route of some waiting recipient; take every recipient whose next route it is
    const route = [...routesOf.values()][0]![0]!;
    const batch = [...routesOf.entries()].filter(([, rs]) => rs[0] === route).map(([a]) => a);
    const sender = rewriteAddress(route.rewrite.envelopeSender, env.sender);
    const result = await attempt(deps, route, {
      id: env.id,
      sender,
      recipients: batch.map((a) => {
        const r = pending.find((x) => x.address === a)!;
        return { address: a, notify: r.notify, orcpt: r.orcpt };
      }),
      message: (to) => handOver(deps, deps.messageFor(env, route, run.head), { id: env.id, route: route.name, addresses: to ?? batch }),
      size: env.size,
      smtputf8: env.smtputf8,
      body: env.body,
      envid: env.envid,
      ret: env.ret,
    });
    for (const res of result.results) {
      const rest = fallThrough(route, res.outcome, routesOf.get(res.address)!.slice(1));
      const r = pending.find((x) => x.address === res.address)!;
      const outcome: Outcome = res.outcome === 'tempfail' && route.connectErrorFail && /^4\.4\.1|^451 4\.4\.1/.test(res.reply) ? 'permfail' : res.outcome;
      if (outcome === 'tempfail') run.troubled.add(route.name);
      if (rest.length && outcome === 'tempfail') {
        routesOf.set(res.address, rest);
        deps.log.log('deferred', env.id, { to: `<${res.address}>`, route: route.name, relay: result.relay, status: res.reply, next: rest[0]!.name });
        continue;
      }
      routesOf.delete(res.address);
      settle(deps, env, r, outcome === 'uncertain' ? uncertainStep(route, r) : outcome, res.reply, route.name, now(), report, true, result.relay);
    }
  }
}

/** An uncertain delivery: retried once unless the route says hold; a second uncertain one is held. */
function uncertainStep(route: Route, r: Recipient): Step {
  r.uncertain = (r.uncertain ?? 0) + 1;
  return route.uncertain === 'retry' && r.uncertain === 1 ? 'uncertain-retry' : 'uncertain';
}

/** What settle does: an outcome, or an uncertain delivery that is tried once more. */
type Step = Outcome | 'uncertain-retry';

/** Records one recipient's outcome in the envelope (in memory) and logs it. */
function settle(deps: RunnerDeps, env: Envelope, r: Recipient, step: Step, reply: string, route: string | undefined, now: number, report: RunReport, attempted = true, relay?: string): void {
  if (attempted) r.attempts++;
  r.lastAttempt = new Date(now).toISOString();
  r.route = route ?? r.route;
  const fields = { to: `<${r.address}>`, route, relay, status: reply, delay: `${Math.round((now - Date.parse(env.arrival)) / 1000)}s` };
  const s = SETTLE[step];
  r.state = s.state;
  report[s.count]++;
  if (step === 'ok') delete r.lastError;
  else r.lastError = step === 'uncertain' || step === 'uncertain-retry' ? `uncertain: ${reply}` : reply;
  if (s.state === 'deferred') r.nextAttempt = new Date(nextAttemptAt(deps.retry, r.attempts, env.arrival, r.warned ?? [], now)).toISOString();
  else delete r.nextAttempt;
  deps.log.log(s.event, s.text ? `${env.id} ${s.text}` : env.id, s.state === 'deferred' ? { ...fields, next: r.nextAttempt } : fields);
}

/** What each step does to a recipient, which log mark it gets, what it counts as. */
const SETTLE = {
  ok: { state: 'delivered', event: 'delivered', count: 'delivered', text: '' },
  permfail: { state: 'failed', event: 'failed', count: 'failed', text: '' },
  uncertain: { state: 'uncertain', event: 'warn', count: 'uncertain', text: 'delivery uncertain (it may have arrived): held for a decision; ferrymail queue release retries, queue rm drops' },
  'uncertain-retry': { state: 'deferred', event: 'warn', count: 'uncertain', text: 'delivery uncertain (it may have arrived): retrying once, so the recipient may get it twice' },
  tempfail: { state: 'deferred', event: 'deferred', count: 'deferred', text: '' },
} as const;

/** Queues the notices this run owes (failures, then delay warnings), then writes the envelope back, or
 * removes the message when every recipient is final. Notices come first, so that a crash can repeat one
 * but never lose it. */
async function finish(deps: RunnerDeps, run: MessageRun, now: () => number, report: RunReport): Promise<void> {
  const env = run.env;
  const failedNow = env.recipients.filter((r) => r.state === 'failed' && !run.failedBefore.has(r.address));
  let owed = new Set<Recipient>();
  if (failedNow.length) {
    try {
      await sendNotice(deps, run, failedNow, 'failed', now());
    } catch (err) {
      // the notice could not be queued (a full disk): these recipients wait and fail again next time, so
      // that their notice is never lost; what the others got in this run is still written below
      for (const r of failedNow) deferForNotice(deps, r, now(), (err as Error).message);
      report.failed -= failedNow.length;
      report.deferred += failedNow.length;
      owed = new Set(failedNow);
      deps.log.log('error', `${env.id} failure notice could not be queued; tried again later`, { error: (err as Error).message });
    }
  }
  // a recipient whose failure notice is owed has failed: it gets no delay notice
  await warnDelayed(deps, run, now(), owed).catch((err: Error) => deps.log.log('error', `${env.id} delay notice could not be queued; tried again later`, { error: err.message }));
  try {
    if (env.recipients.every((r) => isFinal(r.state))) await deps.store.removeLocked(env.id);
    else await withReserve(deps.store.layout, () => deps.store.update(env, 'queue'));
  } catch (err) {
    // no room even with the reserve: the outcome is kept here and written by a later run, and the
    // message is not delivered again meanwhile; should this process end first, the in-flight journal
    // makes the next run treat these recipients as uncertain rather than send them a second copy
    pendingOf(deps.store.layout.root).set(env.id, env);
    deps.log.log('error', `${env.id} outcome kept in memory: the envelope cannot be written now`, { error: (err as Error).message });
  }
}

/**
 * The message stream as a transport reads it, with its end held back until the hand-over of these
 * recipients is noted durably in the in-flight journal: the final dot (or a command's end of input)
 * never goes out before a killed run could know it may have. A note that cannot be made fails the
 * stream, and the transport gives up before the end.
 */
function handOver(deps: RunnerDeps, stream: Readable, note: Omit<InflightNote, 't'>): Readable {
  const journal = deps.journal;
  if (!journal) return stream;
  const gate = new Transform({
    transform: (chunk, _e, cb) => cb(null, chunk),
    flush: (cb) => {
      withReserve(deps.store.layout, () => journal.mark(note)).then(
        () => cb(),
        (err: Error) => cb(err),
      );
    },
  });
  stream.once('error', (err) => gate.destroy(err));
  gate.once('close', () => stream.destroy());
  return stream.pipe(gate);
}

/** Puts a failed recipient back to deferred because its failure notice could not be queued. */
function deferForNotice(deps: RunnerDeps, r: Recipient, now: number, why: string): void {
  r.state = 'deferred';
  r.lastError = `${r.lastError ?? 'failed'} (the failure notice could not be queued: ${why})`;
  r.nextAttempt = new Date(now + deps.retry.min * 1000).toISOString();
}

/** Sends one delay notice for the recipients that passed a warning age not yet dealt with, and records
 * those ages as dealt with (also for recipients whose NOTIFY wants no delay notice). */
async function warnDelayed(deps: RunnerDeps, run: MessageRun, now: number, skip: Set<Recipient> = new Set()): Promise<void> {
  const ages = new Map(run.env.recipients.filter((r) => awaitsAttempt(r.state) && !skip.has(r)).map((r) => [r, warningsDue(deps.retry, run.env.arrival, r.warned ?? [], now)] as const));
  const late = [...ages].filter(([, due]) => due.length);
  if (!late.length) return;
  await sendNotice(deps, run, late.map(([r]) => r), 'delayed', now);
  for (const [r, due] of late) r.warned = [...(r.warned ?? []), ...due];
}

/** Builds, queues and logs one notice; delivers it locally too when the rule says so. */
async function sendNotice(deps: RunnerDeps, run: MessageRun, rcpts: Recipient[], kind: 'failed' | 'delayed', now: number): Promise<void> {
  if (!deps.enqueueNotice && !deps.localNotice) return;
  const notice = buildNotice(run.env, rcpts, kind, run.head, deps.hostname ?? 'localhost', new Date(now), new Date(expiresAt(deps.retry, run.env.arrival)));
  if (!notice) return;
  if (deps.enqueueNotice) {
    await deps.enqueueNotice(notice);
    deps.log.log('info', `${run.env.id} ${kind === 'failed' ? 'failure' : 'delay'} notice queued`, { to: `<${notice.recipient}>`, rcpts: rcpts.length });
  }
  if (!deps.localNotice || (deps.localNotices !== 'always' && routable(deps, run, notice.recipient))) return;
  await deps.localNotice(notice).then(
    () => deps.log.log('info', `${run.env.id} ${kind === 'failed' ? 'failure' : 'delay'} notice delivered locally`, { to: `<${notice.recipient}>` }),
    (err: Error) => deps.log.log('warn', `${run.env.id} local notice failed`, { error: err.message }),
  );
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
