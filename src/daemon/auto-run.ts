/**
 * The daemon's own queue runs: soon after new mail arrives, every minute, and when the online state
 * changes: the state file changed, or the network did (online/watch.ts: interfaces, addresses, routes,
 * noticed within a second). Each network or state-file event recomputes the state; only a change of
 * online/offline or of the connection starts a run, and that run tries deferred mail at once (retry times
 * were set for the old connection). Every change of the state, its reason included, is logged once.
 *
 * Runs never overlap (the spool's runner lock, and one run at a time here); a run that finds the lock
 * taken (a manual flush) is skipped, and that is logged once. State checks never overlap either: events during a check
 * ask for one more check after it, so a burst of events costs at most two.
 *
 * Errors of a run (a broken route file) are logged, never thrown: the daemon keeps accepting mail.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.js';
import type { OnlineState } from '../domain/online.js';
import { isFerryError } from '../errors.js';
import type { Observe } from '../queue/observe.js';
import type { Logger } from '../log/logger.js';
import { onlineView, stateChange, type OnlineView } from '../online/state.js';
import { watchNetwork, type NetWatch } from '../online/watch.js';
import type { RunSummary } from '../domain/online.js';
import { flushQueue } from '../queue/flush.js';
import { healthOf } from '../queue/health.js';
import { RunSignal } from '../queue/runner.js';

const EVERY_MS = 60_000;
const SOON_MS = 500;
/** How long the state file must be left alone before it is read after a change. */
const STATE_FILE_SETTLE_MS = 50;

/** A running scheduler. */
export interface AutoRun {
  /** Asks for a run shortly (new mail, a kick, a released message). */
  soon(): void;
  /** A run a person asked for (ferrymail flush through the control socket): after the run under way,
   * which is retargeted first when the connection asked for is another. */
  manual(connection?: string, route?: string): Promise<RunSummary>;
  /** The online state last computed (null before the first). */
  state(): OnlineState | null;
  /** The view the runs ask (the control socket's manual runs use it too). */
  view: OnlineView;
  /** Looks at the network again now (a network tool's hook said something changed): the SSIDs asked
   * before are forgotten and the state computed anew; a change starts a run as any other. */
  recheck(why: string): void;
  /** Takes a reloaded configuration for the runs to come; new online settings restart the watches. */
  reconfigure(cfg: Config): void;
  stop(): Promise<void>;
}

/** Starts the scheduler. */
export function startAutoRun(
  first: Config,
  log: Logger,
  firstView: OnlineView = onlineView(first.online),
  observe?: Observe,
  onState?: (s: OnlineState) => void,
): AutoRun {
  let cfg = first;
  let view = firstView;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  /** The run under way, to be told when the connection changes. */
  let signal: RunSignal | null = null;
  let again = false;
  let forceNext = false;
  let stopped = false;
  /** The last run was skipped for the runner lock (said once until a run goes ahead again). */
  let skipped = false;
  const states = stateLog(log, onState);
  const schedule = (ms: number): void => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(run, ms);
    timer.unref();
  };
  /** Runs one queue run after the one under way; the next automatic run is scheduled after it. */
  const serial = <T>(go: (sig: RunSignal) => Promise<T>): Promise<T> => {
    const after = (running ?? Promise.resolve()).then(() => {
      const sig = new RunSignal();
      signal = sig;
      return go(sig).finally(() => {
        if (signal === sig) signal = null;
      });
    });
    const done = after.then(
      () => undefined,
      () => undefined,
    );
    running = done;
    void done.finally(() => {
      if (running !== done) return;
      running = null;
      schedule(again ? (forceNext ? 0 : SOON_MS) : EVERY_MS);
      again = false;
    });
    return after;
  };
  const run = (): void => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    const force = forceNext;
    forceNext = false;
    const seen = states.count();
    void serial((sig) =>
      flushQueue(cfg, log, { force, manual: false, signal: sig, online: () => view.state(), observe }),
    )
      .then((r) => {
        skipped = false;
        if (r.failed) again = true; // failure notices were queued: send them soon too
        // the run's state is as old as its start: a state the watch noted meanwhile is newer
        if (r.routes && states.count() === seen && states.note(r.state)) {
          forceNext = again = true; // the state changed under this run: try deferred mail in the new one
        }
        // a run that only left waiting mail as it was has nothing to tell
        if (r.routes && r.messages > (r.unopened ?? 0))
          log.log('info', 'queue run', {
            delivered: r.delivered,
            deferred: r.deferred,
            failed: r.failed,
            uncertain: r.uncertain,
            connection: r.state.connection ?? 'offline',
          });
      })
      .catch((err) => {
        if (!isFerryError(err, 'locked')) log.log('error', 'queue run failed', { error: (err as Error).message });
        else if (!skipped) log.log('info', `queue run skipped: ${(err as Error).message}`);
        skipped = isFerryError(err, 'locked');
      });
  };
  const check = serialCheck(
    () => view,
    (s) => {
      if (states.note(s) && !stopped) {
        // a new connection: routes that went down on the old one may work, and a run under way stops
        // what the new one cannot carry; the next run starts the moment it ends
        healthOf(cfg.spool).clear();
        signal?.retarget(s);
        forceNext = true;
        if (running) again = true;
        else schedule(0);
      }
    },
  );
  let fileWatch = watchStateFile(cfg.online.state_file, check);
  let netWatch = watchesNetwork(cfg) ? startNetWatch(() => view, check, log) : null;
  check();
  schedule(SOON_MS);
  const auto: AutoRun = {
    soon: () => (running ? (again = true) : schedule(SOON_MS)),
    manual: (connection, route) => {
      if (connection && signal && connection !== states.last()?.connection)
        signal.retarget({ online: true, connection, why: 'forced' });
      return serial((sig) =>
        flushQueue(cfg, log, { connection, route, manual: true, signal: sig, online: () => view.state(), observe }),
      );
    },
    state: () => states.last(),
    recheck: (why) => {
      log.log('info', 'network hook: looking again', { why: why || undefined });
      view.forget();
      check();
    },
    get view() {
      return view;
    },
    reconfigure: (next) => {
      const moved = JSON.stringify(next.online) !== JSON.stringify(cfg.online);
      cfg = next;
      if (!moved) return;
      view = onlineView(next.online);
      fileWatch?.close();
      netWatch?.stop();
      fileWatch = watchStateFile(next.online.state_file, check);
      netWatch = watchesNetwork(next) ? startNetWatch(() => view, check, log) : null;
      check();
    },
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      fileWatch?.close();
      netWatch?.stop();
      signal?.retarget({ online: false, why: 'the daemon is stopping' });
      await running;
    },
  };
  return auto;
}

/** The last state and its log line; note() says whether online/offline or the connection changed;
 * count() how many different states were noted so far. */
function stateLog(
  log: Logger,
  onState?: (s: OnlineState) => void,
): { note(s: OnlineState): boolean; last(): OnlineState | null; count(): number } {
  let last: OnlineState | null = null;
  let noted = 0;
  return {
    count: () => noted,
    note(s) {
      const change = stateChange(last, s);
      if (change === 'same') return false;
      last = s;
      noted++;
      log.log('info', 'online state', { state: s.online ? 'online' : 'offline', connection: s.connection, why: s.why });
      onState?.(s);
      return change === 'moved';
    },
    last: () => last,
  };
}

/** Recomputes the state on demand, one computation at a time; a request during one asks for one more. */
export function serialCheck(view: OnlineView | (() => OnlineView), onState: (s: OnlineState) => void): () => void {
  const current = typeof view === 'function' ? view : () => view;
  let busy = false;
  let dirty = false;
  const check = (): void => {
    if (busy) {
      dirty = true;
      return;
    }
    busy = true;
    current()
      .state()
      .then(onState)
      .finally(() => {
        busy = false;
        if (dirty) {
          dirty = false;
          check();
        }
      });
  };
  return check;
}

/** Network changes matter when the state is computed from them (rules) or may depend on them (command). */
function watchesNetwork(cfg: Config): boolean {
  return cfg.online.rules.length > 0 || cfg.online.command.length > 0;
}

/** Watches the network; each change drops the cached SSIDs and recomputes the state. */
function startNetWatch(view: () => OnlineView, check: () => void, log: Logger): NetWatch {
  return watchNetwork(
    () => {
      view().forget();
      check();
    },
    {
      // the first event of a burst is looked at at once: a link that comes up is used in milliseconds
      leading: true,
      onMode: (mode, why) => {
        if (mode === 'poll') log.log('warn', 'watching the network by polling every second', { why });
      },
    },
  );
}

/**
 * Watches the online state file's directory for changes to it (it may be replaced, not written). A
 * change is read once the writer is done: `echo home > FILE` truncates and then writes, and reading in
 * between would see a moment of "offline" that never was.
 */
function watchStateFile(file: string | undefined, onChange: () => void): fs.FSWatcher | null {
  if (!file) return null;
  let settle: NodeJS.Timeout | null = null;
  try {
    const w = fs.watch(path.dirname(file), { persistent: false }, (_e, name) => {
      if (name !== path.basename(file)) return;
      if (settle) clearTimeout(settle);
      settle = setTimeout(() => {
        settle = null;
        onChange();
      }, STATE_FILE_SETTLE_MS);
      settle.unref();
    });
    w.on('error', () => undefined);
    return w;
  } catch {
    return null;
  }
}
