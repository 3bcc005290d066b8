/**
 * Routes as route/ sees them: a name, the connections it serves, filters, rewrite maps and the flags that
 * steer fall-through. The transport settings are carried along untouched for transport/.
 *
 * Plain data, already validated by config/ (the DKIM key file is read again at delivery). Cannot fail.
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

/** The DKIM signing algorithms (rsa-sha256, and ed25519-sha256 of RFC 8463). */
export const DKIM_ALGORITHMS = ['rsa-sha256', 'ed25519-sha256'] as const;
export type DkimAlgorithm = (typeof DKIM_ALGORITHMS)[number];

/** How a route signs what it carries (DKIM, relaxed/relaxed). */
export interface DkimSettings {
  /** The signing domain (d=), as A-labels. */
  domain: string;
  /** The selector (s=): the public key is published at SELECTOR._domainkey.DOMAIN. */
  selector: string;
  /** The private key (PEM or DER), readable by its owner only; read at every delivery. */
  keyFile: string;
  /** Lower-case names of the header fields to sign; From is always signed. */
  headers: string[];
  /** Taken from the key's type when not given. */
  algorithm?: DkimAlgorithm;
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
  /** Who handed the message in: the SMTP AUTH login, or the local account of the sendmail command. */
  users?: AddressFilter;
  /** Larger messages are not carried by this route (they wait for another: an unmetered network). */
  maxSize?: number;
  rewrite: RewriteMaps;
  /** A temporary failure on this route is not passed on to the next one. */
  lastRoute: boolean;
  /** A connection failure on this route is permanent (a LAN route to a host that should be there). */
  connectErrorFail: boolean;
  /** Mail leaves without the Received lines this host added (its name, the submitting uid), as msmtp's. */
  hideLocalReceived?: boolean;
  /** Sign outgoing mail with this key (after the header rewriting); absent: no signature. */
  dkim?: DkimSettings;
  /** What an uncertain delivery (connection lost after the message was handed over) leads to: one more
   * attempt by this route only (the recipient may get it twice, but from the same sender and relay),
   * one more by whichever route serves it then (retry-any), or a hold until a person decides. */
  uncertain: 'retry' | 'retry-any' | 'hold';
  /** The transport's settings, for transport/. */
  transport: Record<string, unknown>;
}
