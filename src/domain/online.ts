/**
 * The answer online/ gives and route/ uses (are we online, on which connection, which source said so),
 * the settings online/ reads it from (config/ builds them, online/ evaluates them), and the summary of a
 * queue run made in that state.
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

/** A rule of online.rules naming a connection by what the interfaces show; every given condition must
 * hold on one interface (up, with an address that is not link-local). */
export interface InterfaceRule {
  connection: string;
  /** Interface name, "*" and "?" allowed (wlan*, tun0). */
  interface?: string;
  kind?: 'wired' | 'wireless';
  /** The interface carries a default route (true unless set to false: split-tunnel VPNs, LAN-only routes). */
  default_route?: boolean;
  /** A default route through the interface goes to this gateway. */
  gateway?: string;
  /** The interface has an address in this range. */
  cidr?: string;
  /** The wireless interface is associated with this network name. */
  ssid?: string;
  /** host:port that must accept a TCP connection (a route's own server). */
  probe?: string;
  /** NetworkManager's active connection on the interface has this id (* and ? allowed). */
  nm_connection?: string;
  /** NetworkManager says the interface's connection is (true) or is not (false) metered. */
  metered?: boolean;
  /** Whether NetworkManager's connectivity counts (default true): behind a captive portal, with limited
   * or no connectivity, a rule that needs a default route does not hold. */
  nm_connectivity?: boolean;
}

/** Where the online state comes from (the online group of ferrymail.yaml). */
export interface OnlineSettings {
  state_file?: string;
  command: readonly string[];
  rules: readonly InterfaceRule[];
  /** Milliseconds a rule's probe may take to connect. */
  probe_timeout: number;
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
