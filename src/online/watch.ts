/**
 * Notices network changes within a second: `ip -o monitor link address route` (iproute2) as a child
 * process, its lines debounced (a burst of kernel events is one change, reported when it ends, and with
 * options.leading at its first event too); where `ip` is missing or the
 * monitor dies, a poll of the interface facts (/sys/class/net, /proc/net/route, addresses) every second,
 * which costs about a millisecond a time (four interfaces on a busy two-core host).
 *
 * The monitor's output is only counted, never interpreted. Never throws; a failing monitor is reported
 * once through onMode and replaced by the poll. Knows nothing of mail.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { factsFingerprint, SYSTEM_SOURCES, type FactSources } from './interfaces.js';

/** How to watch (tests point these elsewhere). */
export interface WatchOptions {
  /** The iproute2 program; a missing one means polling. */
  ip?: string;
  /** Quiet time that ends a burst of events. */
  debounceMs?: number;
  /** Longest wait from the first event of a burst to the report. */
  maxWaitMs?: number;
  /** Also report the first event of a burst at once (then the end of the burst as before): a link that
   * comes up is acted on in milliseconds, and the report after the burst sees how it ended. */
  leading?: boolean;
  pollMs?: number;
  facts?: FactSources;
  /** Told how changes are noticed: 'monitor', or 'poll' with the reason. */
  onMode?(mode: 'monitor' | 'poll', why?: string): void;
}

/** A running watch. */
export interface NetWatch {
  mode(): 'monitor' | 'poll';
  stop(): void;
}

/** Calls onChange (debounced) after every change of the interfaces, addresses or routes. */
export function watchNetwork(onChange: () => void, opts: WatchOptions = {}): NetWatch {
  const debounceMs = opts.debounceMs ?? 200;
  // a stream of events that never pauses still reports a change this often
  const maxWaitMs = Math.max(debounceMs, opts.maxWaitMs ?? 800);
  let debounce: NodeJS.Timeout | null = null;
  let pendingSince = 0;
  let poll: NodeJS.Timeout | null = null;
  let child: ChildProcess | null = null;
  let stopped = false;
  let mode: 'monitor' | 'poll' = 'monitor';
  const changed = (): void => {
    if (stopped) return;
    if (debounce) {
      if (Date.now() - pendingSince >= maxWaitMs - debounceMs) return;
      clearTimeout(debounce);
    } else {
      pendingSince = Date.now();
      // after the lines that came with this one, not in the middle of them
      if (opts.leading) setImmediate(() => !stopped && onChange());
    }
    debounce = setTimeout(() => {
      debounce = null;
      if (!stopped) onChange();
    }, debounceMs);
    debounce.unref();
  };
  const startPoll = (why: string): void => {
    if (stopped || poll) return;
    mode = 'poll';
    child = null;
    opts.onMode?.('poll', why);
    const facts = opts.facts ?? SYSTEM_SOURCES;
    let last = factsFingerprint(facts);
    // a change may have happened while the monitor was dying
    changed();
    poll = setInterval(() => {
      const now = factsFingerprint(facts);
      if (now !== last) {
        last = now;
        changed();
      }
    }, opts.pollMs ?? 1000);
    poll.unref();
  };
  child = startMonitor(
    opts.ip ?? 'ip',
    changed,
    (why) => startPoll(why),
    () => opts.onMode?.('monitor'),
  );
  return {
    mode: () => mode,
    stop() {
      stopped = true;
      if (debounce) clearTimeout(debounce);
      if (poll) clearInterval(poll);
      child?.kill('SIGTERM');
    },
  };
}

/** Spawns the monitor; every output line is a change; failure or exit calls onFail once. */
function startMonitor(
  ip: string,
  onLine: () => void,
  onFail: (why: string) => void,
  onStart: () => void,
): ChildProcess {
  let failed = false;
  const fail = (why: string): void => {
    if (!failed) {
      failed = true;
      onFail(why);
    }
  };
  const child = spawn(ip, ['-o', 'monitor', 'link', 'address', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
  child.once('spawn', onStart);
  child.on('error', (err: NodeJS.ErrnoException) => fail(`${ip}: ${err.code ?? err.message}`));
  child.on('exit', (code, signal) => fail(`${ip} monitor ended (${signal ?? `exit ${code}`})`));
  child.stdout!.on('data', onLine);
  child.unref();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  return child;
}
