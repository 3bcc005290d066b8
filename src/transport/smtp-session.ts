/**
 * One SMTP or LMTP session with one server, built on nodemailer's SMTPConnection: send messages over it
 * one after another with RSET in between, and close it. smtp-open.ts opens it; smtp.ts decides which
 * session carries which message.
 *
 * Trusts its settings (validated route files). The server's replies are untrusted text: only one line of
 * each is kept, without control characters, and every form of the secret this session sent is cut out
 * of them, so a server that echoes the password cannot put it into a result, a log or an error.
 *
 * Never throws: sending resolves with one result per recipient:
 * - MAIL refused applies to all; RCPT refusals apply to their recipient; a refusal after DATA applies to
 *   every accepted recipient (per recipient with LMTP);
 * - a connection lost or silent before the whole message was handed over is tempfail; after it (the
 *   final dot may have arrived) it is "uncertain", so that nobody silently sends it twice;
 * - a message stream that refuses the message for its content (contentRefusal: a NUL in the spool) ends
 *   the session before the final dot and fails every recipient for good with that reply.
 */
import type net from 'node:net';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';
import { contentRefusal } from '../errors.js';
import { asciiAddress } from './mx.js';
import {
  cutConnection,
  oneLine,
  outcomeOf,
  settleOn,
  socketOf,
  targetName,
  watchProgress,
  why,
  XOAUTH2_HANDLER,
  type AuthSettings,
  type ConnInternals,
  type SessionSettings,
  type SmtpError,
  type Target,
} from './smtp-wire.js';
import type { DeliveryRequest, RecipientResult } from './types.js';

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
  /** Why this session was cut by us (no progress), when it was. */
  private cutWhy: string | undefined;
  /** When the session was cut: part of the message had not gone out yet (so it cannot have arrived). */
  private cutBeforeEnd = false;
  /** The LMTP server's reply for each recipient of the transaction under way. */
  private lmtpReplies = new Map<string, string>();

  constructor(
    private readonly conn: SMTPConnection,
    readonly target: Target,
    private readonly s: Pick<SessionSettings, 'timeouts' | 'tracker' | 'lmtp'>,
  ) {
    this.relay = targetName(target);
    conn.once('end', () => {
      this.gone = true;
      this.onGone?.();
    });
    if (s.lmtp) this.keepLmtpReplies();
  }

  /** nodemailer passes on only the last recipient's LMTP reply: keep each one (a pinned internal). */
  private keepLmtpReplies(): void {
    const c = this.internals();
    const act = c._actionLMTPStream?.bind(this.conn);
    if (!act) return;
    c._actionLMTPStream = (recipient, final, str, callback) => {
      this.lmtpReplies.set(recipient.toLowerCase(), str);
      return act(recipient, final, str, callback);
    };
  }

  /** Why the session was cut, by us or by the transport's abort(); undefined when it was not. */
  private cutReason(): string | undefined {
    return this.cutWhy ?? this.s.tracker?.why ?? undefined;
  }

  /** Cuts the session now, remembering whether part of the message was still on this side. */
  cut(why: string): void {
    this.cutWhy ??= why;
    this.cutBeforeEnd = this.unsentData();
    cutConnection(this.conn, why);
  }

  /** True while some of the message has not been handed to the kernel: its end cannot have arrived. */
  private unsentData(): boolean {
    const sock = socketOf(this.conn);
    return !!this.internals()._currentDataStream || (!!sock && sock.writableLength > 0);
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
    this.hidden.push(
      secret,
      b64(secret),
      b64(`\0${user}\0${secret}`),
      b64(`user=${user}\x01auth=Bearer ${secret}\x01\x01`),
    );
  }

  private socket(): net.Socket | undefined {
    return (this.conn as unknown as ConnInternals)._socket || undefined;
  }

  private internals(): ConnInternals {
    return this.conn as unknown as ConnInternals;
  }

  /** What the server said it offers, and whether the session is under TLS (for route test). */
  describe(): { tls: boolean; extensions: string[]; auth: string[] } {
    return { tls: !!this.conn.secure, extensions: this.extensions(), auth: this.internals()._supportedAuth ?? [] };
  }

  /** The TLS socket of the session, when it is under TLS. */
  tlsSocket(): import('node:tls').TLSSocket | undefined {
    const sock = socketOf(this.conn);
    return sock && 'getPeerCertificate' in sock ? (sock as import('node:tls').TLSSocket) : undefined;
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

  /** Logs in; resolves with an error reply (refused: the server said no to these credentials), or
   * undefined when logged in. */
  async login(
    auth: AuthSettings,
    timeoutMs: number,
    allowClear: boolean,
  ): Promise<{ reply: string; refused?: boolean } | string | undefined> {
    const offered = this.internals()._supportedAuth ?? [];
    if (!this.conn.secure && !allowClear)
      return `451 4.7.10 ${this.relay} did not offer STARTTLS; the password is not sent without TLS (tls: none allows it)`;
    const method = (
      auth.method ?? (['cram-md5', 'plain', 'login'] as const).find((m) => offered.includes(m.toUpperCase()))
    )?.toUpperCase();
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
      this.conn.login({ user: auth.user, pass: secret, method: method === 'XOAUTH2' ? XOAUTH2_HANDLER : method }, (e) =>
        done(e ? (e as SmtpError) : undefined),
      );
      lost((e) => done(e ?? Object.assign(new Error('connection lost'), { code: 'ECONNECTION' })));
    });
    if (!err) return undefined;
    const said = err.response ? `: ${this.clean(oneLine(err.response, ''))}` : ` (${err.code ?? 'error'})`;
    // 535 and the like: these credentials are wrong, and will be until someone changes them
    return {
      reply: `454 4.7.0 AUTH ${method} at ${this.relay} failed${said}`,
      refused: (err.responseCode ?? 0) >= 500,
    };
  }

  /**
   * Sends one message; one result per recipient (see the module header). While any of it is on its
   * way, a session that moves no bytes and gets no reply for the progress timeout is given up.
   */
  async send(req: DeliveryRequest): Promise<RecipientResult[]> {
    const stream = req.message(req.recipients.map((r) => r.address));
    let ended = false;
    const stop = watchProgress(this.conn, this.s.timeouts.progress, () => {
      // once the whole message is out, waiting for the server's verdict is the command timeout's job
      if (!ended || this.unsentData()) this.cut(`no progress for ${Math.round(this.s.timeouts.progress / 1000)} s`);
    });
    // the moment the connection fails, was any of the message still on this side?
    let notOut = false;
    const failing = (): void => {
      notOut = this.cutWhy ? this.cutBeforeEnd : this.unsentData();
    };
    this.conn.once('error', failing);
    stream.once('end', () => (ended = true));
    this.lmtpReplies.clear();
    const first = req.recipients[0];
    // domains leave in A-labels: only a UTF-8 local part needs SMTPUTF8
    const envelope = {
      from: asciiAddress(req.sender),
      to: req.recipients.map((r) => asciiAddress(r.address)),
      size: req.size,
      use8BitMime: req.body === '8BITMIME',
      dsn:
        req.ret || req.envid || first?.notify ? { ret: req.ret, envid: req.envid, notify: first?.notify } : undefined,
    };
    let onEnd = (): void => undefined;
    const outcome = await new Promise<{ err: SmtpError | null; info: unknown }>((resolve) => {
      this.conn.send(envelope as never, stream, (err, info) => resolve({ err: err as SmtpError | null, info }));
      // a connection closed under nodemailer forgets the send in flight: never wait for it then
      onEnd = () =>
        setImmediate(() =>
          resolve({ err: Object.assign(new Error('connection closed'), { code: 'ECONNECTION' }), info: undefined }),
        );
      this.conn.once('end', onEnd);
    });
    stop();
    this.conn.removeListener('error', failing);
    this.conn.removeListener('end', onEnd);
    const handedOver = ended && !notOut;
    if (outcome.err && !['EENVELOPE', 'EMESSAGE'].includes(outcome.err.code ?? '')) this.conn.close(); // not a reply: the session is spent
    // lost before any reply and before a byte of the message was read: the server closed the connection
    // (not a timeout, not a stream or API error), so the transaction never started on its side
    this.lostUnsent =
      !!outcome.err &&
      !outcome.err.responseCode &&
      !stream.readableDidRead &&
      ['ECONNECTION', 'ESOCKET'].includes(outcome.err.code ?? '');
    this.cleanAt =
      outcome.err || (outcome.info as { rejected?: unknown[] } | undefined)?.rejected?.length ? 0 : Date.now();
    return this.results(req, outcome.err, outcome.info, handedOver);
  }

  /** Maps what send() reported to one result per recipient. */
  private results(req: DeliveryRequest, err: SmtpError | null, info: unknown, handedOver: boolean): RecipientResult[] {
    // the message itself cannot be sent (nodemailer reports the stream's own error as ESTREAM)
    const refused = err?.code === 'ESTREAM' ? contentRefusal(err) : undefined;
    if (refused)
      return req.recipients.map((r) => ({
        address: r.address,
        outcome: 'permfail',
        reply: `${refused.code} ${refused.enhanced} ${refused.text}`,
      }));
    if (err?.command === 'MAIL FROM') {
      // pipelined RCPTs after a refused MAIL only say "need MAIL": the MAIL reply decides for all
      const reply = this.clean(oneLine(err.response, `${err.responseCode ?? 451}`));
      return req.recipients.map((r) => ({ address: r.address, outcome: outcomeOf(err.responseCode), reply }));
    }
    const rejected = new Map<string, SmtpError>();
    // a failure after DATA carries no list of the recipients refused earlier: the envelope has it
    const env = this.internals()._envelope;
    const earlier = env ? env.rejectedErrors : undefined;
    for (const e of err?.rejectedErrors ??
      (info as { rejectedErrors?: SmtpError[] } | undefined)?.rejectedErrors ??
      earlier ??
      []) {
      if (e.recipient) rejected.set(e.recipient.toLowerCase(), e);
    }
    return req.recipients.map((r): RecipientResult => {
      const rej = rejected.get(asciiAddress(r.address).toLowerCase());
      if (rej)
        return {
          address: r.address,
          outcome: outcomeOf(rej.responseCode),
          reply: this.clean(oneLine(rej.response, `${rej.responseCode ?? 450}`)),
        };
      const own = this.lmtpReplies.get(asciiAddress(r.address).toLowerCase());
      if (!err)
        return {
          address: r.address,
          outcome: 'ok',
          reply: this.clean(oneLine(own ?? (info as { response?: string }).response, '250 2.0.0 ok')),
        };
      if (err.responseCode)
        return {
          address: r.address,
          outcome: outcomeOf(err.responseCode),
          reply: this.clean(oneLine(err.response, `${err.responseCode}`)),
        };
      // no reply: lost before or after the whole message was handed over (its final dot written out)
      const cause = this.cutReason() ?? why(err);
      if (handedOver)
        return {
          address: r.address,
          outcome: 'uncertain',
          reply: `451 4.4.2 connection to ${this.relay} lost after the message was sent (${cause}); it may have been delivered`,
        };
      return {
        address: r.address,
        outcome: 'tempfail',
        reply: `451 4.4.2 connection to ${this.relay} lost during delivery (${cause})`,
      };
    });
  }
}
