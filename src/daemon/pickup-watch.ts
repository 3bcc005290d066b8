/**
 * The daemon's watch of the drop folder: local users' drop files are taken into the queue at once
 * (inotify through fs.watch), at start, and every half minute in case an event was missed.
 *
 * Pickups never overlap: an event during one asks for one more after it. Errors are logged by the pickup
 * itself; this module never throws.
 */
import fs from 'node:fs';
import type { Config } from '../config/types.js';
import { pickupDrops, type PickupDeps } from '../receive/pickup.js';

const EVERY_MS = 30_000;

/** A running watch. */
export interface PickupWatch {
  /** Takes a reloaded configuration for the pickups to come. */
  reconfigure(cfg: Config): void;
  /** Resolves once no pickup runs. */
  stop(): Promise<void>;
}

/** Starts watching SPOOL/drop; runs a first pickup at once. */
export function watchDrops(first: Config, deps: PickupDeps): PickupWatch {
  let cfg = first;
  let running: Promise<void> | null = null;
  let again = false;
  let stopped = false;
  const run = (): void => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = pickupDrops(cfg, deps)
      .then(
        () => undefined,
        (err: Error) => deps.log.log('error', 'drop folder pickup failed', { error: err.message }),
      )
      .finally(() => {
        running = null;
        if (again) {
          again = false;
          run();
        }
      });
  };
  let watcher: fs.FSWatcher | null = null;
  try {
    watcher = fs.watch(deps.spool.layout.dir('drop'), () => run());
    watcher.on('error', () => undefined);
  } catch (err) {
    deps.log.log('warn', 'cannot watch the drop folder; picking up every 30 s', { error: (err as Error).message });
  }
  const timer = setInterval(run, EVERY_MS);
  timer.unref();
  run();
  return {
    reconfigure: (next) => {
      cfg = next;
    },
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      watcher?.close();
      await running;
    },
  };
}
