/**
 * The control protocol between the CLI and a running daemon: one JSON request per line over the unix
 * socket spool/control.sock, one JSON answer per line.
 *
 * The socket lives in the owner-only spool directory and is created mode 0600, so only the daemon's user
 * can talk to it. Pure types; cannot fail.
 */
import type { OnlineState, RunSummary } from '../domain/online.js';
import type { ChangeResult } from '../spool/store.js';

/** A request to the daemon. */
export type ControlRequest =
  | { cmd: 'status' }
  | { cmd: 'kick'; id: string }
  | { cmd: 'rm' | 'hold' | 'release'; ids: string[] }
  | { cmd: 'flush'; connection?: string; route?: string }
  | { cmd: 'reload' }
  | { cmd: 'recheck'; why?: string }
  | { cmd: 'watch' };

/** The result for one id of an rm / hold / release. */
export type IdResult = ChangeResult;

/** What one queue run did. */
export type FlushReport = RunSummary;

/** What the daemon reports about itself. */
export interface DaemonStatus {
  pid: number;
  started: string;
  version: string;
  configFile: string;
  fromFile: boolean;
  spool: string;
  listening: string[];
  queued: number;
  held: number;
  /** The online state the daemon last computed, with its reason (absent before the first). */
  online?: OnlineState;
  /** Deliveries under way. */
  inFlight?: FlightView[];
  /** Routes that are down. */
  routesDown?: DownView[];
  /** Why the spool is refused now (its check failed since the daemon started: no run and no change
   * is made until it is mended); absent while it is fine. */
  spoolRefused?: string;
}

/** A delivery under way: which message, by which route, since when, how much of it went. */
export interface FlightView {
  id: string;
  route: string;
  recipients: string[];
  since: string;
  bytes: number;
}

/** A route that is down, why, and until when (null: until its settings change or a manual flush). */
export interface DownView {
  route: string;
  reason: string;
  auth: boolean;
  since: string;
  until: string | null;
}

/** An answer from the daemon. */
export type ControlResponse =
  | { ok: true; status?: DaemonStatus; results?: IdResult[]; note?: string; report?: FlushReport }
  | { ok: false; error: string; code?: string };
