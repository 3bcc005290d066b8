/**
 * Opening an SMTP or LMTP session: the connection (TCP, a unix socket, or through a SOCKS5 proxy), the
 * greeting, EHLO/LHLO, STARTTLS with the certificate checks (chain and name, a CA file, a SHA-256
 * fingerprint), and AUTH (PLAIN, LOGIN, CRAM-MD5, XOAUTH2).
 *
 * Trusts its settings. Never throws: resolves with an open Session, or with the reason it failed, which
 * is always a temporary failure (smtp.ts decides whether the route is down).
 */
import net from 'node:net';
import type tls from 'node:tls';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { cryptoModule, tlsModule } from '../lazy-node.js';
import { Session } from './smtp-session.js';
import { socksConnect } from './socks.js';
import {
  cutConnection,
  oneLine,
  settleOn,
  targetName,
  watchProgress,
  XOAUTH2_HANDLER,
  type ConnInternals,
  type SessionSettings,
  type SmtpError,
  type Target,
} from './smtp-wire.js';

/** Opening failed: the reply to record (always a temporary failure); tls when TLS was what failed. */
export interface OpenFailure {
  reply: string;
  tls?: boolean;
  /** The server turned the session away at once (421 greeting, or closed before any greeting): the mark
   * of a limit on connections per client, not of a server that is down. */
  busy?: boolean;
  /** The server refused the credentials (a 5xx to AUTH). */
  auth?: boolean;
}

/** The SHA-256 fingerprint of a certificate, lower-case hex without colons. */
function fingerprintOf(raw: Buffer): string {
  return cryptoModule().createHash('sha256').update(raw).digest('hex');
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

/** A TLS context trusting the system's CAs and a route's CA file, with the route's client certificate:
 * built once per CA file and certificate read, not for every session (parsing the system's CAs costs
 * milliseconds). A secure context replaces Node's cert and key options, so the certificate goes in it. */
const contexts = new WeakMap<object, tls.SecureContext>();
function context(
  ca: string | Buffer | undefined,
  client: { cert: Buffer; key: Buffer } | undefined,
): tls.SecureContext {
  const make = (): tls.SecureContext =>
    tlsModule().createSecureContext({
      ...(ca ? { ca: [...tlsModule().rootCertificates, ca.toString()] } : {}),
      ...(client ?? {}),
      minVersion: 'TLSv1.2',
    });
  const key = client ?? (typeof ca === 'object' ? ca : undefined);
  if (!key) return make();
  let ctx = contexts.get(key);
  if (!ctx) contexts.set(key, (ctx = make()));
  return ctx;
}

/** The nodemailer options for one target. */
function connOptions(
  s: SessionSettings,
  t: Target,
  socket?: net.Socket,
): ConstructorParameters<typeof SMTPConnection>[0] {
  return {
    host: t.host,
    port: t.port,
    name: s.name,
    secure: !!s.secure,
    requireTLS: s.starttls === 'required' || (!!s.fingerprint && !s.secure),
    ignoreTLS: s.starttls === 'never',
    opportunisticTLS: s.starttls === 'opportunistic',
    lmtp: !!s.lmtp,
    // a CA file adds to the system's CAs (Node's ca option alone would replace them). The chain and name
    // are checked once the handshake is done (checkCertificate), before anything but EHLO is sent, so
    // that a certificate that is not trusted can be named with its issuer and fingerprint
    tls: {
      rejectUnauthorized: false,
      ...(s.ca || s.clientCert ? { secureContext: context(s.ca, s.clientCert) } : {}),
      minVersion: 'TLSv1.2',
      ...(s.servername ? { servername: s.servername } : {}),
    },
    connectionTimeout: s.timeouts.connect,
    greetingTimeout: s.timeouts.greeting,
    socketTimeout: s.timeouts.command,
    socketCloseTimeout: 2000,
    connection: socket,
    logger: false,
    customAuth: { [XOAUTH2_HANDLER]: xoauth2 },
  };
}

/** XOAUTH2 (the secret is the access token); a refusal's 334 challenge is answered empty, as required. */
async function xoauth2(
  ctx: Parameters<NonNullable<NonNullable<ConstructorParameters<typeof SMTPConnection>[0]>['customAuth']>[string]>[0],
): Promise<void> {
  const { user, pass } = ctx.auth.credentials;
  const first = await ctx.sendCommand(
    `AUTH XOAUTH2 ${Buffer.from(`user=${user}\x01auth=Bearer ${pass}\x01\x01`, 'utf8').toString('base64')}`,
  );
  if (first.status === 235) return;
  if (first.status === 334) await ctx.sendCommand('');
  throw new Error('XOAUTH2 refused');
}

/** The reply for an error that ended the opening of a session. */
function openFailure(err: SmtpError, relay: string): OpenFailure {
  const line = err.response ? oneLine(err.response, '') : '';
  if (err.code === 'ETLS' || (/certificate|TLS|SSL/i.test(err.message) && !line)) {
    const reason = oneLine(err.message.replace(/^Error initiating TLS - /, ''), 'handshake failed');
    return { reply: `451 4.7.5 TLS with ${relay} failed: ${line || reason}`, tls: true };
  }
  if (line && err.responseCode === 421) return { reply: line, busy: true };
  if (line && err.responseCode && err.responseCode < 500) return { reply: line };
  if (line) return { reply: `451 4.4.0 ${relay} refused the session: ${line}` };
  if (err.code === 'ETIMEDOUT')
    return {
      reply: `451 4.4.1 ${relay} did not answer in time (${(err as { timeoutType?: string }).timeoutType ?? 'timeout'})`,
    };
  const sys = (err as { originalCode?: string }).originalCode;
  const closed = err.code === 'ECONNECTION' || sys === 'ECONNRESET';
  return { reply: `451 4.4.1 cannot connect to ${relay}: ${sys ?? err.code ?? 'error'}`, busy: closed };
}

/**
 * nodemailer's SMTP client, loaded at the first session: a daemon that has not sent yet (offline, or
 * receiving only) does not carry it.
 */
let client: Promise<typeof SMTPConnection> | undefined;
function smtpConnection(): Promise<typeof SMTPConnection> {
  // a failed load (files replaced by an upgrade under a running daemon) is tried again next time
  client ??= import('nodemailer/lib/smtp-connection').then(
    (m) => m.default,
    (err: unknown) => {
      client = undefined;
      throw err;
    },
  );
  return client;
}

/** Opens a session: connection, greeting, EHLO, TLS and certificate checks, AUTH. */
export async function openSession(s: SessionSettings, t: Target): Promise<Session | OpenFailure> {
  const relay = targetName(t);
  let Client: typeof SMTPConnection;
  try {
    Client = await smtpConnection();
  } catch (err) {
    // the daemon's files were replaced under it (an upgrade) and the module it loads late is gone
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return {
      reply: `451 4.3.0 cannot load the SMTP client (${code}): were ferrymail's files replaced under the running daemon? Restart it`,
      busy: true,
    };
  }
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
  const conn = new Client(connOptions(s, t, sock));
  conn.on('error', () => undefined); // every failure also reaches the operation waiting for it
  s.tracker?.add(conn);
  // a server that stops answering (or a network that silently died) is given up long before the
  // command timeout
  let stalled = false;
  const secs = Math.round(s.timeouts.progress / 1000);
  const stop = watchProgress(conn, s.timeouts.progress, () => {
    stalled = true;
    cutConnection(conn, `no progress for ${secs} s`);
  });
  try {
    const got = await open(s, t, conn, relay);
    return !(got instanceof Session) && stalled ? { reply: `451 4.4.1 ${relay} made no progress for ${secs} s` } : got;
  } finally {
    stop();
  }
}

/** Greeting, EHLO, TLS, certificate checks and AUTH on a new connection. */
async function open(
  s: SessionSettings,
  t: Target,
  conn: SMTPConnection,
  relay: string,
): Promise<Session | OpenFailure> {
  // nodemailer times each phase itself; this only bounds the whole in case a phase has no timer
  const err = await settleOn<SmtpError | undefined>(
    conn,
    s.timeouts.connect + s.timeouts.greeting + s.timeouts.command,
    Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }),
    (done, lost) => {
      lost((e) => done(e ?? Object.assign(new Error('connection closed'), { code: 'ECONNECTION' })));
      conn.connect((e) => done(e ? (e as SmtpError) : undefined));
    },
  );
  if (err && s.tracker?.why) return { reply: `451 4.4.1 ${relay}: ${s.tracker.why}` };
  if (err && s.proxy && !err.response) {
    // a proxy such as ssh -D answers CONNECT at once and closes when the server cannot be reached
    conn.close();
    return {
      reply: `451 4.4.1 SOCKS proxy ${s.proxy.host}:${s.proxy.port} closed the connection to ${relay} before its greeting (${err.code ?? 'error'}): the proxy could not reach it`,
    };
  }
  if (err) {
    conn.close();
    return openFailure(err, relay);
  }
  const session = new Session(conn, t, s);
  const bad =
    checkCertificate(s, conn, relay) ??
    (s.auth ? await session.login(s.auth, s.timeouts.command, !!s.clearAuth || !!t.socket) : undefined);
  if (bad) {
    void session.close();
    return typeof bad === 'string'
      ? { reply: bad, tls: bad.startsWith('451 4.7.5 TLS') }
      : { reply: bad.reply, auth: bad.refused };
  }
  return session;
}

/**
 * The server's certificate, checked once TLS is up: with a fingerprint configured it must be exactly that
 * certificate; otherwise, unless verify is off, its chain must lead to a trusted CA (the system's, and
 * the route's ca_file) and it must carry the server's name. A certificate that fails is named with its
 * subject, issuer and SHA-256 fingerprint, and the two ways to trust it.
 */
function checkCertificate(s: SessionSettings, conn: SMTPConnection, relay: string): string | undefined {
  const sock = (conn as unknown as ConnInternals)._socket;
  const tlsSock = sock && 'getPeerCertificate' in sock ? (sock as tls.TLSSocket) : undefined;
  const cert = tlsSock?.getPeerCertificate();
  if (s.fingerprint) {
    if (!conn.secure || !cert?.raw)
      return `451 4.7.5 TLS with ${relay} failed: no certificate to check the fingerprint against`;
    const got = fingerprintOf(cert.raw);
    return got === s.fingerprint
      ? undefined
      : `451 4.7.5 TLS with ${relay} failed: certificate fingerprint ${got} is not the configured one`;
  }
  if (!conn.secure || s.verify === false || !tlsSock || tlsSock.authorized) return undefined;
  const fp = cert?.raw ? fingerprintOf(cert.raw) : 'unknown';
  const who = (n: Record<string, unknown> | undefined): string =>
    oneLine(n ? String(n.CN ?? n.O ?? JSON.stringify(n)) : '?', '?');
  const why = String(tlsSock.authorizationError ?? 'not trusted');
  return (
    `451 4.7.5 TLS with ${relay} failed: the certificate is not trusted (${why}): subject ${who(cert?.subject as never)}, issued by ${who(cert?.issuer as never)}, ` +
    `SHA-256 ${fp}; to trust it, set ca_file to its issuer's certificate, or fingerprint: ${fp} (ferrymail route test NAME shows it)`
  );
}
/** What a server offers, as `ferrymail route test` shows it. */
export interface ServerInfo {
  relay: string;
  /** Why the session could not be opened (then the rest is what was learnt before). */
  error?: string;
  tls: boolean;
  cert?: { subject: string; issuer: string; sha256: string; validTo: string; trusted: boolean; why?: string };
  extensions: string[];
  auth: string[];
  /** The result of a login with the route's credentials: "ok", or the refusal. */
  login?: string;
}

/**
 * Connects to a server as a route would, without sending any mail: greeting, EHLO, STARTTLS (the
 * certificate is taken whatever it is, and only reported), the AUTH mechanisms offered, and a login
 * with the route's credentials when it has some and TLS (or tls: none) allows it. Never throws.
 */
export async function inspectServer(s: SessionSettings, t: Target): Promise<ServerInfo> {
  const relay = targetName(t);
  const got = await openSession({ ...s, verify: false, fingerprint: undefined, auth: undefined }, t);
  if (!(got instanceof Session)) return { relay, error: got.reply, tls: false, extensions: [], auth: [] };
  const info: Omit<ServerInfo, 'relay'> = got.describe();
  const sock = got.tlsSocket();
  const cert = sock?.getPeerCertificate();
  if (cert?.raw) {
    const fp = fingerprintOf(cert.raw);
    const name = (n: unknown): string =>
      oneLine(
        String((n as Record<string, unknown> | undefined)?.CN ?? (n as Record<string, unknown> | undefined)?.O ?? '?'),
        '?',
      );
    const trusted = s.fingerprint ? fp === s.fingerprint : !!sock!.authorized;
    const why = trusted
      ? undefined
      : s.fingerprint
        ? 'not the configured fingerprint'
        : String(sock!.authorizationError ?? 'not trusted');
    info.cert = {
      subject: name(cert.subject),
      issuer: name(cert.issuer),
      sha256: fp,
      validTo: cert.valid_to,
      trusted,
      why,
    };
  }
  if (s.auth && (info.tls || s.clearAuth || t.socket)) {
    const bad = await got.login(s.auth, s.timeouts.command, true);
    info.login = bad === undefined ? 'ok' : typeof bad === 'string' ? bad : bad.reply;
  }
  await got.close();
  return { relay, ...info };
}
