/**
 * One queue run for a configuration: the online state (online/state.ts: forced by --connection / -qo,
 * else the query command, the state file, the interface rules), the route files, the transports, under
 * the spool's runner lock so that two runs (the daemon's and a manual one) never deliver at the same time.
 *
 * Fails with FerryError for a broken route file (config) or a run already in progress (locked); delivery
 * problems are outcomes recorded per recipient.
 */
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import { loadRoutes } from '../config/routes.js';
import type { OnlineState, RunSummary } from '../domain/online.js';
import { FerryError } from '../errors.js';
import type { Observe } from './observe.js';
import type { Logger } from '../log/logger.js';
import { onlineView } from '../online/state.js';
import { candidates } from '../route/select.js';
import { tryLockHolder } from '../spool/lock.js';
import { openStore, type RecoveryReport } from '../spool/store.js';
import { openSpoolWriter } from '../spool/writer.js';
import { openJournal } from '../spool/inflight.js';
import { ensureReserve, freeBytes } from '../spool/space.js';
import type { RouteDown } from '../transport/types.js';
import { healthOf } from './health.js';
import { localNoticeDelivery, runNotifyCommand } from './local-notice.js';
import { LOCAL_ROUTE, localDelivery } from './local-route.js';
import { settleInflight, writePending } from './recover.js';
import type { RetryPolicy } from './retry.js';
import { emptyReport, runQueue, type RunSignal } from './runner.js';
import { enqueueNotice, messageFor, transportFor } from './wiring.js';

/** The online state now, as the configuration says to find it. */
export async function onlineState(cfg: Config, connection?: string): Promise<OnlineState> {
  return onlineView(cfg.online).state(connection);
}

/**
 * Says that a route went down: a log line, and for a refused login (which no retry will mend) also the
 * notify command, once, since the user has to act.
 */
function routeDown(cfg: Config, log: Logger, route: string, down: RouteDown): void {
  const until = down.auth
    ? 'until its settings change or a manual flush'
    : `for ${cfg.queue.route_hold_down} s, or until the connection changes`;
  log.log('warn', `route ${route} is down ${until}: delivery temporarily suspended`, { reason: down.reason });
  if (!down.auth || !cfg.queue.notify_command.length) return;
  const summary = `route ${route}: ${down.reason}`;
  runNotifyCommand(cfg.queue.notify_command, {
    sender: '',
    recipient: '',
    text: summary,
    kind: 'delayed',
    id: route,
    subject: `ferrymail: the login to route ${route} was refused`,
    summary,
  }).catch((err: Error) => log.log('warn', 'notify_command failed', { error: err.message }));
}

/** The retry policy of the queue settings. */
export function retryPolicy(q: Config['queue']): RetryPolicy {
  return { min: q.retry_min, max: q.retry_max, lifetime: q.lifetime, warnings: [...q.delay_warnings] };
}

/** When this process last looked for orphaned data in a spool, and how often it looks. */
const orphanScans = new Map<string, number>();
const ORPHAN_SCAN_MS = 30 * 60_000;

/** What a run is asked to do. */
export interface FlushOptions {
  /** Take this connection as the online state (--connection, -qo). */
  connection?: string;
  /** Try deferred mail now, whatever its retry time (default true: a manual run). */
  force?: boolean;
  /** Only this route is tried. */
  route?: string;
  /** The online state when no connection is given (default: asked of the configured sources). */
  online?: () => Promise<OnlineState>;
  /** A person asked for this run (default: force): routes that are down are tried again. */
  manual?: boolean;
  /** Tells the run when the connection changes under it (the daemon's scheduler). */
  signal?: RunSignal;
  /** Told of each attempt and outcome (the observer hooks). */
  observe?: Observe;
}

/** The log line of a recovery that found something (the daemon's at start, and each queue run's). */
export function logRecovered(log: Logger, r: RecoveryReport): void {
  if (r.tmpRemoved || r.orphansRemoved || r.rolledForward)
    log.log('info', 'spool recovered', {
      tmp_removed: r.tmpRemoved,
      orphans_removed: r.orphansRemoved,
      rolled_forward: r.rolledForward || undefined,
    });
}

/**
 * Runs the queue once under the runner lock; a manual flush (force) tries deferred mail now; `route`
 * limits the run to that route. `online` gives the state when no connection is forced (the daemon passes
 * its view, which keeps SSIDs cached).
 */
export async function flushQueue(cfg: Config, log: Logger, opts: FlushOptions = {}): Promise<RunSummary> {
  const { connection, force = true, route, online } = opts;
  const manual = opts.manual ?? force;
  const routes = loadRoutes(cfg.dir);
  if (route !== undefined && route !== LOCAL_ROUTE && !routes.some((r) => r.name === route)) {
    throw new FerryError(
      'usage',
      `no route named ${JSON.stringify(route)} (routes: ${[LOCAL_ROUTE, ...routes.map((r) => r.name)].join(', ')})`,
    );
  }
  /** The online state the run goes by: the connection forced, else the caller's view, else the sources'. */
  const stateNow = (): Promise<OnlineState> => (connection || !online ? onlineState(cfg, connection) : online());
  // a spool that does not exist yet holds nothing to run, and a run creates nothing (docs/spool.md)
  if (!fs.existsSync(cfg.spool))
    return { ...emptyReport(), state: await stateNow(), routes: routes.length, waiting: 0, route };
  const spool = openSpoolWriter(cfg.spool);
  const lock = await tryLockHolder(cfg.spool, 'runner');
  if (!('release' in lock))
    throw new FerryError('locked', `a queue run is already in progress${lock.pid ? ` (pid ${lock.pid})` : ''}`);
  try {
    const store = openStore(cfg.spool);
    // what killed runs and writers left (temporary files, orphaned data, stale locks) is any runner's to clear
    // (orphaned data at most every ORPHAN_SCAN_MS in one process: that look reads every name in four
    // folders, the cost of a minute's run with a long queue otherwise)
    const last = orphanScans.get(cfg.spool) ?? -Infinity;
    const orphans = Date.now() - last >= ORPHAN_SCAN_MS;
    if (orphans) orphanScans.set(cfg.spool, Date.now());
    const recovered = await store.recover(false, orphans);
    logRecovered(log, recovered);
    // outcomes a full disk kept in memory, then deliveries a killed run left in flight (recover.ts)
    await writePending(store, log);
    const local = localDelivery(cfg, log);
    const settled = await settleInflight(store, [local.route, ...routes], log, Date.now(), local.verify);
    const floor = cfg.limits.spool_minfree / 4;
    ensureReserve(store.layout, floor);
    const health = healthOf(cfg.spool);
    if (manual) health.clear(true); // a person asks for a new try, of every route
    const state = await stateNow();
    const journal = await openJournal(store.layout);
    // closed whatever fails from here on: its descriptor is not closed when collected
    const report = await (settled.clean ? journal.clear() : Promise.resolve())
      .then(() =>
        runQueue({
          store,
          observe: opts.observe,
          routes,
          online: async () => state,
          local,
          transportFor: (r) => (r === local.route ? local.transport() : transportFor(r, cfg.hostname)),
          messageFor: (env, r, head) => messageFor(store, env, r, head, cfg.hostname),
          retry: retryPolicy(cfg.queue),
          log,
          enqueueNotice: (n) => enqueueNotice(spool, n),
          localNotice: localNoticeDelivery({ mailbox: cfg.queue.notice_mailbox, command: cfg.queue.notify_command }),
          localNotices: cfg.queue.local_notices,
          hostname: cfg.hostname,
          force,
          onlyRoute: route,
          journal,
          unsettled: settled.unsettled,
          roomToDeliver: roomCheck(() => freeBytes(cfg.spool) >= floor),
          health,
          holdDownMs: cfg.queue.route_hold_down * 1000,
          onRouteDown: (r, down) => routeDown(cfg, log, r.name, down),
          signal: opts.signal,
        }),
      )
      .finally(() => journal.close());
    const serves =
      route === undefined || route === LOCAL_ROUTE || candidates(routes, state).some((r) => r.name === route);
    const note = serves
      ? undefined
      : `route ${route} is not used ${state.online ? `on connection ${state.connection}` : 'offline'} (give --connection): nothing was tried`;
    return { ...report, state, routes: routes.length, waiting: report.messages, route, note };
  } finally {
    await lock.release();
  }
}

/** A check of free space asked before every message, made at most every 50 ms while there is room (a
 * statfs per message is a tenth of a local delivery's own cost); once there is none, asked every time. */
function roomCheck(check: () => boolean): () => boolean {
  let until = 0;
  return () => {
    const now = Date.now();
    if (now < until) return true;
    const ok = check();
    until = ok ? now + 50 : 0;
    return ok;
  };
}
