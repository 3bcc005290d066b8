/**
 * Routes as route/ sees them: a name, the connections it serves, filters, rewrite maps and the flags that
 * steer fall-through. The transport settings are carried along untouched for transport/.
 *
 * Plain data, already validated by config/. Cannot fail.
 */

/** Address filters of one kind: allow (empty = everything) and deny (deny beats allow). */
export interface AddressFilter {
  allow: string[];
  deny: string[];
}

/** Maps of address globs to replacements ("*@domain" replaces only the domain). */
export interface RewriteMaps {
  envelopeSender: [string, string][];
  from: [string, string][];
  sender: [string, string][];
  replyTo: [string, string][];
  mailFollowupTo: [string, string][];
}

/** One route. */
export interface Route {
  name: string;
  /** Connection names this route serves; "permanent" routes are tried first on every connection. */
  connections: string[];
  permanent: boolean;
  senders: AddressFilter;
  recipients: AddressFilter;
  fromHeader: AddressFilter;
  rewrite: RewriteMaps;
  /** A temporary failure on this route is not passed on to the next one. */
  lastRoute: boolean;
  /** A connection failure on this route is permanent (a LAN route to a host that should be there). */
  connectErrorFail: boolean;
  /** What an uncertain delivery (connection lost after the message was handed over) leads to: one more
   * attempt (the recipient may get it twice), or a hold until a person decides. */
  uncertain: 'retry' | 'hold';
  /** The transport's settings, for transport/. */
  transport: Record<string, unknown>;
}
