/**
 * `ferrymail daemon`: owns the spool, serves SMTP/LMTP and the control socket, stops cleanly on SIGTERM.
 *
 * Start-up: take the spool's daemon lock (a second daemon on the same spool is refused), open the control
 * socket, then the listeners, then, while mail comes in, recover the spool (temporary files and claims of
 * dead writers, orphaned data; the queue runs report corrupt envelopes), its own queue runs, the watch of
 * the online state and the watch of the drop folder (local users' messages, pickup-watch.ts). Shutdown:
 * stop listening, let a message being received (in DATA) finish; sessions between commands get 421;
 * close the control socket, release the lock. Fails with FerryError; never leaves a listener behind.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { deepFreeze, type Config } from '../config/types.js';
import type { DaemonStatus } from '../control/protocol.js';
import type { Envelope } from '../domain/envelope.js';
import { FerryError } from '../errors.js';
import { createLogger, type Logger } from '../log/logger.js';
import { setReclaim } from '../spool/reclaim.js';
import { type DoorDeps, startSmtpDoor, type SmtpDoor } from '../receive/smtp.js';
import v8 from 'node:v8';
import vm from 'node:vm';
import { loadHooks, notify, type Observer } from '../receive/hook-modules.js';
import type { QueueEvent } from '../queue/observe.js';
import { startDesktopNotices } from './desktop.js';
import { EventFeed } from './events.js';
import type { Hooks } from '../receive/stages.js';
import { isId } from '../spool/id.js';
import { tryLockHolder, type Lock } from '../spool/lock.js';
import { checkLayout } from '../spool/layout.js';
import { openStore, queueCounts, type Store } from '../spool/store.js';
import { openSpoolWriter, type SpoolWriter } from '../spool/writer.js';
import { VERSION } from '../version.js';
import { inFlight } from '../queue/deliver.js';
import { flushQueue, logRecovered } from '../queue/flush.js';
import { closeDialogue, closeLocalAgents, deliverInDialogue } from '../queue/local-route.js';
import { healthOf } from '../queue/health.js';
import { onlineView } from '../online/state.js';
import { startAutoRun, type AutoRun } from './auto-run.js';
import { startControl } from './control-server.js';
import { watchDrops, type PickupWatch } from './pickup-watch.js';

/** A running daemon. */
export interface Daemon {
  door: SmtpDoor;
  store: Store;
  log: Logger;
  stop(graceMs?: number): Promise<void>;
  /** Reads ferrymail.yaml again and applies it (SIGHUP); a configuration with problems is refused with
   * a log line and the one in use stays. Resolves false when it was refused. */
  reload(): Promise<boolean>;
}

/** Options for tests and embedding. */
export interface DaemonOptions {
  log?: Logger;
  hooks?: Hooks;
}

/** Logs one received message. */
export function logReceived(log: Logger, env: Envelope): void {
  log.log('received', env.id, {
    from: `<${env.sender}>`,
    size: env.size,
    rcpts: env.recipients.length,
    proto: env.protocol,
    peer: env.origin.peer ? `[${env.origin.peer}]` : undefined,
    helo: env.origin.helo,
    user: env.origin.user,
    uid: env.origin.uid,
    msgid: env.messageId,
    ...Object.fromEntries(Object.entries(env.notes ?? {}).map(([k, v]) => [`note.${k}`, v])),
  });
}

/** The hooks given in code (tests, embedding) first, then the configured ones, stage by stage. */
function mergeHooks(given: Hooks | undefined, loaded: Hooks): Hooks {
  const out: Hooks = { ...given };
  for (const [stage, list] of Object.entries(loaded) as Array<[keyof Hooks, NonNullable<Hooks[keyof Hooks]>]>)
    out[stage] = [...(out[stage] ?? []), ...list];
  return out;
}

/** Starts the daemon; resolves once it listens. */
export async function startDaemon(first: Config, opts: DaemonOptions = {}): Promise<Daemon> {
  let cfg = first;
  const log = opts.log ?? createLogger(cfg.log_format);
  const spool = openSpoolWriter(cfg.spool);
  let auto: AutoRun | null = null;
  // the doors' writer answers after one sync phase; its mover puts the answered messages into queue/
  // in batches, and the queue runs start once they are there (spool/writer.ts)
  const intakeSpool = openSpoolWriter(cfg.spool, {
    deferred: {
      onPlaced: () => auto?.soon(),
      onError: (err) =>
        log.log('error', 'answered messages not yet moved into the queue; trying again', { error: err.message }),
    },
  });
  const store = openStore(cfg.spool);
  const lock = await daemonLock(cfg.spool);
  setReclaim(minorGc());
  let control: net.Server | null = null;
  let door: SmtpDoor | null = null;
  let doorDeps: DoorDeps | null = null;
  /** The hooks of the stages after the commit, as the configuration in use loaded them. */
  let observers: Observer[] = [];
  let recovering: Promise<unknown> = Promise.resolve();
  const warn = (text: string): void => log.log('warn', text);
  /** What `ferrymail watch` shows. */
  const feed = new EventFeed();
  const observe = (e: QueueEvent): void => {
    feed.publish(e);
    if (!observers.length) return;
    const kind = e.kind === 'uncertain' ? 'deferred' : e.kind;
    notify(observers, { ...e, kind }, warn);
  };
  const queued = (env: Envelope): void => {
    feed.publish({
      kind: 'queued',
      id: env.id,
      sender: env.sender,
      recipients: env.recipients.map((r) => r.address),
      size: env.size,
      door: env.origin.door,
    });
    if (!observers.length) return;
    notify(
      observers,
      {
        kind: 'queued',
        id: env.id,
        sender: env.sender,
        recipients: env.recipients.map((r) => r.address),
        size: env.size,
        door: env.origin.door,
        notes: { ...env.notes },
      },
      warn,
    );
  };
  let stopDesktop: () => void = () => undefined;
  let drops: PickupWatch | null = null;
  const view = onlineView(cfg.online);
  try {
    // the control socket opens first: a second daemon asking while this one recovers hears an answer
    const started = new Date().toISOString();
    control = await startControl(store.layout.control, {
      store,
      status: () => status(cfg, store, started, door, auto),
      onKick: (id) => {
        kicked(store, log, id);
        auto?.soon();
      },
      runSoon: () => auto?.soon(),
      recheck: (why) => auto?.recheck(why),
      feed,
      // what the doors have answered is in queue/ before a flush lists it
      flush: async (connection, route) => {
        await intakeSpool.settle?.();
        return auto
          ? auto.manual(connection, route)
          : flushQueue(cfg, log, { connection, route, online: () => view.state(), observe });
      },
      reload: () => reload(),
    });
    const loaded = await loadHooks(cfg, (text) => log.log('warn', text));
    observers = loaded.observers;
    doorDeps = {
      spool: intakeSpool,
      log,
      hooks: mergeHooks(opts.hooks, loaded.hooks),
      dialogue: deliverInDialogue,
      onMessage: (env) => {
        logReceived(log, env);
        queued(env);
        auto?.soon();
      },
    };
    door = await startSmtpDoor(cfg, doorDeps);
    // the door listens first; recovery touches only what dead processes left, never this one's messages,
    // so it runs while mail comes in (a long queue took seconds to scan before the first connection)
    recovering = recover(store, log).catch((err: Error) =>
      log.log('error', 'spool recovery failed; the queue runs try again', { error: err.message }),
    );
    auto = startAutoRun(cfg, log, view, observe, (st) =>
      feed.publish({ kind: 'online', online: st.online, connection: st.connection, why: st.why }),
    );
    stopDesktop = startDesktopNotices(cfg, feed, store.layout.dir('queue'), log, () => auto?.state() ?? null);
    drops = watchDrops(cfg, {
      spool,
      store,
      log,
      onMessage: (env) => {
        logReceived(log, env);
        queued(env);
        auto?.soon();
      },
    });
  } catch (err) {
    control?.close();
    await lock.release();
    throw err;
  }
  const d = door;
  const a = auto!;
  const p = drops!;
  /** Applies the settings file as it is now; the spool and the log format stay until a restart. */
  const reload = async (): Promise<boolean> => {
    const { loadConfig } = await import('../config/load.js');
    let next: Config;
    try {
      next = loadConfig(cfg.file);
    } catch (err) {
      log.log('error', 'configuration not reloaded; the one in use stays', { error: (err as Error).message });
      return false;
    }
    try {
      // the hooks of the new configuration, loaded anew; the door's next sessions take them
      const loaded = await loadHooks(next, (text) => log.log('warn', text));
      doorDeps!.hooks = mergeHooks(opts.hooks, loaded.hooks);
      observers = loaded.observers;
    } catch (err) {
      log.log('error', 'configuration not reloaded; the one in use stays', { error: (err as Error).message });
      return false;
    }
    const kept = restartOnly(cfg, next);
    if (kept.length) log.log('warn', `${kept.join(' and ')} changed: that takes a restart; the rest is reloaded`);
    next = deepFreeze({ ...next, spool: cfg.spool, log_format: cfg.log_format });
    await d.reload(next);
    a.reconfigure(next);
    p.reconfigure(next);
    cfg = next;
    stopDesktop();
    stopDesktop = startDesktopNotices(cfg, feed, store.layout.dir('queue'), log, () => a.state());
    log.log('info', 'configuration reloaded', {
      config: cfg.fromFile ? cfg.file : 'embedded default',
      listen: d.addresses.join(','),
    });
    return true;
  };
  return {
    door: d,
    store,
    log,
    reload,
    stop: async (graceMs = 30_000) => {
      stopDesktop();
      await Promise.all([a.stop(), p.stop(), recovering]);
      await stop(d, control!, lock, store, log, graceMs, intakeSpool);
    },
  };
}

/** The settings that a reload cannot change under a running daemon. */
function restartOnly(now: Config, next: Config): string[] {
  return [now.spool !== next.spool ? 'spool' : '', now.log_format !== next.log_format ? 'log_format' : ''].filter(
    Boolean,
  );
}

/**
 * Takes the spool's daemon lock (owner only: spool/lock.ts). A daemon that is just stopping gets a few
 * seconds to let go; one that keeps it is another daemon on this spool.
 */
async function daemonLock(spoolDir: string): Promise<Lock> {
  let holder = { pid: 0 };
  for (let i = 0; i < 30; i++) {
    const l = await tryLockHolder(spoolDir, 'daemon');
    if ('release' in l) return l;
    holder = l;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new FerryError(
    'locked',
    `another ferrymail daemon${holder.pid ? ` (pid ${holder.pid})` : ''} already runs on spool ${spoolDir}`,
  );
}

/**
 * A young-generation collection, used while large messages stream in: it frees the spent socket buffers
 * long before V8 would on its own (bench/memory.js: RSS growth for a 100 MB message from about 36 MB to
 * about 10 MB, no slower). The collector is made at its first use, not at start: getting hold of it
 * takes a context of its own, some 0.4 MB that a daemon which never sees a large message would hold
 * idle. Once it cannot be had, the first call throws and reclaim.ts drops it.
 */
function minorGc(): () => void {
  let gc: ((opts?: { type: 'minor' | 'major' }) => void) | undefined;
  return () => {
    if (!gc) {
      v8.setFlagsFromString('--expose-gc');
      gc = vm.runInNewContext('gc') as (opts?: { type: 'minor' | 'major' }) => void;
    }
    gc({ type: 'minor' });
  };
}

/** Recovers the spool after a crash and reports what it found. Envelopes are not read here: the queue
 * runs read them, and report the corrupt ones they find. */
async function recover(store: Store, log: Logger): Promise<void> {
  logRecovered(log, await store.recover(false));
  const { queued, held } = await queueCounts(store.layout);
  if (queued + held) log.log('info', 'queue', { waiting: queued, held });
}

/** Logs a message the sendmail command put into the spool. */
function kicked(store: Store, log: Logger, id: string): void {
  if (!isId(id)) return;
  store.get(id).then(
    (e) => logReceived(log, e.envelope),
    () => undefined,
  );
}

/** Why the spool's check fails now (checkLayout: its owner and modes), or nothing when it passes. */
function spoolRefusal(store: Store): string | undefined {
  try {
    checkLayout(store.layout);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Gathers the daemon's status. */
async function status(
  cfg: Config,
  store: Store,
  started: string,
  door: SmtpDoor | null,
  auto: AutoRun | null,
): Promise<DaemonStatus> {
  // counted from the names, or read from the counts saved while the folders are unchanged (a listing of
  // 100,000 names costs a tenth of a second, a status bar asks often)
  const { queued, held } = await queueCounts(store.layout);
  return {
    spoolRefused: spoolRefusal(store),
    pid: process.pid,
    started,
    version: VERSION,
    configFile: cfg.file,
    fromFile: cfg.fromFile,
    spool: cfg.spool,
    listening: door?.addresses ?? [],
    queued,
    held,
    online: auto?.state() ?? undefined,
    inFlight: inFlight(cfg.spool),
    routesDown: healthOf(cfg.spool)
      .list(Date.now())
      .map((d) => ({
        route: d.route,
        reason: d.reason,
        auth: d.auth,
        since: new Date(d.since).toISOString(),
        until: d.until === Infinity ? null : new Date(d.until).toISOString(),
      })),
  };
}

/** Stops everything in order. */
async function stop(
  door: SmtpDoor,
  control: net.Server,
  lock: Lock,
  store: Store,
  log: Logger,
  graceMs: number,
  intake: SpoolWriter,
): Promise<void> {
  log.log('info', 'shutting down', { grace_ms: graceMs });
  await door.shutdown(graceMs);
  // every answered message into queue/ before the lock goes (a crash would leave them to recovery)
  await intake.settle?.();
  await new Promise<void>((r) => control.close(() => r()));
  // the queue runs have ended: the local delivery agents have nothing left to do
  closeLocalAgents();
  await closeDialogue();
  fs.rmSync(store.layout.control, { force: true });
  await lock.release();
  log.log('info', 'stopped');
}
