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
import type net from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { SMTPServerOptions } from 'smtp-server';
import { parseListen } from '../config/schema.js';
import type { Config } from '../config/types.js';
import type { Envelope, Recipient } from '../domain/envelope.js';
import type { Outcome } from '../domain/outcome.js';
import { FerryError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { SpoolWriter } from '../spool/writer.js';
import { type FerryConnection, FerryServer, type ConnectionPolicy } from './connection.js';
import type { Hooks } from './stages.js';
import { buildHandlers, type Handlers } from './smtp-handlers.js';

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
  /** Delivers a message's one local mailbox before the final reply to DATA (local.deliver_in_dialogue). */
  dialogue?: (cfg: Config, d: DialogueDelivery) => Promise<DialogueVerdict | undefined>;
}

/** A message for one local mailbox, delivered while its client waits for the reply to DATA. */
export interface DialogueDelivery {
  id: string;
  sender: string;
  /** The recipient as the expansion made it (its local target names the user). */
  recipient: Recipient;
  size: number;
  body?: '7BIT' | '8BITMIME';
  smtputf8?: boolean;
  /** The whole message, from the spool's temporary file. */
  read(): Readable;
}

/** The delivery server's verdict with its own reply ("250 2.0.0 ...", "552 5.2.2 ..."), or uncertain:
 * the connection broke after the whole message had gone. Undefined: the server could not be reached. */
export interface DialogueVerdict {
  outcome: Outcome;
  reply: string;
  relay: string;
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
  /** Takes a new configuration: listeners kept take its limits, policy and certificate for their next
   * sessions (sessions under way finish as they began), listeners no longer configured close after their
   * sessions, new ones open. A listener that cannot open is logged and left out. */
  reload(cfg: Config): Promise<void>;
}

/** What a listener serves: SMTP, LMTP, or submission (STARTTLS required, or TLS from the start). */
type Kind = 'smtp' | 'lmtp' | 'submission' | 'submissions';

/** One listener of the door. */
interface Listener {
  item: string;
  kind: Kind;
  server: FerryServer;
  address: string;
}

/** Splits "host:port" / "[v6]:port". */
function splitListen(s: string): { host: string; port: number } {
  const l = parseListen(s)!; // validated with the configuration
  return { host: l.host || '0.0.0.0', port: l.port };
}

/** The listeners a configuration asks for: SMTP, then LMTP, then submission. */
function listenPlan(cfg: Config): Array<{ item: string; kind: Kind }> {
  const plan = [
    ...cfg.listen.map((item) => ({ item, kind: 'smtp' as const })),
    ...cfg.lmtp_listen.map((item) => ({ item, kind: 'lmtp' as const })),
    ...cfg.submission_listen.map((item) => ({ item, kind: 'submission' as const })),
    ...cfg.submissions_listen.map((item) => ({ item, kind: 'submissions' as const })),
  ];
  const submission = cfg.submission_listen.length + cfg.submissions_listen.length > 0;
  if (submission && (!cfg.tls.cert || !cfg.tls.key))
    throw new FerryError(
      'config',
      'submission_listen and submissions_listen need tls.cert and tls.key: submission is over TLS',
    );
  if (submission && !cfg.auth.users_file && !cfg.auth.check_command.length)
    throw new FerryError(
      'config',
      'submission_listen and submissions_listen need auth.users_file or auth.check_command: submission is for users who log in',
    );
  return plan;
}

/** Opens the listeners of a plan; IPv6 addresses the host lacks are skipped (returned as warnings). */
async function openListeners(
  cfg: Config,
  h: Handlers,
  plan: Array<{ item: string; kind: Kind }>,
): Promise<{ opened: Listener[]; skipped: FerryError[] }> {
  const opened: Listener[] = [];
  const skipped: FerryError[] = [];
  try {
    for (const { item, kind } of plan) {
      const server = makeServer(cfg, h, kind);
      try {
        opened.push({ item, kind, server, address: await listen(server, item) });
      } catch (err) {
        // a host without IPv6 (or without that address) still gets a relay on the others
        if (!(err instanceof FerryError && /EADDRNOTAVAIL|EAFNOSUPPORT/.test(err.message) && parseListen(item)?.v6))
          throw err;
        skipped.push(err);
      }
    }
  } catch (err) {
    for (const l of opened) l.server.close(() => undefined);
    throw err;
  }
  return { opened, skipped };
}

/** Starts every configured listener, one server each; all share the handlers and their counters. */
export async function startSmtpDoor(cfg: Config, deps: DoorDeps, opts: { listen?: boolean } = {}): Promise<SmtpDoor> {
  const localUsers = new Map<string, { name: string; uid: number }>();
  // sendmail -bs alone needs neither the TLS key nor the users file, which other users may not read
  const stdio = opts.listen === false;
  let handlers = buildHandlers(cfg, deps, localUsers, stdio);
  const every = [handlers];
  const plan = stdio ? [] : listenPlan(cfg);
  const { opened, skipped } = await openListeners(cfg, handlers, plan);
  if (plan.length && opened.length === 0) throw skipped[0] ?? new FerryError('config', 'no listener could be opened');
  let listeners = opened;
  for (const e of skipped) deps.log.log('warn', `${e.message}; going on without it`);
  warnReserved(cfg, deps, plan.length > 0);
  const streamServer = makeServer(cfg, handlers, 'smtp', true);
  const door: SmtpDoor = {
    servers: listeners.map((l) => l.server),
    addresses: listeners.map((l) => l.address),
    serveStream: (stream, user) => {
      const id = `bs${process.pid}x${localUsers.size}`;
      localUsers.set(id, user);
      const conn = streamServer.connect(stream as unknown as net.Socket, {
        remoteAddress: '127.0.0.1',
        remotePort: 0,
        localAddress: '127.0.0.1',
        localPort: 0,
        id,
      });
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
      await Promise.all([...listeners.map((l) => l.server), streamServer].map((s) => s.shutdown(graceMs)));
    },
    idle: async () => {
      for (const h of every) while (h.pending.size) await Promise.allSettled([...h.pending]);
      return { cut: every.reduce((n, h) => n + h.cut(), 0) };
    },
    reload: async (next) => {
      handlers = buildHandlers(next, deps, localUsers, false);
      every.push(handlers);
      const wanted = listenPlan(next);
      const same = (a: { item: string; kind: Kind }, b: { item: string; kind: Kind }): boolean =>
        a.item === b.item && a.kind === b.kind;
      const kept = listeners.filter((l) => wanted.some((w) => same(w, l)));
      for (const l of listeners.filter((x) => !kept.includes(x))) void l.server.shutdown(30_000);
      for (const l of kept)
        l.server.reconfigure(serverOptions(next, handlers, l.kind), serverPolicy(next, handlers, l.kind));
      const fresh = await openListeners(
        next,
        handlers,
        wanted.filter((w) => !kept.some((k) => same(w, k))),
      ).catch((err: Error) => {
        deps.log.log('error', `${err.message}; the other listeners go on`);
        return { opened: [] as Listener[], skipped: [] as FerryError[] };
      });
      for (const e of fresh.skipped) deps.log.log('warn', `${e.message}; going on without it`);
      listeners = [...kept, ...fresh.opened];
      door.servers = listeners.map((l) => l.server);
      door.addresses = listeners.map((l) => l.address);
      warnReserved(next, deps, wanted.length > 0);
    },
  };
  return door;
}

/** Warns when the slots kept for local clients leave none for the others. */
function warnReserved(cfg: Config, deps: DoorDeps, listening: boolean): void {
  if (listening && cfg.limits.reserved_local >= cfg.limits.connections) {
    deps.log.log(
      'warn',
      `limits.reserved_local (${cfg.limits.reserved_local}) is not below limits.connections (${cfg.limits.connections}): only loopback and local_nets clients will be served`,
    );
  }
}

/** Binds one listener; resolves with the bound "host:port". */
function listen(server: FerryServer, item: string): Promise<string> {
  const { host, port } = splitListen(item);
  return new Promise((resolve, reject) => {
    const srv = (server as unknown as { server: net.Server }).server;
    const onError = (err: Error): void =>
      reject(
        new FerryError('config', `cannot listen on ${item}: ${(err as NodeJS.ErrnoException).code ?? err.message}`),
      );
    srv.once('error', onError);
    srv.listen({ host, port, backlog: 511 }, () => {
      srv.removeListener('error', onError);
      const a = srv.address() as net.AddressInfo;
      resolve(a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
    });
  });
}

/** Creates one FerryServer (SMTP or LMTP) with the shared handlers. */
function makeServer(cfg: Config, h: Handlers, kind: Kind, stdio = false): FerryServer {
  const server = new FerryServer(serverOptions(cfg, h, kind, stdio), serverPolicy(cfg, h, kind));
  server.on('error', () => undefined); // per-connection socket errors; the session is gone either way
  return server;
}

/** smtp-server's options for a configuration (with the TLS certificate read from its files). */
function serverOptions(cfg: Config, h: Handlers, kind: Kind, stdio = false): SMTPServerOptions {
  const tls =
    cfg.tls.cert && cfg.tls.key && !stdio
      ? { cert: fs.readFileSync(cfg.tls.cert), key: fs.readFileSync(cfg.tls.key) }
      : null;
  const submission = kind === 'submission' || kind === 'submissions';
  return {
    lmtp: kind === 'lmtp',
    // port 465: TLS from the first byte
    secure: kind === 'submissions',
    // submission: no MAIL before AUTH (smtp-server answers 530 5.7.0)
    authOptional: !submission,
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
    hideSTARTTLS: !tls || kind === 'submissions',
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    disabledCommands: [
      'WIZ',
      'SHELL',
      'KILL',
      'XCLIENT',
      'XFORWARD',
      ...(tls ? [] : ['STARTTLS']),
      ...((cfg.auth.users_file || cfg.auth.check_command.length) && !stdio ? [] : ['AUTH']),
    ],
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
}

/** ferrymail's own policy of a server for a configuration. */
function serverPolicy(cfg: Config, h: Handlers, kind: Kind = 'smtp'): ConnectionPolicy {
  return {
    submission: kind === 'submission' ? 'starttls' : kind === 'submissions' ? 'tls' : undefined,
    isTrusted: h.trusted,
    mayPipelineData: (conn: FerryConnection) => h.isLocal(conn.session),
    earlyTalkerDelay: cfg.smtp.early_talker_delay,
    errorLimit: cfg.limits.errors,
    hooks: h.hooks,
    warnHook: h.warnHook,
    facts: (conn: FerryConnection) => h.facts(conn.session),
    release: (conn: FerryConnection) => h.release(conn.session),
    sessionTimeMs: cfg.limits.session_time * 1000,
    minDataRate: cfg.limits.min_data_rate,
    dataTimeoutMs: cfg.limits.idle_timeout * 1000,
    limitReached: h.limitReached,
  };
}
