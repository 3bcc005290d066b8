/**
 * The answer online/ gives and route/ uses (are we online, on which connection, which source said so),
 * and the summary of a queue run made in that state.
 *
 * Plain data; cannot fail.
 */
import type { RunCounts } from './outcome.js';

/** What the network looks like now. */
export interface OnlineState {
  online: boolean;
  connection?: string;
  /** Which source said so, or why offline: shown in deferral reasons and the queue listing. */
  why?: string;
}

/** A whole queue run as reported to a user: the counts, the route files found (with none, nothing is
 * touched and `waiting` says how much mail waits), and the online state it ran in. */
export interface RunSummary extends RunCounts {
  routes: number;
  waiting: number;
  state: OnlineState;
  /** The one route a run was limited to (flush --route). */
  route?: string;
  /** Something the user should know about the run (the route asked for does not serve this connection). */
  note?: string;
}
