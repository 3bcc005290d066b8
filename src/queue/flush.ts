/**
 * One queue run for a configuration: the online state (online/state.ts: forced by --connection / -qo,
 * else the query command, the state file, the interface rules), the route files, the transports, under
 * the spool's runner lock so that two runs (the daemon's and a manual one) never deliver at the same time.
 *
 * Fails with FerryError for a broken route file (config) or a run already in progress (locked); delivery
 * problems are outcomes recorded per recipient.
 */
import type { Config } from '../config/types.js';
import { loadRoutes } from '../config/routes.js';
import type { OnlineState, RunSummary } from '../domain/online.js';
import { FerryError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { onlineView } from '../online/state.js';
import { tryLock } from '../spool/lock.js';
import { openStore } from '../spool/store.js';
import { openSpoolWriter } from '../spool/writer.js';
import { DEFAULT_RETRY } from './retry.js';
import { runQueue } from './runner.js';
import { enqueueNotice, messageFor, transportFor } from './wiring.js';

/** The online state now, as the configuration says to find it. */
export async function onlineState(cfg: Config, connection?: string): Promise<OnlineState> {
  return onlineView(cfg.online).state(connection);
}

/**
 * Runs the queue once under the runner lock; a manual flush (force) tries deferred mail now. `online`
 * gives the state when no connection is forced (the daemon passes its view, which keeps SSIDs cached).
 */
export async function flushQueue(cfg: Config, log: Logger, connection?: string, force = true, online?: () => Promise<OnlineState>): Promise<RunSummary> {
  const routes = loadRoutes(cfg.dir);
  if (routes.length === 0) {
    // without routes there is no way out: leave every message exactly as it is (and let the daemon's
    // own runs cost nothing: only a manual run counts what waits)
    const waiting = force ? (await openStore(cfg.spool).list()).entries.filter((e) => e.place === 'queue').length : 0;
    return { messages: 0, delivered: 0, deferred: 0, failed: 0, uncertain: 0, busy: 0, routes: 0, waiting, state: { online: false, why: 'no routes' } };
  }
  const lock = await tryLock(cfg.spool, 'runner');
  if (!lock) throw new FerryError('locked', 'a queue run is already in progress');
  try {
    const store = openStore(cfg.spool);
    const spool = openSpoolWriter(cfg.spool);
    const state = connection || !online ? await onlineState(cfg, connection) : await online();
    const report = await runQueue({
      store,
      routes,
      online: async () => state,
      transportFor: (r) => transportFor(r, cfg.hostname),
      messageFor: (env, r) => messageFor(store, env, r),
      retry: DEFAULT_RETRY,
      log,
      enqueueNotice: (n) => enqueueNotice(spool, n),
      hostname: cfg.hostname,
      force,
    });
    return { ...report, state, routes: routes.length, waiting: report.messages };
  } finally {
    await lock.release();
  }
}
