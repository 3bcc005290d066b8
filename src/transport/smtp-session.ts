/**
 * One SMTP or LMTP session with one server, built on nodemailer's SMTPConnection: open it (connect,
 * greeting, EHLO/LHLO, STARTTLS, certificate checks, AUTH), send messages over it one after another with
 * RSET in between, and close it. Used by smtp.ts, which decides which session carries which message.
 *
 * Trusts its settings (validated route files). The server's replies are untrusted text: only one line of
 * each is kept, without control characters, and every form of the secret this session sent is cut out
 * of them, so a server that echoes the password cannot put it into a result, a log or an error.
 *
 * Never throws: opening resolves with a session or with the reason it failed (always a temporary one),
 * and sending resolves with one result per recipient:
 * - MAIL refused applies to all; RCPT refusals apply to their recipient; a refusal after DATA applies to
 *   every accepted recipient (per recipient with LMTP);
 * - a connection lost or silent before the whole message was handed over is tempfail; after it (the
 *   final dot may have arrived) it is "uncertain", so that nobody silently sends it twice.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import type { Outcome } from '../domain/outcome.js';
import { asciiAddress } from './mx.js';
import type { DeliveryRequest, RecipientResult } from './types.js';
import { socksConnect, type Proxy } from './socks.js';

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
  /** The route allows a password without TLS (tls: none). Never inferred from a fallback to plaintext. */
  clearAuth?: boolean;
  /** Reach the server through this SOCKS5 proxy. */
  proxy?: Proxy;
  auth?: AuthSettings;
  /** Milliseconds. */
  timeouts: { connect: number; greeting: number; command: number };
}

/** Where one server is: a host and port, or a unix socket. */
export interface Target {
  host: string;
  port: number;
  socket?: string;
}

type SmtpError = Error & { code?: string; responseCode?: number; response?: string; command?: string; recipient?: string; rejectedErrors?: SmtpError[] };

/** Internals of SMTPConnection that it does not declare. */
interface ConnInternals {
  _supportedExtensions?: string[];
  _supportedAuth?: string[];
  _maxAllowedSize?: number;
  _closing?: boolean;
  _socket?: net.Socket | false | null;
  _envelope?: { rejectedErrors?: SmtpError[] } | false;
}

/** "host:port" or "unix:path", for logs and results. */
export function targetName(t: Target): string {
  return t.socket ? `unix:${t.socket}` : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** One line of untrusted text, control characters removed. */
function oneLine(s: string | undefined, fallback: string): string {
  // eslint-disable-next-line no-control-regex
  const line = (s ?? '').split(/\r?\n/).filter(Boolean).pop()?.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 500);
  return line || fallback;
}

/** The outcome a reply code stands for. */
function outcomeOf(code: number | undefined): Outcome {
  return code !== undefined && code >= 500 ? 'permfail' : 'tempfail';
}

/** An open session; see the module header. */
/** How soon after a successful transaction the next one may start without RSET. */
const CLEAN_REUSE_MS = 1000;

export class Session {
  readonly relay: string;
  private hidden: string[] = [];
  private gone = false;
  private onGone: (() => void) | undefined;
  /** When the last transaction ended with every recipient accepted (0: not since the last RSET). */
  private cleanAt = 0;
  /** The last send() lost the connection before any reply and before reading the message. */
  lostUnsent = false;
  /** Has carried a transaction (so a later failure may be a server's idle close). */
  used = false;

  constructor(
    private readonly conn: SMTPConnection,
    readonly target: Target,
  ) {
    this.relay = targetName(target);
    conn.once('end', () => {
      this.gone = true;
      this.onGone?.();
    });
  }

  /** The key sessions are pooled by. */
  get key(): string {
    return this.relay;
  }

  /** True while the session can carry another message. */
  usable(): boolean {
    return !this.gone && !this.conn.destroyed && !(this.conn as unknown as ConnInternals)._closing;
  }

  /** Waiting idle: the session no longer keeps the process alive; fn runs when the server ends it. */
  park(fn: () => void): void {
    this.onGone = fn;
    this.socket()?.unref();
    if (this.gone) fn();
  }

  /** In use again. */
  unpark(): void {
    this.onGone = undefined;
    this.socket()?.ref();
  }

  /** Ends the session politely (QUIT), or at once when it is not usable; resolves once it is gone. */
  close(): Promise<void> {
    this.onGone = undefined;
    if (!this.usable()) {
      this.conn.close();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      // a server that never answers QUIT does not hold the socket for long
      const timer = setTimeout(() => this.conn.close(), 2000);
      timer.unref();
      this.conn.once('end', () => {
        clearTimeout(timer);
        resolve();
      });
      this.conn.quit();
    });
  }

  /** Cuts every form of the secret out of a server's text. */
  clean(text: string): string {
    let out = text;
    for (const h of this.hidden) if (h) out = out.split(h).join('***');
    return out;
  }

  /** Remembers what a login sent, in every encoding a server could echo. */
  hide(user: string, secret: string): void {
    const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
    this.hidden.push(secret, b64(secret), b64(`\0${user}\0${secret}`), b64(`user=${user}\x01auth=Bearer ${secret}\x01\x01`));
  }

  private socket(): net.Socket | undefined {
    return (this.conn as unknown as ConnInternals)._socket || undefined;
  }

  private internals(): ConnInternals {
    return this.conn as unknown as ConnInternals;
  }

  /** SMTP extensions the server announced (upper case names). */
  extensions(): string[] {
    return this.internals()._supportedExtensions ?? [];
  }

  /** The SIZE limit the server announced, or 0 for none. */
  sizeLimit(): number {
    return this.internals()._maxAllowedSize ?? 0;
  }

  /**
   * RSET before the next message; resolves false when the session turned out to be dead. After a
   * transaction that just succeeded the server is already in its initial state (RFC 5321 4.1.4), so
   * within a second of it no RSET round trip is spent (as nodemailer's own pool does).
   */
  reset(timeoutMs: number): Promise<boolean> {
    if (!this.usable()) return Promise.resolve(false);
    if (Date.now() - this.cleanAt < CLEAN_REUSE_MS) return Promise.resolve(true);
    this.cleanAt = 0;
    return settleOn(this.conn, timeoutMs, false, (done) => this.conn.reset((err) => done(!err)));
  }

  /** Logs in; resolves with an error reply, or undefined when logged in. */
  async login(auth: AuthSettings, timeoutMs: number, allowClear: boolean): Promise<string | undefined> {
    const offered = this.internals()._supportedAuth ?? [];
    if (!this.conn.secure && !allowClear) return `451 4.7.10 ${this.relay} did not offer STARTTLS; the password is not sent without TLS (tls: none allows it)`;
    const method = (auth.method ?? (['cram-md5', 'plain', 'login'] as const).find((m) => offered.includes(m.toUpperCase())))?.toUpperCase();
    if (!method || !offered.includes(method)) {
      const asked = method ? `AUTH ${method}` : 'AUTH CRAM-MD5, PLAIN or LOGIN';
      return `451 4.7.4 ${this.relay} does not offer ${asked}${offered.length ? ` (it offers ${offered.join(', ')}: see auth_method)` : ''}`;
    }
    let secret: string;
    try {
      secret = await auth.secret();
    } catch (err) {
      return `451 4.7.0 cannot get the secret for ${this.relay}: ${(err as Error).message}`;
    }
    this.hide(auth.user, secret);
    const err = await settleOn<SmtpError | undefined>(this.conn, timeoutMs, undefined, (done, lost) => {
      // nodemailer replaces a plain XOAUTH2 request by the first mechanism offered: ours has its own name
      this.conn.login({ user: auth.user, pass: secret, method: method === 'XOAUTH2' ? XOAUTH2_HANDLER : method }, (e) => done(e ? (e as SmtpError) : undefined));
      lost((e) => done(e ?? Object.assign(new Error('connection lost'), { code: 'ECONNECTION' })));
    });
    if (!err) return undefined;
    const said = err.response ? `: ${this.clean(oneLine(err.response, ''))}` : ` (${err.code ?? 'error'})`;
    return `454 4.7.0 AUTH ${method} at ${this.relay} failed${said}`;
  }

  /** Sends one message; one result per recipient (see the module header). */
  async send(req: DeliveryRequest): Promise<RecipientResult[]> {
    const stream = req.message(req.recipients.map((r) => r.address));
    let handedOver = false;
    stream.once('end', () => (handedOver = true));
    const first = req.recipients[0];
    // domains leave in A-labels: only a UTF-8 local part needs SMTPUTF8
    const envelope = {
      from: asciiAddress(req.sender),
      to: req.recipients.map((r) => asciiAddress(r.address)),
      size: req.size,
      use8BitMime: req.body === '8BITMIME',
      dsn: req.ret || req.envid || first?.notify ? { ret: req.ret, envid: req.envid, notify: first?.notify } : undefined,
    };
    const outcome = await new Promise<{ err: SmtpError | null; info: unknown }>((resolve) => {
      this.conn.send(envelope as never, stream, (err, info) => resolve({ err: err as SmtpError | null, info }));
    });
    if (outcome.err && !['EENVELOPE', 'EMESSAGE'].includes(outcome.err.code ?? '')) this.conn.close(); // not a reply: the session is spent
    // lost before any reply and before a byte of the message was read: the server closed the connection
    // (not a timeout, not a stream or API error), so the transaction never started on its side
    this.lostUnsent = !!outcome.err && !outcome.err.responseCode && !stream.readableDidRead && ['ECONNECTION', 'ESOCKET'].includes(outcome.err.code ?? '');
    this.cleanAt = outcome.err || (outcome.info as { rejected?: unknown[] } | undefined)?.rejected?.length ? 0 : Date.now();
    return this.results(req, outcome.err, outcome.info, handedOver);
  }

  /** Maps what send() reported to one result per recipient. */
  private results(req: DeliveryRequest, err: SmtpError | null, info: unknown, handedOver: boolean): RecipientResult[] {
    if (err?.command === 'MAIL FROM') {
      // pipelined RCPTs after a refused MAIL only say "need MAIL": the MAIL reply decides for all
      const reply = this.clean(oneLine(err.response, `${err.responseCode ?? 451}`));
      return req.recipients.map((r) => ({ address: r.address, outcome: outcomeOf(err.responseCode), reply }));
    }
    const rejected = new Map<string, SmtpError>();
    // a failure after DATA carries no list of the recipients refused earlier: the envelope has it
    const env = this.internals()._envelope;
    const earlier = env ? env.rejectedErrors : undefined;
    for (const e of err?.rejectedErrors ?? (info as { rejectedErrors?: SmtpError[] } | undefined)?.rejectedErrors ?? earlier ?? []) {
      if (e.recipient) rejected.set(e.recipient.toLowerCase(), e);
    }
    return req.recipients.map((r): RecipientResult => {
      const rej = rejected.get(asciiAddress(r.address).toLowerCase());
      if (rej) return { address: r.address, outcome: outcomeOf(rej.responseCode), reply: this.clean(oneLine(rej.response, `${rej.responseCode ?? 450}`)) };
      if (!err) return { address: r.address, outcome: 'ok', reply: this.clean(oneLine((info as { response?: string }).response, '250 2.0.0 ok')) };
      if (err.responseCode) return { address: r.address, outcome: outcomeOf(err.responseCode), reply: this.clean(oneLine(err.response, `${err.responseCode}`)) };
      // no reply: lost before or after the whole message was handed over
      if (handedOver) return { address: r.address, outcome: 'uncertain', reply: `451 4.4.2 connection to ${this.relay} lost after the message was sent (${why(err)}); it may have been delivered` };
      return { address: r.address, outcome: 'tempfail', reply: `451 4.4.2 connection to ${this.relay} lost during delivery (${why(err)})` };
    });
  }
}

/** A short reason for an error without a reply. */
function why(err: SmtpError): string {
  if (err.code === 'ETIMEDOUT') return 'no answer in time';
  if (err.code === 'ESTREAM') return 'the message could not be read from the spool';
  return err.code ?? 'error';
}

/**
 * Runs one operation on a connection and resolves with its result, or with fallback when the connection
 * ends or errs first (nodemailer drops the callbacks of a connection it closes) or time runs out.
 */
function settleOn<T>(conn: SMTPConnection, timeoutMs: number, fallback: T, op: (done: (v: T) => void, lost: (fn: (e?: SmtpError) => void) => void) => void): Promise<T> {
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

/** Opening failed: the reply to record (always a temporary failure); tls when TLS was what failed. */
export interface OpenFailure {
  reply: string;
  tls?: boolean;
  /** The server turned the session away at once (421 greeting, or closed before any greeting): the mark
   * of a limit on connections per client, not of a server that is down. */
  busy?: boolean;
}

/** The SHA-256 fingerprint of a certificate, lower-case hex without colons. */
function fingerprintOf(raw: Buffer): string {
  return createHash('sha256').update(raw).digest('hex');
}

/** Connects a unix socket within the connect timeout. */
function unixSocket(path: string, timeoutMs: number): Promise<net.Socket | SmtpError> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(Object.assign(new Error(e.message), { code: e.code ?? 'ECONNECTION' }));
    });
  });
}

/** A TLS context trusting the system's CAs and a route's CA file: built once per CA file read, not for
 * every session (parsing the system's CAs costs milliseconds). */
const contexts = new WeakMap<object, tls.SecureContext>();
function trusted(ca: string | Buffer): tls.SecureContext {
  const make = (): tls.SecureContext => tls.createSecureContext({ ca: [...tls.rootCertificates, ca.toString()], minVersion: 'TLSv1.2' });
  if (typeof ca === 'string') return make();
  let ctx = contexts.get(ca);
  if (!ctx) contexts.set(ca, (ctx = make()));
  return ctx;
}

/** The nodemailer options for one target. */
function connOptions(s: SessionSettings, t: Target, socket?: net.Socket): ConstructorParameters<typeof SMTPConnection>[0] {
  const verify = s.verify !== false && !s.fingerprint;
  return {
    host: t.host,
    port: t.port,
    name: s.name,
    secure: !!s.secure,
    requireTLS: s.starttls === 'required' || (!!s.fingerprint && !s.secure),
    ignoreTLS: s.starttls === 'never',
    opportunisticTLS: s.starttls === 'opportunistic',
    lmtp: !!s.lmtp,
    // a CA file adds to the system's CAs (Node's ca option alone would replace them)
    tls: { rejectUnauthorized: verify, ...(s.ca ? { secureContext: trusted(s.ca) } : {}), minVersion: 'TLSv1.2', ...(s.servername ? { servername: s.servername } : {}) },
    connectionTimeout: s.timeouts.connect,
    greetingTimeout: s.timeouts.greeting,
    socketTimeout: s.timeouts.command,
    socketCloseTimeout: 2000,
    connection: socket,
    logger: false,
    customAuth: { [XOAUTH2_HANDLER]: xoauth2 },
  };
}

/** The name our XOAUTH2 handler is registered under with nodemailer. */
const XOAUTH2_HANDLER = 'FERRYMAIL-XOAUTH2';

/** XOAUTH2 (the secret is the access token); a refusal's 334 challenge is answered empty, as required. */
async function xoauth2(ctx: Parameters<NonNullable<NonNullable<ConstructorParameters<typeof SMTPConnection>[0]>['customAuth']>[string]>[0]): Promise<void> {
  const { user, pass } = ctx.auth.credentials;
  const first = await ctx.sendCommand(`AUTH XOAUTH2 ${Buffer.from(`user=${user}\x01auth=Bearer ${pass}\x01\x01`, 'utf8').toString('base64')}`);
  if (first.status === 235) return;
  if (first.status === 334) await ctx.sendCommand('');
  throw new Error('XOAUTH2 refused');
}

/** The reply for an error that ended the opening of a session. */
function openFailure(err: SmtpError, relay: string): OpenFailure {
  const line = err.response ? oneLine(err.response, '') : '';
  if (err.code === 'ETLS' || /certificate|TLS|SSL/i.test(err.message) && !line) {
    const reason = oneLine(err.message.replace(/^Error initiating TLS - /, ''), 'handshake failed');
    return { reply: `451 4.7.5 TLS with ${relay} failed: ${line || reason}`, tls: true };
  }
  if (line && err.responseCode === 421) return { reply: line, busy: true };
  if (line && err.responseCode && err.responseCode < 500) return { reply: line };
  if (line) return { reply: `451 4.4.0 ${relay} refused the session: ${line}` };
  if (err.code === 'ETIMEDOUT') return { reply: `451 4.4.1 ${relay} did not answer in time (${(err as { timeoutType?: string }).timeoutType ?? 'timeout'})` };
  const sys = (err as { originalCode?: string }).originalCode;
  const closed = err.code === 'ECONNECTION' || sys === 'ECONNRESET';
  return { reply: `451 4.4.1 cannot connect to ${relay}: ${sys ?? err.code ?? 'error'}`, busy: closed };
}

/** Opens a session: connection, greeting, EHLO, TLS and certificate checks, AUTH. */
export async function openSession(s: SessionSettings, t: Target): Promise<Session | OpenFailure> {
  const relay = targetName(t);
  let sock: net.Socket | undefined;
  if (t.socket) {
    const got = await unixSocket(t.socket, s.timeouts.connect);
    if (!(got instanceof net.Socket)) return openFailure(got, relay);
    sock = got;
  } else if (s.proxy) {
    const got = await socksConnect(s.proxy, t, s.timeouts.connect);
    if (!(got instanceof net.Socket)) return { reply: `451 4.4.1 ${oneLine(got.message, 'SOCKS proxy failed')}` };
    sock = got;
  }
  const conn = new SMTPConnection(connOptions(s, t, sock));
  conn.on('error', () => undefined); // every failure also reaches the operation waiting for it
  // nodemailer times each phase itself; this only bounds the whole in case a phase has no timer
  const err = await settleOn<SmtpError | undefined>(conn, s.timeouts.connect + s.timeouts.greeting + s.timeouts.command, Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }), (done, lost) => {
    lost((e) => done(e ?? Object.assign(new Error('connection closed'), { code: 'ECONNECTION' })));
    conn.connect((e) => done(e ? (e as SmtpError) : undefined));
  });
  if (err && s.proxy && !err.response) {
    // a proxy such as ssh -D answers CONNECT at once and closes when the server cannot be reached
    conn.close();
    return { reply: `451 4.4.1 SOCKS proxy ${s.proxy.host}:${s.proxy.port} closed the connection to ${relay} before its greeting (${err.code ?? 'error'}): the proxy could not reach it` };
  }
  if (err) {
    conn.close();
    return openFailure(err, relay);
  }
  const session = new Session(conn, t);
  const bad = checkCertificate(s, conn, relay) ?? (s.auth ? await session.login(s.auth, s.timeouts.command, !!s.clearAuth || !!t.socket) : undefined);
  if (bad) {
    void session.close();
    return { reply: bad };
  }
  return session;
}

/** With a fingerprint configured, the session must be TLS with exactly that certificate. */
function checkCertificate(s: SessionSettings, conn: SMTPConnection, relay: string): string | undefined {
  if (!s.fingerprint) return undefined;
  const sock = (conn as unknown as ConnInternals)._socket;
  const cert = sock && 'getPeerCertificate' in sock ? (sock as tls.TLSSocket).getPeerCertificate() : undefined;
  if (!conn.secure || !cert?.raw) return `451 4.7.5 TLS with ${relay} failed: no certificate to check the fingerprint against`;
  const got = fingerprintOf(cert.raw);
  return got === s.fingerprint ? undefined : `451 4.7.5 TLS with ${relay} failed: certificate fingerprint ${got} is not the configured one`;
}
