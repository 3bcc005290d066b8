/**
 * The SMTP and LMTP door: listeners, relay policy, limits, AUTH, and the hand-off of DATA to intake.
 *
 * Everything a client sends is untrusted. Each reply carries an enhanced status code. "250" after DATA is
 * sent only once the message is durable in the spool. Storage trouble answers 452 4.3.1 (full) or
 * 451 4.3.0, content trouble the stage's own 5xx; the session goes on either way. Clients that are not
 * trusted may not take the session slots kept for local ones (421 4.7.0). Failed AUTH attempts are
 * answered late and, past auth.max_failures, refused without a password check (454 4.7.0); every
 * failure is logged as "authentication failed peer=[ADDRESS] user=NAME" for tools such as fail2ban.
 */
import fs from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import { parseListen } from '../config/schema.js';
import type { Config } from '../config/types.js';
import { checkAddress } from '../domain/address.js';
import type { Door, Envelope, NotifyKeyword } from '../domain/envelope.js';
import { newRecipient } from '../domain/envelope.js';
import { FerryError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { fieldValue, receivedHeader, rfc5322Date } from '../scan/headers.js';
import { LineEndGuard } from '../scan/transforms.js';
import { freeBytes } from '../spool/space.js';
import type { SpoolWriter } from '../spool/writer.js';
import { checkLogin, readUsers } from './auth.js';
import { AuthGuard } from './auth-guard.js';
import { FerryConnection, FerryServer, type ConnectionPolicy } from './connection.js';
import { CLIENT_GONE, intake } from './intake.js';
import { ClientCounter, inRanges, isLocalRecipient, isLoopback, mayRelay, slotRefusal } from './policy.js';
import { checkLocalSender } from './senders.js';
import { runStage, type Hooks, type SessionFacts } from './stages.js';

/** What the door needs besides the configuration. */
export interface DoorDeps {
  spool: SpoolWriter;
  log: Logger;
  hooks?: Hooks;
  /** Called after each committed message. */
  onMessage?: (env: Envelope) => void;
  /** For sendmail -bs: the spool owner's uid (whose user, as root, may use any sender), and whether this
   * process writes the Received line (not when the message goes to the drop folder: the daemon does). */
  local?: { ownerUid: number; received: boolean };
}

/** A running set of SMTP and LMTP listeners. */
export interface SmtpDoor {
  servers: FerryServer[];
  /** Bound addresses, "host:port" (SMTP first, then LMTP). */
  addresses: string[];
  /** Serves one SMTP session over a duplex stream (sendmail -bs). */
  serveStream(stream: Duplex, user: { name: string; uid: number }): void;
  /** Resolves once no message is being taken in; says how many were cut off by their client. */
  idle(): Promise<{ cut: number }>;
  shutdown(graceMs: number): Promise<void>;
}

/** An error smtp-server turns into a reply "code enhanced text". */
function smtpError(code: number, enhanced: string, text: string): Error {
  const err = new Error(`${enhanced} ${text}`) as Error & { responseCode: number };
  err.responseCode = code;
  return err;
}

/** Maps an intake failure to the SMTP error to answer with. */
function intakeReply(err: unknown): Error {
  if (err instanceof FerryError) {
    if (err.reply) return smtpError(err.reply.code, err.reply.enhanced, err.reply.text);
    if (err.code === 'spool-full') return smtpError(452, '4.3.1', 'Insufficient system storage, try again later');
  }
  return smtpError(451, '4.3.0', 'Local error in processing, try again later');
}

/** ESMTP parameters the door implements (RFC 1870, 6152, 6531, 3461, 4954); anything else gets 555. */
const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH']);
const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);

/** The first parameter of a MAIL or RCPT command that is not in the known set. */
function unknownParam(address: SMTPServerAddress, known: Set<string>): string | undefined {
  return Object.keys(address.args || {}).find((k) => !known.has(k.toUpperCase()));
}

/** RFC 5321 4.5.1: a bare "postmaster" recipient means this host's postmaster. */
function postmaster(address: string, hostname: string): string {
  return /^postmaster$/i.test(address) ? `postmaster@${hostname}` : address;
}

/** The envelope form of an address the door accepted (domain lower-case, in A-labels). */
function normalAddress(address: string, hostname: string): string {
  const c = checkAddress(postmaster(address, hostname));
  return c.ok ? c.address : address;
}

/** Recipients whose envelope forms differ (RCPT TO:<postmaster> and <postmaster@host> are one). */
function uniqueRcpts<T extends { address: string }>(rcpts: T[], hostname: string): T[] {
  const seen = new Set<string>();
  return rcpts.filter((r) => {
    const k = normalAddress(r.address, hostname).toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** True when an accepted address still needs SMTPUTF8 in its envelope form (a UTF-8 local part). */
function needsUtf8(address: string, hostname: string): boolean {
  const c = checkAddress(postmaster(address, hostname));
  return c.ok && c.utf8;
}

/** Per-session state kept beside smtp-server's session object. */
interface SessionNote {
  facts: SessionFacts;
  counted: boolean;
  /** RCPT commands answered 250 in this transaction (LMTP owes one reply after DATA for each). */
  rcptOk: number;
}

/** Splits "host:port" / "[v6]:port". */
function splitListen(s: string): { host: string; port: number } {
  const l = parseListen(s)!; // validated with the configuration
  return { host: l.host || '0.0.0.0', port: l.port };
}

/** Starts every configured listener, one server each; all share the handlers and their counters. */
export async function startSmtpDoor(cfg: Config, deps: DoorDeps, opts: { listen?: boolean } = {}): Promise<SmtpDoor> {
  const localUsers = new Map<string, { name: string; uid: number }>();
  // sendmail -bs alone needs neither the TLS key nor the users file, which other users may not read
  const stdio = opts.listen === false;
  const handlers = buildHandlers(cfg, deps, localUsers, stdio);
  const servers: FerryServer[] = [];
  const addresses: string[] = [];
  const plan: [string, boolean][] = opts.listen === false ? [] : [...cfg.listen.map((l): [string, boolean] => [l, false]), ...cfg.lmtp_listen.map((l): [string, boolean] => [l, true])];
  const skipped: FerryError[] = [];
  try {
    for (const [item, lmtp] of plan) {
      const server = makeServer(cfg, handlers, lmtp);
      try {
        addresses.push(await listen(server, item));
        servers.push(server);
      } catch (err) {
        // a host without IPv6 (or without that address) still gets a relay on the others
        if (!(err instanceof FerryError && /EADDRNOTAVAIL|EAFNOSUPPORT/.test(err.message) && parseListen(item)?.v6)) throw err;
        skipped.push(err);
      }
    }
    if (plan.length && servers.length === 0) throw skipped[0] ?? new FerryError('config', 'no listener could be opened');
  } catch (err) {
    for (const s of servers) s.close(() => undefined);
    throw err;
  }
  for (const e of skipped) deps.log.log('warn', `${e.message}; going on without it`);
  if (plan.length && cfg.limits.reserved_local >= cfg.limits.connections) {
    deps.log.log('warn', `limits.reserved_local (${cfg.limits.reserved_local}) is not below limits.connections (${cfg.limits.connections}): only loopback and local_nets clients will be served`);
  }
  const streamServer = makeServer(cfg, handlers, false, true);
  return {
    servers,
    addresses,
    serveStream: (stream, user) => {
      const id = `bs${process.pid}x${localUsers.size}`;
      localUsers.set(id, user);
      const conn = streamServer.connect(stream as unknown as net.Socket, { remoteAddress: '127.0.0.1', remotePort: 0, localAddress: '127.0.0.1', localPort: 0, id });
      // input that ends without QUIT: once every command read has been answered, end the session
      // input that ends in the middle of DATA abandons that message (the intake then cleans up)
      if (conn._parser) {
        conn._parser.once('finish', () => {
          if (conn._dataStream) conn._dataStream.destroy();
          conn.close();
        });
      }
    },
    shutdown: async (graceMs) => {
      await Promise.all([...servers, streamServer].map((s) => s.shutdown(graceMs)));
    },
    idle: async () => {
      while (handlers.pending.size) await Promise.allSettled([...handlers.pending]);
      return { cut: handlers.cut() };
    },
  };
}

/** Binds one listener; resolves with the bound "host:port". */
function listen(server: FerryServer, item: string): Promise<string> {
  const { host, port } = splitListen(item);
  return new Promise((resolve, reject) => {
    const srv = (server as unknown as { server: net.Server }).server;
    const onError = (err: Error): void =>
      reject(new FerryError('config', `cannot listen on ${item}: ${(err as NodeJS.ErrnoException).code ?? err.message}`));
    srv.once('error', onError);
    srv.listen({ host, port, backlog: 511 }, () => {
      srv.removeListener('error', onError);
      const a = srv.address() as net.AddressInfo;
      resolve(a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
    });
  });
}

type Handlers = Pick<SMTPServerOptions, 'onConnect' | 'onSecure' | 'onAuth' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'> & {
  facts(session: SMTPServerSession): SessionFacts;
  release(session: SMTPServerSession): void;
  hooks: Hooks;
  /** Messages being taken in right now. */
  pending: Set<Promise<unknown>>;
  /** How many messages their clients abandoned in the middle. */
  cut(): number;
  trusted(ip: string): boolean;
  /** The session is sendmail -bs (a local program's stdin and stdout). */
  isLocal(session: SMTPServerSession): boolean;
  limitReached: ConnectionPolicy['limitReached'];
};

/** Creates one FerryServer (SMTP or LMTP) with the shared handlers. */
function makeServer(cfg: Config, h: Handlers, lmtp: boolean, stdio = false): FerryServer {
  const tls = cfg.tls.cert && cfg.tls.key && !stdio ? { cert: fs.readFileSync(cfg.tls.cert), key: fs.readFileSync(cfg.tls.key) } : null;
  const options: SMTPServerOptions = {
    lmtp,
    name: cfg.hostname,
    banner: cfg.smtp.banner || undefined,
    size: cfg.limits.message_size,
    maxRecipients: cfg.limits.recipients,
    maxCommandLength: cfg.limits.command_line,
    socketTimeout: cfg.limits.idle_timeout * 1000,
    closeTimeout: 30_000,
    disableReverseLookup: !cfg.smtp.reverse_lookup,
    hideDSN: false,
    hideENHANCEDSTATUSCODES: false,
    hideSTARTTLS: !tls,
    authOptional: true,
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    disabledCommands: ['WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD', ...(tls ? [] : ['STARTTLS']), ...(cfg.auth.users_file && !stdio ? [] : ['AUTH'])],
    logger: false,
    ...(tls ?? {}),
    onConnect: h.onConnect,
    onSecure: h.onSecure,
    onAuth: h.onAuth,
    onMailFrom: h.onMailFrom,
    onRcptTo: h.onRcptTo,
    onData: h.onData,
    onClose: h.onClose,
  } as SMTPServerOptions;
  const server = new FerryServer(options, {
    isTrusted: h.trusted,
    mayPipelineData: (conn: FerryConnection) => h.isLocal(conn.session),
    earlyTalkerDelay: cfg.smtp.early_talker_delay,
    errorLimit: cfg.limits.errors,
    hooks: h.hooks,
    facts: (conn: FerryConnection) => h.facts(conn.session),
    release: (conn: FerryConnection) => h.release(conn.session),
    sessionTimeMs: cfg.limits.session_time * 1000,
    minDataRate: cfg.limits.min_data_rate,
    dataTimeoutMs: cfg.limits.idle_timeout * 1000,
    limitReached: h.limitReached,
  });
  server.on('error', () => undefined); // per-connection socket errors; the session is gone either way
  return server;
}

/** The smtp-server callbacks, closed over the configuration and the spool. */
function buildHandlers(cfg: Config, deps: DoorDeps, localUsers: Map<string, { name: string; uid: number }>, stdio: boolean): Handlers {
  const counter = new ClientCounter();
  const notes = new WeakMap<SMTPServerSession, SessionNote>();
  const hooks = deps.hooks ?? {};
  const localDomains = [cfg.hostname, ...cfg.local_domains];
  const userFile = cfg.auth.users_file && !stdio ? readUsers(cfg.auth.users_file) : null;
  for (const w of userFile?.warnings ?? []) deps.log.log('warn', w);
  const users = userFile?.users ?? null;
  const trusted = (ip: string): boolean => isLoopback(ip) || inRanges(ip, cfg.local_nets);
  const guard = new AuthGuard({ maxFailures: cfg.auth.max_failures, windowMs: cfg.auth.failure_window * 1000 });

  const facts = (session: SMTPServerSession): SessionFacts => {
    let note = notes.get(session);
    if (!note) {
      note = { counted: false, rcptOk: 0, facts: { id: session.id, peer: session.remoteAddress, peerPort: session.remotePort, trusted: trusted(session.remoteAddress), secure: false, recipients: [] } };
      notes.set(session, note);
    }
    const f = note.facts;
    f.secure = !!session.secure;
    f.user = typeof session.user === 'string' ? session.user : undefined;
    f.helo = session.hostNameAppearsAs || undefined;
    f.sender = session.envelope?.mailFrom ? session.envelope.mailFrom.address : undefined;
    f.recipients = session.envelope?.rcptTo?.map((r) => r.address) ?? [];
    return f;
  };

  const pending = new Set<Promise<unknown>>();
  let cutCount = 0;

  /** Stops counting a session against the connection limits (once). */
  const release = (session: SMTPServerSession): void => {
    const note = notes.get(session);
    if (!note?.counted) return;
    note.counted = false;
    counter.remove(session.remoteAddress);
  };

  /** Callback adapter: runs a stage and maps its verdict onto smtp-server's callback. */
  const verdictTo = (cb: (err?: Error | null) => void) => (v: Awaited<ReturnType<typeof runStage>>) => {
    if (v.action === 'continue') return cb();
    cb(smtpError(v.action === 'disconnect' ? 421 : v.reply.code, v.reply.enhanced, v.reply.text));
  };

  return {
    hooks,
    trusted,
    isLocal: (session) => localUsers.has(session.id),
    facts,
    limitReached(conn, limit, bytes) {
      const text = limit === 'session-time' ? 'session time limit reached' : 'data rate too low';
      deps.log.log('warn', text, { session: conn.session.id, peer: conn.remoteAddress, bytes: limit === 'data-rate' ? bytes : undefined });
    },
    onConnect(session, cb) {
      const ip = session.remoteAddress;
      const note = (facts(session), notes.get(session)!);
      note.counted = true;
      const perClient = counter.add(ip);
      const refusal = slotRefusal({ total: counter.total, perClient, trusted: trusted(ip), perClientExempt: inRanges(ip, cfg.limits.per_client_exempt) }, cfg.limits);
      if (refusal === 'full') return cb(smtpError(421, '4.7.0', `${cfg.hostname} Too many connections, try again later`));
      if (refusal === 'client') return cb(smtpError(421, '4.7.0', `${cfg.hostname} Too many connections from your address`));
      session.disabledCommands = disabledFor(cfg, session, users, localUsers.has(session.id));
      runStage(hooks.connect, facts(session), { stage: 'connect', verb: '', arg: '' }).then(verdictTo(cb));
    },
    onSecure(_socket, session, cb) {
      session.disabledCommands = disabledFor(cfg, session, users, localUsers.has(session.id));
      cb();
    },
    release,
    pending,
    cut: () => cutCount,
    onClose: release,
    onAuth(auth: SMTPServerAuthentication, session, cb) {
      if (!users) return cb(smtpError(502, '5.5.1', 'Authentication not enabled'));
      if (!session.secure && !isLoopback(session.remoteAddress)) {
        return cb(smtpError(538, '5.7.11', 'Encryption required for requested authentication mechanism'));
      }
      const fail = (): void => cb(smtpError(535, '5.7.8', 'Authentication credentials invalid'));
      if (typeof auth.password !== 'string') return fail();
      const user = auth.username ?? '';
      const peer = session.remoteAddress;
      if (!guard.begin(peer, user).ok) return cb(smtpError(454, '4.7.0', 'Too many failed authentication attempts, try again later'));
      const settle = (ok: boolean): void => {
        const failure = guard.settle(peer, user, ok);
        if (!failure) {
          deps.log.log('info', 'authenticated', { session: session.id, user, peer });
          return cb(null, { user });
        }
        // fixed text, the address in brackets before the client-supplied name: one line for fail2ban
        deps.log.log('warn', 'authentication failed', { peer: `[${peer}]`, user, session: session.id });
        for (const lock of failure.locks) {
          deps.log.log('warn', 'authentication locked', { peer: `[${peer}]`, user, by: lock.by, until: new Date(lock.until).toISOString(), session: session.id });
        }
        setTimeout(fail, failure.delayMs).unref();
      };
      checkLogin(users, user, auth.password).then(settle, () => settle(false));
    },
    onMailFrom(address: SMTPServerAddress, session, cb) {
      const unknownMail = unknownParam(address, MAIL_PARAMS);
      if (unknownMail) return cb(smtpError(555, '5.5.4', `Unsupported MAIL parameter ${unknownMail}`));
      if (address.address !== '') {
        const c = checkAddress(address.address);
        if (!c.ok) return cb(smtpError(553, '5.1.7', `Bad sender address: ${c.reason}`));
      }
      const size = Number(address.args ? address.args.SIZE : 0) || 0;
      if (cfg.limits.spool_minfree && freeBytes(deps.spool.layout.root) - size < cfg.limits.spool_minfree) {
        return cb(smtpError(452, '4.3.1', 'Insufficient system storage, try again later'));
      }
      const local = localUsers.get(session.id);
      if (local && deps.local) {
        try {
          checkLocalSender(cfg.submission.local_senders, { login: local.name, uid: local.uid, ownerUid: deps.local.ownerUid, sender: address.address === '' ? '' : normalAddress(address.address, cfg.hostname) });
        } catch (err) {
          const r = (err as FerryError).reply!;
          return cb(smtpError(r.code, r.enhanced, r.text));
        }
      }
      const f = facts(session);
      notes.get(session)!.rcptOk = 0;
      runStage(hooks.mail, { ...f, sender: address.address }, { stage: 'mail', verb: 'MAIL', arg: address.address }).then(verdictTo(cb));
    },
    onRcptTo(address: SMTPServerAddress, session, cb) {
      const unknownRcpt = unknownParam(address, RCPT_PARAMS);
      if (unknownRcpt) return cb(smtpError(555, '5.5.4', `Unsupported RCPT parameter ${unknownRcpt}`));
      const c = checkAddress(postmaster(address.address, cfg.hostname));
      if (!c.ok) return cb(smtpError(553, '5.1.3', `Bad recipient address: ${c.reason}`));
      const f = facts(session);
      if (!isLocalRecipient(c.address, localDomains) && !mayRelay({ peer: session.remoteAddress, authenticated: !!session.user, localNets: cfg.local_nets })) {
        return cb(smtpError(554, '5.7.1', `Relay access denied for <${address.address}>`));
      }
      runStage(hooks.rcpt, f, { stage: 'rcpt', verb: 'RCPT', arg: address.address }).then((v) => {
        if (v.action === 'continue') notes.get(session)!.rcptOk++;
        verdictTo(cb)(v);
      });
    },
    onData(stream, session, cb) {
      const f = facts(session);
      const local = localUsers.get(session.id);
      const door: Door = session.transmissionType?.includes('LMTP') ? 'lmtp' : local ? 'sendmail-bs' : 'smtp';
      // smtp-server merges a repeated RCPT into one envelope entry, but LMTP owes a reply for each 250
      const lmtpReplies = Math.max(notes.get(session)?.rcptOk ?? 0, session.envelope.rcptTo.length);
      const p = receiveData(cfg, deps, stream, session, f, door, local).then(
        (env) => {
          deps.onMessage?.(env);
          const text = `2.0.0 Ok: queued as ${env.id}`;
          if (door === 'lmtp') cb(null, Array.from({ length: lmtpReplies }, () => text));
          else cb(null, text);
        },
        (err) => {
          if (!(err instanceof FerryError) || err.code !== 'data') {
            deps.log.log('error', 'message not stored', { session: session.id, peer: session.remoteAddress, error: (err as Error).message });
          } else {
            deps.log.log('warn', 'message refused', { session: session.id, peer: session.remoteAddress, reason: (err as Error).message });
          }
          if ((err as Error).message === CLIENT_GONE) cutCount++;
          if (door === 'lmtp') cb(null, Array.from({ length: lmtpReplies }, () => intakeReply(err)));
          else cb(intakeReply(err));
        },
      );
      pending.add(p);
      void p.finally(() => pending.delete(p));
    },
  };
}

/** Commands a session may not use: the sendmail-era ones, STARTTLS without a certificate or on the
 * stdin/stdout session of sendmail -bs (no socket to encrypt), AUTH where authDisabled says so. */
function disabledFor(cfg: Config, session: SMTPServerSession, users: Map<string, string> | null, local: boolean): string[] {
  const off = ['WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD'];
  if (!cfg.tls.cert || local) off.push('STARTTLS');
  if (authDisabled(cfg, session, users)) off.push('AUTH');
  return off;
}

/** AUTH is offered only with a users file, and only over TLS or on loopback. */
function authDisabled(cfg: Config, session: SMTPServerSession, users: Map<string, string> | null): boolean {
  return !users || !cfg.auth.users_file || (!session.secure && !isLoopback(session.remoteAddress));
}

/** Streams one DATA into the spool with the SMTP header edits. */
function receiveData(
  cfg: Config,
  deps: DoorDeps,
  stream: NodeJS.ReadableStream,
  session: SMTPServerSession,
  f: SessionFacts,
  door: Door,
  local?: { name: string; uid: number },
): Promise<Envelope> {
  const env = session.envelope;
  const rcpts = env.rcptTo;
  const now = new Date();
  const protocol = session.transmissionType || 'ESMTP';
  const received = !local || deps.local?.received !== false;
  return intake(deps.spool, stream as unknown as import('node:stream').Readable, {
    pre: [new LineEndGuard(cfg.smtp.bare_line_ends)],
    maxSize: cfg.limits.message_size,
    maxHeaderBytes: cfg.limits.header_size,
    maxHops: cfg.limits.received_hops,
    minFree: cfg.limits.spool_minfree,
    declaredSize: Number(env.mailFrom && env.mailFrom.args ? env.mailFrom.args.SIZE : 0) || 0,
    edit: (fields, id) => {
      const prepend = !received ? '' : receivedHeader({
        hostname: cfg.hostname,
        id,
        protocol,
        date: now,
        helo: session.hostNameAppearsAs || undefined,
        peer: local ? undefined : session.remoteAddress,
        uid: local?.uid,
        user: local?.name,
        clientName: session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : undefined,
        recipients: rcpts.map((r) => r.address),
        tls: session.secure && session.tlsOptions ? `${session.tlsOptions.version ?? 'TLS'} ${session.tlsOptions.name ?? ''}`.trim() : undefined,
      });
      let append = '';
      if (f.trusted || f.user) {
        if (!fields.some((x) => x.lower === 'date')) append += `Date: ${rfc5322Date(now)}\r\n`;
        if (!fields.some((x) => x.lower === 'message-id')) append += `Message-ID: <${id}@${cfg.hostname}>\r\n`;
      }
      return { prepend, append };
    },
    envelope: (fields, id) => {
      const mid = fields.find((x) => x.lower === 'message-id');
      return {
        version: 1,
        arrival: now.toISOString(),
        sender: env.mailFrom ? normalAddress(env.mailFrom.address, cfg.hostname) : '',
        recipients: uniqueRcpts(rcpts, cfg.hostname).map((r) =>
          newRecipient(normalAddress(r.address, cfg.hostname), {
            notify: r.dsn?.notify as NotifyKeyword[] | undefined,
            orcpt: r.dsn?.orcpt ?? undefined,
          }),
        ),
        origin: local
          ? { door, helo: session.hostNameAppearsAs || undefined, user: local.name, uid: local.uid }
          : { door, peer: session.remoteAddress, peerPort: session.remotePort, helo: session.hostNameAppearsAs || undefined, user: f.user },
        protocol,
        body: env.bodyType === '8bitmime' ? '8BITMIME' : '7BIT',
        // a UTF-8 address needs SMTPUTF8 on the way out even when the client did not say so
        smtputf8: env.smtpUtf8 || [env.mailFrom ? env.mailFrom.address : '', ...rcpts.map((r) => r.address)].some((a) => a !== '' && needsUtf8(a, cfg.hostname)) || undefined,
        ret: (env.dsn?.ret as 'FULL' | 'HDRS' | null) ?? undefined,
        envid: env.dsn?.envid ?? undefined,
        messageId: mid ? fieldValue(mid) : f.trusted || f.user ? `<${id}@${cfg.hostname}>` : undefined,
      };
    },
  });
}

