/**
 * What the SMTP client's modules share: the settings of a session, where a server is, the untrusted
 * text of replies cut to one clean line, the outcome a reply code stands for, waiting on one operation of
 * nodemailer's SMTPConnection, and the Tracker that can cut every connection of a transport at once.
 *
 * Pure helpers and types; settleOn never rejects.
 */
import type net from 'node:net';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { Outcome } from '../domain/outcome.js';
import type { Proxy as SocksProxy } from './socks.js';

/** AUTH mechanisms ferrymail speaks. */
export type AuthMethod = 'plain' | 'login' | 'cram-md5' | 'xoauth2';

/** How to authenticate; the secret is fetched for every login (a token command prints a fresh one). */
export interface AuthSettings {
  user: string;
  secret: () => Promise<string>;
  /** Unset: the best mechanism the server offers (CRAM-MD5, then PLAIN, then LOGIN). */
  method?: AuthMethod;
}

/** How to talk to a server (everything but where it is). */
export interface SessionSettings {
  /** Name sent in EHLO/LHLO. */
  name: string;
  lmtp?: boolean;
  /** TLS from the first byte (port 465). */
  secure?: boolean;
  /** STARTTLS: required, used when offered, or never. */
  starttls?: 'required' | 'opportunistic' | 'never';
  /** Verify the certificate chain and name (default true); a fingerprint replaces this check. */
  verify?: boolean;
  /** Extra trusted CA certificates (PEM). */
  ca?: string | Buffer;
  /** SHA-256 of the server certificate, 64 hex digits, lower case, no colons. */
  fingerprint?: string;
  /** The name the certificate must carry (and SNI) when it is not the host connected to (a tunnel). */
  servername?: string;
  /** A client certificate and its key (PEM) to present when the server asks for one. */
  clientCert?: { cert: Buffer; key: Buffer };
  /** The route allows a password without TLS (tls: none). Never inferred from a fallback to plaintext. */
  clearAuth?: boolean;
  /** Reach the server through this SOCKS5 proxy. */
  proxy?: SocksProxy;
  auth?: AuthSettings;
  /** Milliseconds. progress: how long a session may move no bytes and get no reply while a command or
   * the message is on its way, whatever the command timeout (the wait for the reply to the final dot,
   * once all of the message is out, has the command timeout alone). */
  timeouts: { connect: number; greeting: number; command: number; progress: number };
  /** Every connection is registered here, so that the transport can cut them all at once. */
  tracker?: Tracker;
}

/** Where one server is: a host and port, or a unix socket. */
export interface Target {
  host: string;
  port: number;
  socket?: string;
}

export type SmtpError = Error & {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  recipient?: string;
  rejectedErrors?: SmtpError[];
};

/** Internals of SMTPConnection that it does not declare. */
export interface ConnInternals {
  _supportedExtensions?: string[];
  _supportedAuth?: string[];
  _maxAllowedSize?: number;
  _closing?: boolean;
  _socket?: net.Socket | false | null;
  _envelope?: { rejectedErrors?: SmtpError[] } | false;
  _currentDataStream?: unknown;
  _actionLMTPStream?: (recipient: string, final: boolean, str: string, callback: unknown) => unknown;
}

/** "host:port" or "unix:path", for logs and results. */
export function targetName(t: Target): string {
  return t.socket ? `unix:${t.socket}` : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** One line of untrusted text, control characters removed. */
export function oneLine(s: string | undefined, fallback: string): string {
  // eslint-disable-next-line no-control-regex
  const line = (s ?? '')
    .split(/\r?\n/)
    .filter(Boolean)
    .pop()
    ?.replace(/[\x00-\x1f\x7f]/g, ' ')
    .slice(0, 500);
  return line || fallback;
}

/** The outcome a reply code stands for. */
export function outcomeOf(code: number | undefined): Outcome {
  return code !== undefined && code >= 500 ? 'permfail' : 'tempfail';
}

/** A short reason for an error without a reply. */
export function why(err: SmtpError): string {
  if (err.code === 'ETIMEDOUT') return 'no answer in time';
  if (err.code === 'ESTREAM') return 'the message could not be read from the spool';
  return err.code ?? 'error';
}

/**
 * Runs one operation on a connection and resolves with its result, or with fallback when the connection
 * ends or errs first (nodemailer drops the callbacks of a connection it closes) or time runs out.
 */
export function settleOn<T>(
  conn: SMTPConnection,
  timeoutMs: number,
  fallback: T,
  op: (done: (v: T) => void, lost: (fn: (e?: SmtpError) => void) => void) => void,
): Promise<T> {
  return new Promise((resolve) => {
    let settled = false;
    let onLost: ((e?: SmtpError) => void) | undefined;
    const finish = (v: T): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn.removeListener('error', onError);
      conn.removeListener('end', onEnd);
      resolve(v);
    };
    const onError = (e: SmtpError): void => (onLost ? onLost(e) : finish(fallback));
    const onEnd = (): void => (onLost ? onLost() : finish(fallback));
    const timer = setTimeout(() => {
      conn.close();
      finish(fallback);
    }, timeoutMs);
    conn.once('error', onError);
    conn.once('end', onEnd);
    op(finish, (fn) => (onLost = fn));
  });
}

/** The name ferrymail's XOAUTH2 handler is registered under with nodemailer. */
export const XOAUTH2_HANDLER = 'FERRYMAIL-XOAUTH2';

/** The socket under a connection, when it has one. */
export function socketOf(conn: SMTPConnection): net.Socket | undefined {
  return (conn as unknown as ConnInternals)._socket || undefined;
}

/** Cuts a connection at once with a reason: its operations fail (nodemailer reports a socket error). */
export function cutConnection(conn: SMTPConnection, why: string): void {
  const sock = socketOf(conn);
  if (sock && !sock.destroyed) sock.destroy(Object.assign(new Error(why), { code: 'EABORTED' }));
  else conn.close();
}

/**
 * Every connection of one transport, so that all can be cut at once (the network changed and the route
 * is of no use on the new one); `why` then says why, for the replies of what was under way and for every
 * delivery asked for later.
 */
export class Tracker {
  private readonly conns = new Set<SMTPConnection>();
  why: string | null = null;

  /** Registers a connection until it ends (one made after abort() is cut at once). */
  add(conn: SMTPConnection): void {
    this.conns.add(conn);
    conn.once('end', () => this.conns.delete(conn));
    if (this.why) cutConnection(conn, this.why);
  }

  /** Cuts every connection. */
  abort(why: string): void {
    this.why ??= why;
    for (const c of [...this.conns]) cutConnection(c, why);
  }
}

/**
 * Watches a connection for progress: bytes handed to the kernel or read from the server. When none move
 * for `ms`, onStall runs once. Returns the function that stops watching.
 */
export function watchProgress(conn: SMTPConnection, ms: number, onStall: () => void): () => void {
  let last = -1;
  let since = Date.now();
  const timer = setInterval(
    () => {
      const sock = socketOf(conn);
      if (!sock || sock.destroyed) return;
      const moved = sock.bytesRead + sock.bytesWritten - sock.writableLength;
      if (moved !== last) {
        last = moved;
        since = Date.now();
      } else if (Date.now() - since >= ms) {
        clearInterval(timer);
        onStall();
      }
    },
    Math.max(50, Math.min(1000, Math.floor(ms / 4))),
  );
  timer.unref();
  return () => clearInterval(timer);
}
