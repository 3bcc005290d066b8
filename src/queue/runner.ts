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
 * delivered at once (PARALLEL_MESSAGES, and PARALLEL_LOCAL of those only for this host); runs never deliver the same message twice because each is
 * delivered under its lock. A run can be retargeted while it runs (the connection changed): it starts no
 * further message, cuts what its routes unusable on the new connection have under way, and ends soon.
 * An uncertain recipient's retry goes only by the route that left it uncertain (unless that route says
 * retry-any), so that it never arrives a second time under another identity. deliver.ts walks the
 * routes of one message, settle.ts records outcomes, notices.ts queues notices.
 */
import type { Readable } from 'node:stream';
import { formatDuration } from '../config/schema.js';
import type { Envelope, Recipient } from '../domain/envelope.js';
import type { OnlineState } from '../domain/online.js';
import { awaitsAttempt, isFinal, type RunCounts } from '../domain/outcome.js';
import { isFerryError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { headerFromAddresses } from '../route/header-rewrite.js';
import { candidates, plan } from '../route/select.js';
import type { Observe } from './observe.js';
import type { Route } from '../route/types.js';
import type { InflightJournal } from '../spool/inflight.js';
import type { Lock } from '../spool/lock.js';
import type { Brief, BriefRecipient } from '../spool/queue-index.js';
import { withReserve } from '../spool/space.js';
import type { Entry, Store } from '../spool/store.js';
import type { RouteDown, Transport } from '../transport/types.js';
import type { Notice } from './bounce.js';
import { deliverByRoutes, type MessageRun } from './deliver.js';
import type { RouteHealth } from './health.js';
import { deferForNotice, sendNotice, warnDelayed } from './notices.js';
import { pendingOf } from './recover.js';
import { expired, type RetryPolicy, warningsDue } from './retry.js';
import { settle } from './settle.js';
import { targetKey } from '../local/expand.js';

/**
 * Tells a run under way that the connection changed: retarget() is called by whoever started the run
 * (the daemon's scheduler), the run decides which of its routes the new connection can still use.
 */
export class RunSignal {
  /** The connection the run was retargeted to, if it was. */
  next: OnlineState | null = null;
  private onChange: ((s: OnlineState) => void) | undefined;
  private usableNames: Set<string> | null = null;

  /** The connection changed. */
  retarget(state: OnlineState): void {
    this.next = state;
    this.onChange?.(state);
  }

  /** Whether a route may still be used (every route until a retarget). */
  usable(route: Route): boolean {
    return !this.usableNames || this.usableNames.has(route.name);
  }

  /** The run's side: routes usable on a new connection, and what to do at once. */
  attach(routes: readonly Route[], onChange: (unusable: Route[]) => void): void {
    this.onChange = (s) => {
      const ok = candidates(routes, s);
      this.usableNames = new Set(ok.map((r) => r.name));
      onChange(routes.filter((r) => !this.usableNames!.has(r.name)));
    };
    if (this.next) this.onChange(this.next);
  }
}

/** What a run needs. */
export interface RunnerDeps {
  store: Store;
  /** Told of each attempt and outcome (the observer hooks); never waited for. */
  observe?: Observe;
  /** The built-in route of this host's own recipients: it takes every recipient isLocal() says is local,
   * on any connection and offline, before and instead of the configured routes. */
  local?: {
    route: Route;
    isLocal(r: Recipient): boolean;
    /** Expands a local recipient that was queued unexpanded (its aliases could not be read then). */
    expand?(r: Recipient): Promise<{ targets: Recipient[] } | { reply: string; permanent: boolean }>;
  };
  /** Messages with in-flight notes this run could not settle (recover.ts): not delivered this run. */
  unsettled?: ReadonlySet<string>;
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
  /** Routes that are down (shared by the runs of one process); absent: every route is always tried. */
  health?: RouteHealth;
  /** How long a route whose server could not be reached stays down after the run (default 60 s). */
  holdDownMs?: number;
  /** A route just went down (tell someone: its login was refused, or its server is gone). */
  onRouteDown?: (route: Route, down: RouteDown) => void;
  /** The run is told when the connection changes under it. */
  signal?: RunSignal;
}

/** What one run did. */
export type RunReport = RunCounts;

/** The counts of a run that has taken no message yet. */
export function emptyReport(): RunReport {
  return { messages: 0, delivered: 0, deferred: 0, failed: 0, uncertain: 0, busy: 0 };
}

/** Messages delivered at once in a run; each route's transport bounds its own connections. */
export const PARALLEL_MESSAGES = 8;

/** Messages for this host alone delivered at once: their time goes into fsyncs, not into a peer's
 * patience, so more of them in flight share each one (32 measured best on 2 cores, bench/local.sh). */
export const PARALLEL_LOCAL = 64;

/** Runs the queue once; resolves with counts. One transport per route serves the whole run (so that it
 * can keep its connection open from message to message) and is closed at the end. */
export async function runQueue(deps: RunnerDeps): Promise<RunReport> {
  const now = deps.now ?? Date.now;
  const report = emptyReport();
  const state = await deps.online();
  const transports = new Map<Route, Transport>();
  let notices = 0;
  const run: RunnerDeps = {
    ...deps,
    transportFor: (r) => transports.get(r) ?? transports.set(r, deps.transportFor(r)).get(r)!,
    enqueueNotice: deps.enqueueNotice && ((n) => deps.enqueueNotice!(n).then(() => void notices++)),
  };
  // a new connection: what routes it cannot use have under way is cut at once
  deps.signal?.attach(deps.routes, (unusable) => {
    const why = `the connection changed to ${deps.signal!.next?.online ? deps.signal!.next.connection : 'none'}`;
    for (const r of unusable) transports.get(r)?.abort?.(why);
  });
  const seen = new Set<string>();
  try {
    await runPass(run, state, seen, report, now);
    // the notices this run queued go in the same run (a local sender's lands in its mailbox at once);
    // a notice never causes another, so one more pass is all there is
    if (notices && !deps.signal?.next) await runPass(run, state, seen, report, now);
  } finally {
    await Promise.all([...transports.values()].map((t) => t.close?.().catch(() => undefined)));
  }
  return report;
}

/** Delivers the due messages of the queue not seen yet in this run. */
async function runPass(
  deps: RunnerDeps,
  state: OnlineState,
  seen: Set<string>,
  report: RunReport,
  now: () => number,
): Promise<void> {
  const at = (): number => (deps.force ? Infinity : now());
  // a message whose outcome waits in memory for room on the disk is not delivered again meanwhile
  const pending = pendingOf(deps.store.layout.root);
  // offline, with no route usable and nothing local due, a message that waits for the same reason as
  // last time is not even opened: an offline run reads and writes nothing
  const still = waitsStill(deps, state, at(), now());
  // decided on each message's brief: while queue/ is unchanged since the last run, no envelope is read
  // for a message that is not due (spool/queue-index.ts)
  const { entries: waiting, corrupt } = await deps.store.queued((b) => {
    if (seen.has(b.id)) return false;
    seen.add(b.id);
    // and one whose interrupted delivery could not be settled yet waits for a run that can
    if (!due(b, at()) || pending.has(b.id) || deps.unsettled?.has(b.id)) return false;
    if (!still?.(b)) return true;
    report.messages++;
    report.unopened = (report.unopened ?? 0) + 1;
    report.deferred += b.recipients.filter((r) => isDue(r, at())).length;
    return false;
  });
  for (const c of corrupt) deps.log.log('warn', 'corrupt envelope moved to corrupt/', { id: c.id, reason: c.reason });
  // two lanes: messages only for this host's own recipients, and the rest (each message judged once)
  const local = deps.local;
  const lanes: [Entry[], Entry[]] = [[], []];
  for (const e of waiting)
    lanes[local && e.envelope.recipients.every((r) => isFinal(r.state) || local.isLocal(r)) ? 0 : 1].push(e);
  const goOn = (): boolean => !deps.signal?.next;
  const deliver = (entry: Entry): Promise<void> => runLocked(deps, state, entry, report, now, at);
  await Promise.all([
    eachLimited(lanes[0], deps.parallel ?? PARALLEL_LOCAL, goOn, deliver),
    eachLimited(lanes[1], deps.parallel ?? PARALLEL_MESSAGES, goOn, deliver),
  ]);
}

/** Calls fn for every item, at most `limit` at a time, while goOn() holds; resolves when all are done. */
async function eachLimited<T>(
  items: T[],
  limit: number,
  goOn: () => boolean,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length && goOn()) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** Delivers one message under its lock; a message another process holds is counted busy and left, and
 * none is started while the spool has no room for what delivery writes. */
async function runLocked(
  deps: RunnerDeps,
  state: OnlineState,
  entry: Entry,
  report: RunReport,
  now: () => number,
  at: () => number,
): Promise<void> {
  report.messages++;
  if (deps.roomToDeliver && !deps.roomToDeliver()) {
    report.busy++;
    if (!noRoomSaid.has(deps.store))
      deps.log.log('warn', 'the spool is nearly full: no delivery is started until there is room again');
    noRoomSaid.add(deps.store);
    return;
  }
  let lock: Lock;
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

/** When no route can be used now (offline, or on a connection no route serves, and no permanent route): a test for a message that a run would
 * only look at to say again what it says already. Its due recipients, none local, are all either deferred
 * for this very reason or never tried (the listings say why those wait: queue-why.ts), and it owes no
 * delay warning and has not expired. `at` is the time that decides what is due (a manual run: any time),
 * `now` the clock. Null when routes can be used. */
function waitsStill(deps: RunnerDeps, state: OnlineState, at: number, now: number): ((b: Brief) => boolean) | null {
  if (deps.onlyRoute || candidates(deps.routes, state).length) return null;
  // what a recipient is told when no route can be used (offline, or on a connection no route serves)
  const [none] = plan([], state, '', [''], []);
  const reply = none && 'defer' in none ? `451 4.4.1 ${none.defer}` : null;
  if (!reply) return null;
  const local = deps.local;
  const waits = (r: BriefRecipient): boolean =>
    !local?.isLocal(r) &&
    ((r.state === 'deferred' && r.lastError === reply) || (r.state === 'queued' && !r.lastError && !r.attempts));
  // a delay warning is owed by any recipient awaiting an attempt, due now or not (as warnDelayed sees it)
  const owes = (b: Brief): boolean =>
    b.recipients.some(
      (r) => awaitsAttempt(r.state) && warningsDue(deps.retry, b.arrival, r.warned ?? [], now).length > 0,
    );
  return (b) =>
    !expired(deps.retry, b.arrival, now) && b.recipients.every((r) => !isDue(r, at) || waits(r)) && !owes(b);
}

/** True when some recipient of the message is due now. */
function due(b: Brief, now: number): boolean {
  return b.recipients.some((r) => isDue(r, now));
}

/** True when a recipient waits for an automatic attempt and its time has come. */
function isDue(r: BriefRecipient, now: number): boolean {
  return awaitsAttempt(r.state) && (!r.nextAttempt || Date.parse(r.nextAttempt) <= now);
}

/** Delivers one message's pending recipients and records the outcome of each. */
async function runMessage(
  deps: RunnerDeps,
  state: OnlineState,
  entry: Entry,
  report: RunReport,
  now: () => number,
  at: () => number,
): Promise<void> {
  // re-read under the lock: another process may have changed, held or removed it since the listing
  const current = await deps.store.fresh(entry).catch((err: unknown) => {
    if (isFerryError(err, 'not-found')) return null;
    throw err;
  });
  if (current?.place !== 'queue') return;
  const env = current.envelope;
  const run: MessageRun = {
    env,
    head: await deps.store.readHead(env),
    state,
    failedBefore: new Set(env.recipients.filter((r) => r.state === 'failed').map((r) => r.address)),
    troubled: new Set(),
    // only where no route can be used can a run leave the envelope as it was: elsewhere (the drain's
    // hot path) it is written as before, without taking a copy to compare
    written: candidates(deps.routes, state).length ? undefined : JSON.stringify(env),
  };
  // an envelope a killed daemon left behind the data (docs/spool.md) goes when the message is next
  // taken with a route to try, as its envelope is written anyway: an older version would send it along
  if (run.written === undefined) await deps.store.cutBehind(env).catch(() => false);
  dropRepeated(env);
  const pending = env.recipients.filter((r) => isDue(r, at()));
  if (expired(deps.retry, env.arrival, now())) {
    for (const r of pending)
      settle(
        deps,
        env,
        r,
        'permfail',
        `550 4.4.7 message expired after ${formatDuration(deps.retry.lifetime)} in the queue${r.lastError ? ` (last error: ${r.lastError})` : ''}`,
        now(),
        report,
      );
    return finish(deps, run, now, report);
  }
  const local = deps.local;
  if (local?.expand) await expandQueued(deps, env, pending, now, report);
  const here = local ? pending.filter((r) => local.isLocal(r)) : [];
  const plans = plan(
    deps.routes,
    state,
    env.sender,
    pending.filter((r) => !here.includes(r)).map((r) => r.address),
    headerFromAddresses(run.head),
    env.origin.user,
    env.size,
  );
  const routesOf = new Map<string, Route[]>();
  // this host's own recipients go first, by the local route, whatever the connection
  for (const r of here)
    if (!deps.onlyRoute || deps.onlyRoute === local!.route.name) routesOf.set(r.address, [local!.route]);
  for (const p of plans) {
    const r = pending.find((x) => x.address === p.recipient)!;
    if ('defer' in p) {
      // with no route files at all nothing can leave: the message stays exactly as it is; and a
      // recipient that waits for the same reason as last time (offline, still) is left as it is, so
      // that an offline run writes nothing
      const reply = `451 4.4.1 ${p.defer}`;
      if (r.state === 'deferred' && r.lastError === reply) report.deferred++;
      else if (!deps.onlyRoute && deps.routes.length)
        settle(deps, env, r, 'tempfail', reply, now(), report, { attempted: false });
      continue;
    }
    const own = sameRoute(deps.routes, r, p.routes);
    if ('waits' in own) {
      if (!deps.onlyRoute) settle(deps, env, r, 'tempfail', own.waits, now(), report, { attempted: false });
      continue;
    }
    const routes = deps.onlyRoute ? own.routes.filter((x) => x.name === deps.onlyRoute) : own.routes;
    if (routes.length) routesOf.set(p.recipient, routes);
  }
  await deliverByRoutes(deps, run, pending, routesOf, now, report);
  await finish(deps, run, now, report);
}

/**
 * Expands the local recipients that were queued without their targets (their aliases could not be read
 * when the message came, or an older version queued them): each becomes its targets, new recipients due
 * now; one that cannot be expanded fails now (for good, or for this attempt).
 */
async function expandQueued(
  deps: RunnerDeps,
  env: Envelope,
  pending: Recipient[],
  now: () => number,
  report: RunReport,
): Promise<void> {
  const local = deps.local!;
  for (const r of pending.filter((x) => !x.local && local.isLocal(x))) {
    const ex = await local.expand!(r);
    pending.splice(pending.indexOf(r), 1);
    if ('reply' in ex) {
      settle(deps, env, r, ex.permanent ? 'permfail' : 'tempfail', ex.reply, now(), report, { attempted: false });
      continue;
    }
    env.recipients.splice(env.recipients.indexOf(r), 1);
    for (const t of ex.targets) {
      if (env.recipients.some((x) => targetKey(x) === targetKey(t))) continue;
      env.recipients.push(t);
      pending.push(t);
    }
  }
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
  if (kept.size !== env.recipients.length)
    env.recipients = env.recipients.filter((r) => kept.get(r.address.toLowerCase()) === r);
}

/**
 * The routes an uncertain recipient may be retried by: only the route that left it uncertain (the copy
 * it may already have came from that route's relay and identity), unless that route says retry-any.
 * When that route does not serve it now, it waits, and says for what.
 */
function sameRoute(all: readonly Route[], r: Recipient, routes: Route[]): { routes: Route[] } | { waits: string } {
  if (!r.uncertain || r.state !== 'deferred' || !r.route) return { routes };
  const own = all.find((x) => x.name === r.route);
  if (own?.uncertain === 'retry-any') return { routes };
  const mine = routes.filter((x) => x.name === r.route);
  if (mine.length) return { routes: mine };
  return {
    waits: `451 4.4.1 waits for route ${r.route}, which left its last delivery uncertain: its retry goes by that route only (uncertain: retry-any allows others)`,
  };
}

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
      deps.log.log('error', `${env.id} failure notice could not be queued; tried again later`, {
        error: (err as Error).message,
      });
    }
  }
  // a recipient whose failure notice is owed has failed: it gets no delay notice
  await warnDelayed(deps, run, now(), owed).catch((err: Error) =>
    deps.log.log('error', `${env.id} delay notice could not be queued; tried again later`, { error: err.message }),
  );
  try {
    if (env.recipients.every((r) => isFinal(r.state))) await deps.store.removeLocked(env.id);
    else if (run.written === undefined || JSON.stringify(env) !== run.written)
      await withReserve(deps.store.layout, () => deps.store.update(env, 'queue'));
  } catch (err) {
    // no room even with the reserve: the outcome is kept here and written by a later run, and the
    // message is not delivered again meanwhile; should this process end first, the in-flight journal
    // makes the next run treat these recipients as uncertain rather than send them a second copy
    pendingOf(deps.store.layout.root).set(env.id, env);
    deps.log.log('error', `${env.id} outcome kept in memory: the envelope cannot be written now`, {
      error: (err as Error).message,
    });
  }
}
