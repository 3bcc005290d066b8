/**
 * SMTP and LMTP delivery: to one server (a smarthost, host and port or a unix socket) or directly to
 * the MX hosts of each recipient's domain. Sessions are kept open between deliveries and reused (RSET
 * between messages), at most `connections` at once; deliveries beyond that wait their turn. An idle
 * session the server closed, or that fails its RSET, is replaced before anything of the message is sent.
 *
 * Trusts its settings (validated route files) and its resolver. Never throws: every failure is a
 * per-recipient outcome (smtp-session.ts says which). A session that cannot be opened is tempfail for its
 * recipients; with MX delivery the next host is tried first. A message larger than the SIZE the server
 * announced gets no MAIL: permfail 552 5.3.4. A UTF-8 address to a server without SMTPUTF8 is permfail
 * 5.6.7. Recipients whose DSN NOTIFY differs go in transactions of their own (SMTP carries it per
 * RCPT, nodemailer per transaction). Secrets never reach a result, a log or an error.
 */
import type { DeliveryRequest, DeliveryResult, RecipientResult, Transport } from './types.js';
import { asciiDomain, lookupMx, systemResolver, type MxResolver } from './mx.js';
import { Pool } from './pool.js';
import { openSession } from './smtp-open.js';
import { Session } from './smtp-session.js';
import { targetName, Tracker, type SessionSettings, type Target } from './smtp-wire.js';

export type { AuthMethod, AuthSettings } from './smtp-wire.js';
export { inspectServer, type ServerInfo } from './smtp-open.js';
export type { MxResolver } from './mx.js';

/** Where and how to deliver. */
export interface SmtpSettings extends Omit<SessionSettings, 'timeouts'> {
  /** A smarthost; or socket; or mx. */
  host?: string;
  port?: number;
  /** A unix socket (LMTP to a local store). */
  socket?: string;
  /** Deliver to the MX hosts of each recipient's domain (port defaults to 25). */
  mx?: boolean;
  /** Sessions open at once (default 2; fewer when the server refuses more, see pool.ts). */
  connections?: number;
  /** Milliseconds; connect and greeting default to 10 s and 30 s, a command's reply to 300 s, no
   * progress at all (no bytes out, no reply) while something is on its way to 30 s. */
  timeouts?: { connect?: number; greeting?: number; command?: number; progress?: number };
  /** How long an unused session stays open (default 5 s). */
  idleMs?: number;
  /** DNS for MX delivery (default: the system resolver). */
  resolver?: MxResolver;
}

/** Two sessions at once by default: a backlog leaves about a third faster than over one (measured with
 * bench/drain.sh), and a server that takes only one costs a single refused connection per run. */
const DEFAULT_CONNECTIONS = 2;

/** What one transport knows for its life (one queue run): servers it could not reach, and whether it
 * was aborted. */
interface Known {
  /** Servers that could not be reached, or refused the login, with the reply: not tried again. */
  dead: Map<string, { reply: string; auth?: boolean }>;
  tracker: Tracker;
}

/** Creates a transport; close() ends its idle sessions, abort() everything. */
export function smtpTransport(s: SmtpSettings): Transport {
  const known: Known = { dead: new Map(), tracker: new Tracker() };
  const session: SessionSettings = {
    ...s,
    timeouts: {
      connect: s.timeouts?.connect ?? 10_000,
      greeting: s.timeouts?.greeting ?? 30_000,
      command: s.timeouts?.command ?? 300_000,
      progress: s.timeouts?.progress ?? 30_000,
    },
    tracker: known.tracker,
  };
  const pool = new Pool<Session>(Math.max(1, s.connections ?? DEFAULT_CONNECTIONS), s.idleMs ?? 5000);
  const resolver = s.mx ? (s.resolver ?? systemResolver(session.timeouts.connect)) : undefined;
  const deliver = (req: DeliveryRequest): Promise<DeliveryResult> => {
    if (known.tracker.why)
      return Promise.resolve({ relay: 'none', results: all(req, 'tempfail', `451 4.4.2 ${known.tracker.why}`) });
    return resolver
      ? deliverByMx(session, pool, known, resolver, s.port ?? 25, req)
      : deliverTo(session, pool, known, [smarthost(s)], req, true);
  };
  return {
    // a mistake of ours must defer the mail, not lose it
    deliver: (req) =>
      deliver(req).catch((err: Error) => ({
        relay: 'none',
        results: all(req, 'tempfail', `451 4.3.0 delivery failed: ${err.message}`),
      })),
    close: () => pool.close(),
    abort: (why) => {
      known.tracker.abort(why);
      void pool.close();
    },
  };
}

/** The one server of a smarthost route. */
function smarthost(s: SmtpSettings): Target {
  return s.socket
    ? { host: 'localhost', port: 0, socket: s.socket }
    : { host: s.host ?? 'localhost', port: s.port ?? 25 };
}

/** Results for every recipient of a request. */
function all(req: DeliveryRequest, outcome: RecipientResult['outcome'], reply: string): RecipientResult[] {
  return req.recipients.map((r) => ({ address: r.address, outcome, reply }));
}

/** Groups recipients by domain (A-labels) and delivers each group to its MX hosts, in parallel. */
async function deliverByMx(
  s: SessionSettings,
  pool: Pool<Session>,
  known: Known,
  resolver: MxResolver,
  port: number,
  req: DeliveryRequest,
): Promise<DeliveryResult> {
  const groups = groupBy(req.recipients, (r) => asciiDomain(r.address.slice(r.address.lastIndexOf('@') + 1)));
  const done = await Promise.all(
    [...groups].map(async ([domain, recipients]): Promise<DeliveryResult> => {
      const sub = { ...req, recipients };
      const mx = await lookupMx(resolver, domain);
      if ('permfail' in mx) return { relay: domain, results: all(sub, 'permfail', mx.permfail) };
      if ('tempfail' in mx) return { relay: domain, results: all(sub, 'tempfail', mx.tempfail) };
      return deliverTo(
        s,
        pool,
        known,
        mx.hosts.map((host) => ({ host, port })),
        sub,
        false,
      );
    }),
  );
  const byAddress = new Map(done.flatMap((d) => d.results.map((r) => [r.address, r] as const)));
  return {
    relay: [...new Set(done.map((d) => d.relay))].join(','),
    results: req.recipients.map((r) => byAddress.get(r.address)!),
  };
}

/**
 * Delivers over a reused or new session to the first of the targets that takes it. A target that could
 * not be reached is not tried again by this transport; when it is a route's one server (`whole`), the
 * result says the route is down, so that the queue stops trying it.
 */
async function deliverTo(
  s: SessionSettings,
  pool: Pool<Session>,
  known: Known,
  targets: Target[],
  req: DeliveryRequest,
  whole: boolean,
): Promise<DeliveryResult> {
  let session = await pool.take(targets.map(targetName));
  try {
    if (session && !(await session.reset(s.timeouts.greeting))) {
      // closed by the server while idle, or refused RSET: replaced, not a failure
      pool.discard(session);
      session = undefined;
    }
    const keys = targets.map(targetName);
    while (!session) {
      pool.opening(keys, 1);
      const opened = await openFirst(s, known, targets).finally(() => pool.opening(keys, -1));
      if (opened instanceof Session) {
        session = opened;
        pool.inUse(session);
        break;
      }
      // turned away at once while other sessions are in use: the server limits connections per client;
      // wait for one of those (a server that is down, TLS or AUTH trouble is a failure like any other)
      if (!opened.busy || !pool.shrink(keys)) {
        const down = whole && !known.tracker.why && targets.every((t) => known.dead.has(targetName(t)));
        return {
          relay: opened.relay,
          results: all(req, 'tempfail', opened.reply),
          ...(down ? { down: { reason: opened.reply, auth: opened.auth } } : {}),
        };
      }
      session = await pool.take(keys);
      if (session && !(await session.reset(s.timeouts.greeting))) {
        pool.discard(session);
        session = undefined;
      }
    }
    const sent = await sendOn(session, req, s.timeouts.greeting);
    const results = new Map(sent.results.map((r) => [r.address, r] as const));
    if (sent.unsent.length && sent.retry) {
      // the session had carried a transaction before the server closed it, noticed only now: nothing of
      // these recipients' message left, so they go over a new session, not counted as a failure (the
      // recipients whose transactions finished are not sent again)
      pool.discard(session);
      session = undefined;
      const opened = await openFirst(s, known, targets);
      if (!(opened instanceof Session))
        return {
          relay: opened.relay,
          results: req.recipients.map((r) => results.get(r.address) ?? lost(opened.reply, r.address)),
        };
      session = opened;
      pool.inUse(session);
      const again = await sendOn(session, { ...req, recipients: sent.unsent }, s.timeouts.greeting);
      for (const r of again.results) results.set(r.address, r);
    }
    const relay = session.relay;
    return {
      relay,
      results: req.recipients.map(
        (r) =>
          results.get(r.address) ?? lost(`451 4.4.2 connection to ${relay} lost before this transaction`, r.address),
      ),
    };
  } finally {
    pool.give(session);
  }
}

/** A tempfail result for a recipient whose transaction never started. */
function lost(reply: string, address: string): RecipientResult {
  return { address, outcome: 'tempfail', reply };
}

/** Opens a session to the first target that answers, passing over those known dead; otherwise the
 * last failure. A failure that is not a server's limit on sessions marks its target dead. */
async function openFirst(
  s: SessionSettings,
  known: Known,
  targets: Target[],
): Promise<Session | { relay: string; reply: string; busy?: boolean; auth?: boolean }> {
  let last: { relay: string; reply: string; busy?: boolean; auth?: boolean } = {
    relay: 'none',
    reply: '451 4.4.4 no server to deliver to',
  };
  for (const t of targets) {
    const key = targetName(t);
    const dead = known.dead.get(key);
    if (dead) {
      last = { relay: key, ...dead };
      continue;
    }
    let got = await openSession(s, t);
    // RFC 7435: encryption that is not verified is worth having but not worth failing for
    if (
      !(got instanceof Session) &&
      got.tls &&
      s.starttls === 'opportunistic' &&
      s.verify === false &&
      !s.fingerprint &&
      !s.auth
    )
      got = await openSession({ ...s, starttls: 'never' }, t);
    if (got instanceof Session) return got;
    last = { relay: key, reply: got.reply, busy: got.busy, auth: got.auth };
    if (!got.busy && !known.tracker.why) known.dead.set(key, { reply: got.reply, auth: got.auth });
  }
  return last;
}

/** What sendOn did: results of the transactions that got an answer, the recipients of those that were
 * lost before any reply with nothing of the message read, and whether sending those again is safe and
 * worth it (the session had carried a transaction before, so the loss is the server closing it). */
interface Sent {
  results: RecipientResult[];
  unsent: DeliveryRequest['recipients'];
  retry: boolean;
}

/** Checks what the server announced against the message, then sends it: one transaction, or one per
 * NOTIFY value when the server takes DSN (with RSET between them after one that did not end cleanly). */
async function sendOn(session: Session, req: DeliveryRequest, resetMs: number): Promise<Sent> {
  if (req.smtputf8 && !session.extensions().includes('SMTPUTF8')) {
    return {
      results: all(req, 'permfail', `550 5.6.7 ${session.relay} does not offer SMTPUTF8, which these addresses need`),
      unsent: [],
      retry: false,
    };
  }
  const limit = session.sizeLimit();
  if (limit > 0 && req.size > limit) {
    return {
      results: all(
        req,
        'permfail',
        `552 5.3.4 message of ${req.size} bytes is larger than the ${limit} bytes ${session.relay} accepts`,
      ),
      unsent: [],
      retry: false,
    };
  }
  const groups = session.extensions().includes('DSN') ? byNotify(req) : [req];
  const sent: Sent = { results: [], unsent: [], retry: session.used };
  for (const [i, group] of groups.entries()) {
    if (!session.usable() || (i > 0 && !(await session.reset(resetMs)))) {
      sent.unsent.push(...group.recipients);
      continue;
    }
    const got = await session.send(group);
    session.used ||= !session.lostUnsent;
    if (session.lostUnsent) sent.unsent.push(...group.recipients);
    else sent.results.push(...got);
  }
  sent.retry ||= session.used;
  return sent;
}

/** The request split by the recipients' DSN NOTIFY values, in order of first appearance. */
function byNotify(req: DeliveryRequest): DeliveryRequest[] {
  return [...groupBy(req.recipients, (r) => (r.notify ?? []).join(',')).values()].map((recipients) => ({
    ...req,
    recipients,
  }));
}

/** Items grouped by a key, groups and items in order of first appearance. */
function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const g = groups.get(k);
    if (g) g.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}
