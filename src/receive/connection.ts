/**
 * ferrymail's subclasses of smtp-server's SMTPServer and SMTPConnection (pinned to 3.21.6).
 *
 * They add what smtp-server has no option for: no greeting delay for trusted clients (the early-talker
 * wait stays for the others), the helo / other / unknown hook stages wrapped around the built-in command
 * handlers, replies that carry our own enhanced status codes, an error budget that ends abusive sessions
 * with 421 4.7.0, a time limit on whole sessions and a minimum data rate in DATA for clients that are not
 * trusted (421 4.4.2; a message being received may finish first, one received in part is abandoned), and
 * a graceful shutdown that lets transactions in flight finish. Relies on internals of that exact version
 * (init, _setListeners, connectionReady, _onCommand, _whenWritable, _isSupported, _resetSession,
 * _onClose, handler_DATA, _nextHandler, _upgrading, _ready, _closing, _closed, _dataStream, _parser and
 * its _dataMode and dataBytes, send, close, connect, connections, _onClientConnect, _closeTimeout);
 * test/unit/stages.test.ts and the integration tests exercise each path so that an upgrade that changes
 * them fails loudly.
 */
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { isUtf8 } from 'node:buffer';
import type { Socket } from 'node:net';
import { dataDeadline } from './policy.js';
import {
  replyText,
  runStage,
  verdictReply,
  type HookWarn,
  type Hooks,
  type SessionFacts,
  type Stage,
} from './stages.js';

/** What the connection needs from the door. */
export interface ConnectionPolicy {
  isTrusted(ip: string): boolean;
  /** Sessions that may send input after DATA before the 354 (a local program's sendmail -bs). */
  mayPipelineData(conn: FerryConnection): boolean;
  earlyTalkerDelay: number;
  errorLimit: number;
  hooks: Hooks;
  /** A submission listener: STARTTLS first (starttls, port 587) or TLS from the start (tls, port 465). */
  submission?: 'starttls' | 'tls';
  /** Where a hook's failure is logged. */
  warnHook?: HookWarn;
  facts(conn: FerryConnection): SessionFacts;
  /** The session is ending: stop counting it against the connection limits. */
  release(conn: FerryConnection): void;
  /** For clients that are not trusted: how long a session may last in all (ms; 0: no limit). */
  sessionTimeMs: number;
  /** For clients that are not trusted: bytes/s to keep up in DATA (0: no minimum) and where the DATA
   * deadline starts (ms, the idle timeout). */
  minDataRate: number;
  dataTimeoutMs: number;
  /** A limit is ending the session (for the log). */
  limitReached(conn: FerryConnection, limit: SessionLimit, bytes?: number): void;
}

/** The limits that end a session of a client that is not trusted. */
export type SessionLimit = 'session-time' | 'data-rate';

const OTHER_VERBS = new Set(['RSET', 'NOOP', 'VRFY', 'HELP', 'STARTTLS', 'AUTH', 'QUIT', 'EXPN']);
const HELO_VERBS = new Set(['HELO', 'EHLO', 'LHLO']);
const HTTP_REQUEST = /^(OPTIONS|GET|HEAD|POST|PUT|DELETE|TRACE|CONNECT) \/.* HTTP\/\d\.\d$/i;
const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3}(?: |$)/;
/** A DATA command line followed by more input in the same read. */
const DATA_THEN_MORE = /(?:^|\n)DATA[ \t]*\r?\n[\s\S]/i;

/** A session with ferrymail's stage hooks and limits. */
export class FerryConnection extends SMTPConnection {
  errors = 0;
  /** Input arrived after a DATA command in the same read, before the 354 could be sent. */
  private dataRaced = false;
  /** Bytes of the read the parser is working through (it counts in its writableLength until done). */
  private reading = 0;
  /** The session has outlived limits.session_time; it ends once no message is being received. */
  private expired = false;
  private sessionTimer: NodeJS.Timeout | undefined;
  private rateTimer: NodeJS.Timeout | undefined;

  private get policy(): ConnectionPolicy {
    return (this._server as FerryServer).policy;
  }

  /** Greets trusted clients at once; others after the early-talker delay, and starts their session clock. */
  override init(): void {
    // the handlers tell a submission session by this mark on its session object (kept for its life)
    (this.session as unknown as { submission?: string }).submission = this.policy.submission;
    const trusted = this.policy.isTrusted(this.remoteAddress);
    if (!trusted && this.policy.sessionTimeMs > 0) {
      this.sessionTimer = setTimeout(() => this.sessionOver(), this.policy.sessionTimeMs);
      this.sessionTimer.unref();
    }
    this._setListeners(() => {
      const delay = trusted ? 0 : this.policy.earlyTalkerDelay;
      if (delay <= 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  }

  /**
   * limits.session_time has passed: ends the session now, or after the transaction in DATA. A message
   * still arriving is cut only when there is no minimum data rate to bound it.
   */
  private sessionOver(): void {
    this.sessionTimer = undefined;
    this.expired = true;
    if (this._closing || this._closed) return;
    const receiving = !!this._parser && this._parser._dataMode;
    if (this._dataStream && !(receiving && this.policy.minDataRate <= 0)) return; // _resetSession ends it after the reply
    this.endForLimit('session-time', `4.4.2 ${this.name} Session time limit exceeded, closing connection`);
  }

  /** Answers 421 and closes; a message received only in part is abandoned at once (the intake cleans up). */
  private endForLimit(limit: SessionLimit, text: string): void {
    const parser = this._parser;
    const partial = parser && parser._dataMode && this._dataStream ? this._dataStream : null;
    this.policy.limitReached(this, limit, parser ? parser.dataBytes : undefined);
    this.send(421, text);
    if (partial && !partial.destroyed) partial.destroy();
  }

  /** Also the end of every transaction: a session past its time ends right after the transaction's reply. */
  override _resetSession(): void {
    super._resetSession();
    if (this.expired && !this._dataStream && !this._closing && !this._closed) {
      this.endForLimit('session-time', `4.4.2 ${this.name} Session time limit exceeded, closing connection`);
    }
  }

  /** Starts DATA; for a client that is not trusted, also the watch on its data rate. */
  override handler_DATA(command: Buffer, callback: () => void): void {
    super.handler_DATA(command, callback);
    if (this._dataStream && this.policy.minDataRate > 0 && !this.policy.isTrusted(this.remoteAddress))
      this.watchDataRate(this._dataStream);
  }

  /**
   * Checks the DATA deadline (policy.dataDeadline) until the message is in: the client gets 421 when it
   * passes. While the intake is the slow side (the message stream is full), the client is not blamed.
   */
  private watchDataRate(stream: Exclude<FerryConnection['_dataStream'], false | null>): void {
    const start = Date.now();
    const check = (): void => {
      this.rateTimer = undefined;
      const parser = this._parser;
      if (this._dataStream !== stream || this._closing || this._closed || !parser || !parser._dataMode) return;
      const wait =
        dataDeadline(start, parser.dataBytes, this.policy.dataTimeoutMs, this.policy.minDataRate) - Date.now();
      if (wait > 0 || stream.writableNeedDrain) return this.armRateCheck(check, Math.max(wait, 1000));
      this.endForLimit('data-rate', `4.4.2 ${this.name} Data rate too low, closing connection`);
    };
    this.armRateCheck(check, this.policy.dataTimeoutMs);
  }

  private armRateCheck(check: () => void, ms: number): void {
    this.rateTimer = setTimeout(check, ms);
    this.rateTimer.unref();
  }

  /** Stops the session and data-rate clocks. */
  private stopClocks(): void {
    clearTimeout(this.sessionTimer);
    clearTimeout(this.rateTimer);
    this.sessionTimer = this.rateTimer = undefined;
  }

  /** The socket has closed (either side): no clock may keep the connection alive. */
  override _onClose(): void {
    this.stopClocks();
    super._onClose();
  }

  /** Sends a reply; text that starts with an enhanced code is sent as is; counts errors. */
  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    if (typeof data === 'string' && ENHANCED.test(data) && context !== false) context = false;
    super.send(code, data, context);
    if (code >= 400 && code !== 421 && !this.exempt(code, data, context)) this.countError();
  }

  /** Replies that are not the client's fault do not count towards the error budget. */
  private exempt(code: number, data: unknown, context: unknown): boolean {
    if (context === 'TOO_MANY_RECIPIENTS') return true;
    return typeof data === 'string' && /^4\.(3\.[0-9]|4\.5|7\.0 Too many connections)/.test(data) && code < 500;
  }

  private countError(): void {
    this.errors++;
    if (this.errors >= this.policy.errorLimit && !this._closing) {
      super.send(421, `4.7.0 ${this.name} Too many errors, closing connection`, false);
    }
  }

  /** The parser, watched for input that runs ahead of a DATA command (see dataRacedAhead). */
  override _createParser(): ReturnType<SMTPConnection['_createParser']> {
    const parser = super._createParser();
    const write = parser._write.bind(parser);
    parser._write = (chunk: Buffer, enc: BufferEncoding, next: (err?: Error | null) => void): void => {
      if (!parser._dataMode && DATA_THEN_MORE.test(parser._remainder + chunk.toString('binary'))) this.dataRaced = true;
      this.reading = chunk.length;
      write(chunk, enc, (err?: Error | null) => {
        this.reading = 0;
        next(err);
      });
    };
    return parser;
  }

  /**
   * True when input followed DATA before its 354 was sent: in the same read, or read since (the parser
   * queues it). As Postfix's smtpd_forbid_unauth_pipelining, this is refused on sessions that have not
   * authenticated: such input is how SMTP smuggling hides a second message from this hop.
   */
  private dataRacedAhead(): boolean {
    const queued = this._parser ? this._parser.writableLength - this.reading : 0;
    const raced = this.dataRaced || queued > 0;
    this.dataRaced = false;
    return raced && !this.session.user && !this.policy.mayPipelineData(this);
  }

  /** Refuses what no handler may see: NUL, input that is not UTF-8; null when the line may go on. */
  private malformed(command: Buffer): string | null {
    if (this._nextHandler || !this._ready || this._upgrading) return null;
    const verb = command.toString('latin1').split(' ')[0]!.toUpperCase();
    if (command.includes(0)) return '500 5.5.2 Error: NUL character in command';
    if (isUtf8(command)) return null;
    if (verb === 'MAIL') return '553 5.1.7 Bad sender address: not valid UTF-8';
    if (verb === 'RCPT') return '553 5.1.3 Bad recipient address: not valid UTF-8';
    return '500 5.5.2 Error: command is not valid UTF-8';
  }

  /** Runs the helo / other / unknown stage before the built-in handler of a command. */
  override _onCommand(command: Buffer, callback?: () => void): void {
    const next = (): void => void setImmediate(() => this._whenWritable(callback ?? (() => false)));
    const bad = this.malformed(command);
    if (bad) {
      this.send(Number(bad.slice(0, 3)), bad.slice(4));
      return next();
    }
    const stage = this.stageOf(command);
    const hooks = stage ? this.policy.hooks[stage] : undefined;
    // unknown commands are answered here, so that only our error budget decides when to hang up
    const builtIn =
      stage === 'data' ? () => this.dataCommand(command, next, callback) : () => super._onCommand(command, callback);
    const proceed =
      stage === 'unknown' ? () => (this.send(500, '5.5.2 Error: command not recognized'), next()) : builtIn;
    if (!stage || !hooks?.length) return proceed();
    const line = command.toString();
    const verb = line.split(' ')[0]!.toUpperCase();
    // a hook never sees a credential: of AUTH only the mechanism
    const arg =
      verb === 'AUTH'
        ? (line.slice(verb.length).trim().split(/\s+/)[0] ?? '').toUpperCase()
        : line.slice(verb.length).trim();
    runStage(hooks, this.policy.facts(this), { stage, verb, arg }, undefined, this.policy.warnHook).then((v) => {
      if (v.action === 'continue' || v.action === 'accept' || v.action === 'discard') return proceed();
      const reply = verdictReply(v);
      this.send(reply.code, replyText(reply));
      if (v.action === 'disconnect') this.close();
      next();
    });
  }

  /** DATA: refused when input raced ahead of its 354 on a session that may not pipeline it. */
  private dataCommand(command: Buffer, next: () => void, callback?: () => void): void {
    if (!this.dataRacedAhead()) return super._onCommand(command, callback);
    super.send(554, '5.5.0 Error: SMTP protocol synchronization', false);
    this.close();
    next();
  }

  /** Which hook stage a command line belongs to, or null for none (or a mid-command state). */
  private stageOf(command: Buffer): Stage | null {
    if (this._nextHandler || this._upgrading || !this._ready || this._closing || this._server._closeTimeout)
      return null;
    const line = command.toString();
    if (HTTP_REQUEST.test(line)) return null; // smtp-server answers these with 421
    const verb = line.split(' ')[0]!.toUpperCase();
    if (HELO_VERBS.has(verb)) return 'helo';
    if (verb === 'MAIL' || verb === 'RCPT') return null; // onMailFrom / onRcptTo
    if (verb === 'DATA') return 'data';
    if (OTHER_VERBS.has(verb)) return 'other';
    return this._isSupported(verb) ? null : 'unknown';
  }

  /** Ends the session; it stops counting against the limits at once, not when the client's FIN arrives. */
  override close(): void {
    if (!this._closing) this.policy.release(this);
    this.stopClocks();
    super.close();
  }

  /** True while a message is being received or committed. */
  get inTransaction(): boolean {
    return !!this._dataStream;
  }
}

/** An SMTPServer that creates FerryConnections and shuts down gracefully. */
export class FerryServer extends SMTPServer {
  constructor(
    options: SMTPServerOptions,
    public policy: ConnectionPolicy,
  ) {
    super(options);
  }

  /**
   * smtp-server makes a TLS context (its built-in certificate when none is given) at construction, for
   * every server. One that offers no TLS (no STARTTLS, not implicit TLS) never uses it: it gets none,
   * and node:tls is not loaded for it (src/receive/smtp-server-tls.ts). Called by smtp-server's constructor and by
   * reconfigure(), each time with the options as they then stand.
   */
  override updateSecureContext(options?: Parameters<SMTPServer['updateSecureContext']>[0]): void {
    // STARTTLS counts as offered unless disabled: smtp-server's handler answers it even when hidden
    const o = { ...this.options, ...options } as SMTPServerOptions;
    const starttls = !(o.disabledCommands ?? []).some((c) => c.toUpperCase() === 'STARTTLS');
    if (o.secure || starttls) return super.updateSecureContext(options);
    Object.assign(this.options, options);
    this.secureContext = new Map();
  }

  /** Takes new options and policy for the sessions to come (a reload of the configuration); a new
   * certificate replaces the TLS context. Sessions under way keep what they began with. */
  reconfigure(options: SMTPServerOptions, policy: ConnectionPolicy): void {
    const { key, cert, ...rest } = options as SMTPServerOptions & { key?: Buffer; cert?: Buffer };
    Object.assign(this.options, rest);
    for (const h of ['onConnect', 'onSecure', 'onAuth', 'onMailFrom', 'onRcptTo', 'onData', 'onClose'] as const) {
      if (typeof rest[h] === 'function') (this as unknown as Record<string, unknown>)[h] = rest[h];
    }
    if (key && cert) this.updateSecureContext({ key, cert });
    this.policy = policy;
  }

  /** Serves one socket (or a duplex such as stdin/stdout for sendmail -bs). */
  override connect(socket: Socket, socketOptions?: Record<string, unknown>): FerryConnection {
    const connection = new FerryConnection(this, socket, socketOptions);
    this.connections.add(connection);
    connection.on('error', (err: Error) => this._onError(err));
    connection.on('connect', (data: unknown) => this._onClientConnect(data as never));
    connection.init();
    return connection;
  }

  /** Stops listening; idle sessions get 421 now, sessions in DATA finish their message first. */
  shutdown(graceMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, graceMs + 1000);
      this.options.closeTimeout = graceMs;
      this.close(() => {
        clearTimeout(timer);
        resolve();
      });
      for (const c of this.connections as Set<FerryConnection>) {
        if (!c.inTransaction) c.send(421, `4.3.2 ${c.name} Service shutting down`);
      }
    });
  }
}
