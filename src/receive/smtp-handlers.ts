/**
 * The smtp-server callbacks of the SMTP and LMTP door, shared by every listener: connection limits and
 * the slots kept for local clients, the hook stages, AUTH with its failure counting, relay policy at
 * RCPT, the senders a local user may use on sendmail -bs, free space at MAIL, and DATA into the spool.
 *
 * Everything a client sends is untrusted; each reply carries an enhanced status code. Built once per
 * configuration: a reload builds new handlers and the servers take them for new sessions.
 */
import type { SMTPServerAddress, SMTPServerAuthentication, SMTPServerOptions, SMTPServerSession } from 'smtp-server';
import type { Config } from '../config/types.js';
import { checkAddress } from '../domain/address.js';
import { envidProblem, type Door, type Envelope } from '../domain/envelope.js';
import { FerryError } from '../errors.js';
import { freeBytes, INTAKE_FREE_AGE_MS } from '../spool/space.js';
import { checkByCommand, checkLogin, readUsers } from './auth.js';
import { AuthGuard } from './auth-guard.js';
import type { ConnectionPolicy } from './connection.js';
import { CLIENT_GONE } from './intake.js';
import { ClientCounter, inRanges, isLoopback, mayRelay, slotRefusal } from './policy.js';
import { isLocalAddress } from '../local/host.js';
import { checkRecipientHere, dialogueUser } from '../local/recipients.js';
import { dataEnd } from './data-end.js';
import { dialogueReply, dialogueStep } from './dialogue.js';
import type { HeldMessage } from './intake.js';
import { checkLocalSender, senderAllowed } from './senders.js';
import { suspensionsFor, withStrikes } from './suspend.js';
import { runStage, verdictReply, type HookWarn, type Hooks, type SessionFacts } from './stages.js';
import type { DoorDeps } from './smtp.js';
import {
  intakeReply,
  MAIL_PARAMS,
  normalAddress,
  postmaster,
  RCPT_PARAMS,
  receiveData,
  smtpError,
  unknownParam,
} from './smtp-envelope.js';

/** Per-session state kept beside smtp-server's session object. */
interface SessionNote {
  facts: SessionFacts;
  counted: boolean;
  /** RCPT commands answered 250 in this transaction (LMTP owes one reply after DATA for each). */
  rcptOk: number;
  /** The mailbox user the transaction's recipients are delivered to in the dialogue; "" for none. */
  dialogue: string;
  /** The policy class the rcpt hooks gave the transaction's recipients. */
  policy?: string;
  /** The close stage has run. */
  closed?: boolean;
}

export type Handlers = Pick<
  SMTPServerOptions,
  'onConnect' | 'onSecure' | 'onAuth' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'
> & {
  facts(session: SMTPServerSession): SessionFacts;
  /** Where a hook's failure is logged. */
  warnHook: HookWarn;
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

/** The smtp-server callbacks, closed over the configuration and the spool. */
export function buildHandlers(
  cfg: Config,
  deps: DoorDeps,
  localUsers: Map<string, { name: string; uid: number }>,
  stdio: boolean,
): Handlers {
  const counter = new ClientCounter();
  const notes = new WeakMap<SMTPServerSession, SessionNote>();
  const suspensions = stdio ? undefined : suspensionsFor(cfg, deps.spool, deps.log, deps.onMessage);
  const hooks = suspensions
    ? withStrikes(deps.hooks ?? {}, (user, why) => suspensions.strike(user, why))
    : (deps.hooks ?? {});
  const warnHook: HookWarn = (text, fields) => deps.log.log('warn', text, fields);
  const userFile = cfg.auth.users_file && !stdio ? readUsers(cfg.auth.users_file) : null;
  for (const w of userFile?.warnings ?? []) deps.log.log('warn', w);
  const users = userFile?.users ?? null;
  const trusted = (ip: string): boolean => isLoopback(ip) || inRanges(ip, cfg.local_nets);
  const guard = new AuthGuard({ maxFailures: cfg.auth.max_failures, windowMs: cfg.auth.failure_window * 1000 });

  const facts = (session: SMTPServerSession): SessionFacts => {
    let note = notes.get(session);
    if (!note) {
      note = {
        counted: false,
        rcptOk: 0,
        dialogue: '',
        facts: {
          id: session.id,
          peer: session.remoteAddress,
          peerPort: session.remotePort,
          trusted: trusted(session.remoteAddress),
          secure: false,
          recipients: [],
        },
      };
      notes.set(session, note);
    }
    const f = note.facts;
    f.secure = !!session.secure;
    f.user = typeof session.user === 'string' ? session.user : undefined;
    f.helo = session.hostNameAppearsAs || undefined;
    f.sender = session.envelope?.mailFrom ? session.envelope.mailFrom.address : undefined;
    f.recipients = session.envelope?.rcptTo?.map((r) => r.address) ?? [];
    f.policy = note.policy;
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
    // a discard means something at data_end only: before it, the command passes
    if (v.action === 'continue' || v.action === 'accept' || v.action === 'discard') return cb();
    const reply = verdictReply(v);
    cb(smtpError(reply.code, reply.enhanced, reply.text));
  };

  return {
    hooks,
    warnHook,
    trusted,
    isLocal: (session) => localUsers.has(session.id),
    facts,
    limitReached(conn, limit, bytes) {
      const text = limit === 'session-time' ? 'session time limit reached' : 'data rate too low';
      deps.log.log('warn', text, {
        session: conn.session.id,
        peer: conn.remoteAddress,
        bytes: limit === 'data-rate' ? bytes : undefined,
      });
    },
    onConnect(session, cb) {
      const ip = session.remoteAddress;
      const note = (facts(session), notes.get(session)!);
      note.counted = true;
      const perClient = counter.add(ip);
      const refusal = slotRefusal(
        {
          total: counter.total,
          perClient,
          trusted: trusted(ip),
          perClientExempt: inRanges(ip, cfg.limits.per_client_exempt),
        },
        cfg.limits,
      );
      if (refusal === 'full')
        return cb(smtpError(421, '4.7.0', `${cfg.hostname} Too many connections, try again later`));
      if (refusal === 'client')
        return cb(smtpError(421, '4.7.0', `${cfg.hostname} Too many connections from your address`));
      session.disabledCommands = disabledFor(cfg, session, users, localUsers.has(session.id));
      runStage(hooks.connect, facts(session), { stage: 'connect', verb: '', arg: '' }, undefined, warnHook).then(
        verdictTo(cb),
      );
    },
    onSecure(_socket, session, cb) {
      session.disabledCommands = disabledFor(cfg, session, users, localUsers.has(session.id));
      cb();
    },
    release,
    pending,
    cut: () => cutCount,
    onClose(session) {
      release(session);
      // the close stage: observers only, once per session (a milter's connection ends here)
      const note = notes.get(session);
      if (!note || note.closed || !hooks.close?.length) return;
      note.closed = true;
      void runStage(hooks.close, facts(session), { stage: 'close', verb: '', arg: '' }, undefined, warnHook);
    },
    onAuth(auth: SMTPServerAuthentication, session, cb) {
      const check = cfg.auth.check_command;
      if (!users && !check.length) return cb(smtpError(502, '5.5.1', 'Authentication not enabled'));
      if (!session.secure && (isSubmission(session) || !isLoopback(session.remoteAddress))) {
        return cb(smtpError(538, '5.7.11', 'Encryption required for requested authentication mechanism'));
      }
      const fail = (): void => cb(smtpError(535, '5.7.8', 'Authentication credentials invalid'));
      if (typeof auth.password !== 'string') return fail();
      const user = auth.username ?? '';
      const peer = session.remoteAddress;
      if (!guard.begin(peer, user).ok)
        return cb(smtpError(454, '4.7.0', 'Too many failed authentication attempts, try again later'));
      const settle = (ok: boolean): void => {
        const failure = guard.settle(peer, user, ok);
        if (!failure) {
          deps.log.log('info', 'authenticated', { session: session.id, user, peer });
          return cb(null, { user });
        }
        // fixed text, the address in brackets before the client-supplied name: one line for fail2ban
        deps.log.log('warn', 'authentication failed', { peer: `[${peer}]`, user, session: session.id });
        for (const lock of failure.locks) {
          deps.log.log('warn', 'authentication locked', {
            peer: `[${peer}]`,
            user,
            by: lock.by,
            until: new Date(lock.until).toISOString(),
            session: session.id,
          });
        }
        setTimeout(fail, failure.delayMs).unref();
      };
      if (!check.length) return void checkLogin(users!, user, auth.password).then(settle, () => settle(false));
      checkByCommand(check, user, auth.password).then((a) => {
        if ('ok' in a) return settle(a.ok);
        guard.cancel(peer, user);
        deps.log.log('error', 'authentication not checked', { session: session.id, user, peer, error: a.error });
        cb(smtpError(454, '4.7.0', 'Temporary authentication failure'));
      });
    },
    onMailFrom(address: SMTPServerAddress, session, cb) {
      // submission: TLS, then AUTH, before any mail (RFC 6409, RFC 3207 4.2)
      if (isSubmission(session) && !session.secure)
        return cb(smtpError(530, '5.7.0', 'Must issue a STARTTLS command first'));
      if (isSubmission(session) && !session.user) return cb(smtpError(530, '5.7.0', 'Authentication required'));
      const user = typeof session.user === 'string' ? session.user : undefined;
      if (user && suspensions?.suspended(user)) {
        deps.log.log('warn', 'mail of a suspended user refused', { session: session.id, user });
        return cb(smtpError(550, '5.7.1', `User ${user} is suspended; ask the postmaster to release it`));
      }
      const unknownMail = unknownParam(address, MAIL_PARAMS);
      if (unknownMail) return cb(smtpError(555, '5.5.4', `Unsupported MAIL parameter ${unknownMail}`));
      // smtp-server has decoded the xtext and refused control characters; an ENVID goes into notices
      const envid = address.args ? (address.args as Record<string, unknown>).ENVID : undefined;
      const badEnvid = typeof envid === 'string' ? envidProblem(envid) : undefined;
      if (badEnvid) {
        if (session.envelope.dsn) session.envelope.dsn.envid = null; // smtp-server stored it already
        return cb(smtpError(501, '5.5.4', `Bad ENVID parameter: ${badEnvid}`));
      }
      if (address.address !== '') {
        const c = checkAddress(address.address);
        if (!c.ok) return cb(smtpError(553, '5.1.7', `Bad sender address: ${c.reason}`));
      }
      const size = Number(address.args ? address.args.SIZE : 0) || 0;
      if (
        cfg.limits.spool_minfree &&
        freeBytes(deps.spool.layout.root, INTAKE_FREE_AGE_MS) - size < cfg.limits.spool_minfree
      ) {
        return cb(smtpError(452, '4.3.1', 'Insufficient system storage, try again later'));
      }
      // a user who logged in sends only as the addresses listed for them (submission.senders)
      const login = typeof session.user === 'string' ? session.user : undefined;
      if (login && !senderAllowed(cfg.submission.senders, login, normalAddress(address.address, cfg.hostname))) {
        deps.log.log('warn', 'sender refused for the login', {
          session: session.id,
          user: login,
          sender: `<${address.address}>`,
        });
        return cb(
          smtpError(553, '5.7.1', `Sender address rejected: <${address.address}> is not owned by user ${login}`),
        );
      }
      const local = localUsers.get(session.id);
      if (local && deps.local) {
        try {
          checkLocalSender(cfg.submission.local_senders, {
            login: local.name,
            uid: local.uid,
            ownerUid: deps.local.ownerUid,
            sender: address.address === '' ? '' : normalAddress(address.address, cfg.hostname),
          });
        } catch (err) {
          const r = (err as FerryError).reply!;
          return cb(smtpError(r.code, r.enhanced, r.text));
        }
      }
      const f = facts(session);
      const note = notes.get(session)!;
      note.rcptOk = 0;
      note.dialogue = '';
      note.policy = undefined;
      runStage(
        hooks.mail,
        { ...f, sender: address.address },
        { stage: 'mail', verb: 'MAIL', arg: address.address },
        undefined,
        warnHook,
      ).then(verdictTo(cb));
    },
    onRcptTo(address: SMTPServerAddress, session, cb) {
      const unknownRcpt = unknownParam(address, RCPT_PARAMS);
      if (unknownRcpt) return cb(smtpError(555, '5.5.4', `Unsupported RCPT parameter ${unknownRcpt}`));
      const c = checkAddress(postmaster(address.address, cfg.hostname));
      if (!c.ok) return cb(smtpError(553, '5.1.3', `Bad recipient address: ${c.reason}`));
      const f = facts(session);
      const here = isLocalAddress(cfg, c.address);
      const relayed =
        here || mayRelay({ peer: session.remoteAddress, authenticated: !!session.user, localNets: cfg.local_nets });
      // a local recipient must exist (a user or an alias): an unknown one is refused in the dialogue; one
      // the relay policy refuses may still be let through by a relay hook (relay domains, a backup MX)
      (here ? checkRecipientHere(cfg, c.address) : Promise.resolve(undefined))
        .then(async (refused) => {
          if (refused) return cb(smtpError(refused.code, refused.enhanced, refused.text));
          if (!relayed) {
            const input = { stage: 'relay' as const, verb: 'RCPT', arg: address.address };
            const r = await runStage(hooks.relay, f, input, undefined, warnHook);
            if (r.action === 'continue' || r.action === 'discard')
              return cb(smtpError(554, '5.7.1', `Relay access denied for <${address.address}>`));
            if (r.action !== 'accept') return verdictTo(cb)(r);
          }
          const note = notes.get(session)!;
          const user = here && deps.dialogue ? ((await dialogueUser(cfg, c.address)) ?? '') : '';
          let policy: string | undefined;
          const input = { stage: 'rcpt' as const, verb: 'RCPT', arg: address.address };
          const v = await runStage(hooks.rcpt, f, input, undefined, warnHook, (ok) => {
            if (ok.policy !== undefined) policy = ok.policy;
          });
          if (v.action !== 'continue' && v.action !== 'accept' && v.action !== 'discard') return verdictTo(cb)(v);
          // a recipient with a verdict of its own (delivered in the dialogue, or of another policy class
          // than the first) comes in a transaction of its own (RFC 5321 4.5.3.1.10)
          if (note.rcptOk > 0 && (user !== note.dialogue || policy !== note.policy))
            return cb(
              smtpError(452, '4.5.3', `Too many recipients: send <${address.address}> in a transaction of its own`),
            );
          note.rcptOk++;
          note.dialogue = user;
          note.policy = policy;
          cb();
        })
        .catch((err: Error) => cb(smtpError(451, '4.3.0', `Recipient not checked: ${err.message}`)));
    },
    onData(stream, session, cb) {
      const f = facts(session);
      const local = localUsers.get(session.id);
      const door: Door = session.transmissionType?.includes('LMTP') ? 'lmtp' : local ? 'sendmail-bs' : 'smtp';
      // smtp-server merges a repeated RCPT into one envelope entry, but LMTP owes a reply for each 250
      const lmtpReplies = Math.max(notes.get(session)?.rcptOk ?? 0, session.envelope.rcptTo.length);
      const user = notes.get(session)?.dialogue;
      const step = user ? dialogueStep(cfg, deps, user, session.id) : undefined;
      const endHooks = hooks.data_end;
      // the data_end hooks first (they may refuse it or change it), then a delivery in the dialogue
      let discarded: string | undefined;
      const beforeCommit =
        endHooks?.length || step
          ? async (env: Envelope, held: HeldMessage): Promise<boolean | 'hold'> => {
              const end = endHooks?.length ? await dataEnd(cfg, endHooks, f, env, held, warnHook) : {};
              if (end.discard) {
                discarded = end.discard;
                return false;
              }
              if (end.hold) {
                deps.log.log('info', `${env.id} held: ${end.hold}`, { session: session.id });
                return 'hold';
              }
              return step ? step.beforeCommit(env, held) : true;
            }
          : undefined;
      const p = receiveData(cfg, deps, stream, session, f, door, local, beforeCommit).then(
        (env) => {
          if (discarded) {
            // the client is told what it would be told of any message: it has no say in a discard
            deps.log.log('info', `${env.id} discarded: ${discarded}`, { session: session.id, from: `<${env.sender}>` });
            const text = `2.0.0 Ok: queued as ${env.id}`;
            return door === 'lmtp'
              ? cb(
                  null,
                  Array.from({ length: lmtpReplies }, () => text),
                )
              : cb(null, text);
          }
          const verdict = step?.verdict();
          if (verdict) {
            const reply = dialogueReply(verdict, env.id);
            if (door === 'lmtp') return cb(null, Array.from({ length: lmtpReplies }, () => reply) as string[]);
            return typeof reply === 'string' ? cb(null, reply) : cb(reply);
          }
          const text = `2.0.0 Ok: queued as ${env.id}`;
          if (door === 'lmtp')
            cb(
              null,
              Array.from({ length: lmtpReplies }, () => text),
            );
          else cb(null, text);
          // the reply first: the message is committed, and what follows (the log line, the queue's count,
          // the next run's start) took some 80 µs of the "." -> 250 time
          deps.onMessage?.(env);
        },
        (err) => {
          if (!(err instanceof FerryError) || err.code !== 'data') {
            deps.log.log('error', 'message not stored', {
              session: session.id,
              peer: session.remoteAddress,
              error: (err as Error).message,
            });
          } else {
            deps.log.log('warn', 'message refused', {
              session: session.id,
              peer: session.remoteAddress,
              reason: (err as Error).message,
            });
          }
          if ((err as Error).message === CLIENT_GONE) cutCount++;
          if (door === 'lmtp')
            cb(
              null,
              Array.from({ length: lmtpReplies }, () => intakeReply(err)),
            );
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
function disabledFor(
  cfg: Config,
  session: SMTPServerSession,
  users: Map<string, string> | null,
  local: boolean,
): string[] {
  const off = ['WIZ', 'SHELL', 'KILL', 'XCLIENT', 'XFORWARD'];
  if (!cfg.tls.cert || local) off.push('STARTTLS');
  if (authDisabled(cfg, session, users)) off.push('AUTH');
  return off;
}

/** AUTH is offered only with a users file, and only over TLS or on loopback (on a submission listener,
 * only over TLS). */
function authDisabled(cfg: Config, session: SMTPServerSession, users: Map<string, string> | null): boolean {
  const clear = !session.secure && (isSubmission(session) || !isLoopback(session.remoteAddress));
  return (!(users && cfg.auth.users_file) && !cfg.auth.check_command.length) || clear;
}

/** The session came to a submission listener (its connection marks it). */
export function isSubmission(session: SMTPServerSession): boolean {
  return !!(session as unknown as { submission?: string }).submission;
}
