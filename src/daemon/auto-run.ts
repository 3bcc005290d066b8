/**
 * The daemon's own queue runs: soon after new mail arrives, when the online state file changes, and
 * every minute, each respecting retry times. Runs never overlap (the spool's runner lock, and one run at
 * a time here); a run that finds the lock taken (a manual flush) is simply skipped.
 *
 * Errors of a run (a broken route file) are logged, never thrown: the daemon keeps accepting mail.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.js';
import { isFerryError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { flushQueue } from '../queue/flush.js';

const EVERY_MS = 60_000;
const SOON_MS = 500;

/** A running scheduler. */
export interface AutoRun {
  /** Asks for a run shortly (new mail, a kick). */
  soon(): void;
  stop(): Promise<void>;
}

/** Starts the scheduler. */
export function startAutoRun(cfg: Config, log: Logger): AutoRun {
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  let again = false;
  let stopped = false;
  const schedule = (ms: number): void => {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(run, ms);
    timer.unref();
  };
  const run = (): void => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = flushQueue(cfg, log, undefined, false)
      .then((r) => {
        if (r.failed) again = true; // failure notices were queued: send them soon too
        if (r.routes && r.messages) log.log('info', 'queue run', { delivered: r.delivered, deferred: r.deferred, failed: r.failed, uncertain: r.uncertain, connection: r.state.connection ?? 'offline' });
      })
      .catch((err) => {
        if (!isFerryError(err, 'locked')) log.log('error', 'queue run failed', { error: (err as Error).message });
      })
      .finally(() => {
        running = null;
        schedule(again ? SOON_MS : EVERY_MS);
        again = false;
      });
  };
  const watcher = watchStateFile(cfg.online.state_file, () => schedule(SOON_MS));
  schedule(SOON_MS);
  return {
    soon: () => schedule(SOON_MS),
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      watcher?.close();
      await running;
    },
  };
}

/** Watches the online state file's directory for changes to it (it may be replaced, not written). */
function watchStateFile(file: string | undefined, onChange: () => void): fs.FSWatcher | null {
  if (!file) return null;
  try {
    const w = fs.watch(path.dirname(file), { persistent: false }, (_e, name) => {
      if (name === path.basename(file)) onChange();
    });
    w.on('error', () => undefined);
    return w;
  } catch {
    return null;
  }
}
