/**
 * A fault-injecting SMTP/LMTP server for transport tests: it speaks just enough of the protocol
 * (greeting, EHLO/LHLO, STARTTLS, AUTH PLAIN/LOGIN/CRAM-MD5/XOAUTH2, MAIL, RCPT, DATA, RSET, NOOP, QUIT)
 * and lets a test decide, command by command, to answer differently, to stall (never answer) or to drop
 * the connection. It records every connection's commands and every message it accepted.
 *
 * Listens on 127.0.0.1, ::1 or a unix socket only. Every server is closed by closeAll().
 */
import crypto, { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { run, tempDir } from '../helpers.js';

/** What a fault hook may answer: a reply line (or lines), or one of the faults. */
export type Answer = string | 'stall' | 'drop' | undefined;

/** The step a hook is asked about; `arg` is the command's argument (the address for MAIL and RCPT). */
export type Step =
  | 'greeting'
  | 'ehlo'
  | 'starttls'
  | 'mail'
  | 'rcpt'
  | 'data'
  | 'body'
  | 'dot'
  | 'rset'
  | 'auth'
  | 'lmtp-rcpt';

/** One connection as the server saw it. */
export interface SeenConnection {
  commands: string[];
  secure: boolean;
  /** The subject CN of the client's certificate, when it presented one. */
  clientCert?: string;
}

/** A message the server accepted. */
export interface Received {
  from: string;
  to: string[];
  data: string;
  connection: number;
}

/** How the server behaves. */
export interface FaultOptions {
  /** Listen here: '127.0.0.1' (default), '::1', or an absolute socket path. */
  listen?: string;
  port?: number;
  lmtp?: boolean;
  /** Extensions announced besides STARTTLS and AUTH (default PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES). */
  extensions?: string[];
  /** Offer STARTTLS with this certificate (or speak TLS from the first byte with implicit); with
   * requestCert, ask the client for a certificate and record it (not checked). */
  tls?: { key: string; cert: string; implicit?: boolean; requestCert?: boolean };
  /** Offer AUTH with these mechanisms and accept exactly this user and secret. */
  auth?: { mechanisms: string[]; user: string; secret: string; failText?: string };
  /** Decide a step differently; return undefined for the normal answer. */
  hook?: (step: Step, arg: string, conn: number) => Answer;
}

/** A running fault server. */
export interface FaultServer {
  port: number;
  /** The socket path when listening on one. */
  path?: string;
  connections: SeenConnection[];
  received: Received[];
  /** Ends every open connection from the server's side. */
  dropAll(): void;
  close(): Promise<void>;
}

const servers: net.Server[] = [];

/** Closes every server these helpers started. */
export async function closeAll(): Promise<void> {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))));
}

/** A self-signed certificate for a name, made with openssl, and its SHA-256 fingerprint. */
export async function selfSigned(
  name = 'mx.test.example',
  withIp = true,
): Promise<{ key: string; keyFile: string; cert: string; certFile: string; fingerprint: string }> {
  const dir = tempDir();
  const key = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  const r = await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-addext',
    `subjectAltName=DNS:${name}${withIp ? ',IP:127.0.0.1' : ''}`,
    '-days',
    '2',
    '-keyout',
    key,
    '-out',
    certFile,
  ]);
  if (r.code !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  const cert = fs.readFileSync(certFile, 'utf8');
  const fingerprint = new crypto.X509Certificate(cert).fingerprint256;
  fs.chmodSync(key, 0o600);
  return { key: fs.readFileSync(key, 'utf8'), keyFile: key, cert, certFile, fingerprint };
}
/** Starts a fault server. */
export async function faultServer(opts: FaultOptions = {}): Promise<FaultServer> {
  const live = new Set<net.Socket>();
  const state: FaultServer = {
    port: 0,
    connections: [],
    received: [],
    dropAll: () => {
      for (const s of live) s.destroy();
    },
    close: async () => undefined,
  };
  const handle = (sock: net.Socket): void => {
    live.add(sock);
    sock.once('close', () => live.delete(sock));
    new Session(sock, opts, state).start();
  };
  const server = opts.tls?.implicit
    ? tls.createServer({ key: opts.tls.key, cert: opts.tls.cert }, handle)
    : net.createServer(handle);
  servers.push(server);
  const where = opts.listen ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (where.startsWith('/')) server.listen(where, () => resolve());
    else server.listen(opts.port ?? 0, where, () => resolve());
  });
  if (where.startsWith('/')) state.path = where;
  else state.port = (server.address() as net.AddressInfo).port;
  state.close = () => new Promise<void>((r) => server.close(() => r()));
  return state;
}

/** One connection: a line reader with a small state machine. */
class Session {
  private buf = '';
  private inData = false;
  private data = '';
  private from = '';
  private to: string[] = [];
  private pendingAuth: ((line: string) => void) | undefined;
  private readonly id: number;
  private readonly seen: SeenConnection;
  private stalled = false;

  constructor(
    private sock: net.Socket,
    private readonly opts: FaultOptions,
    private readonly state: FaultServer,
  ) {
    this.id = state.connections.length;
    this.seen = { commands: [], secure: sock instanceof tls.TLSSocket };
    state.connections.push(this.seen);
  }

  start(): void {
    this.listen(this.sock);
    this.answer(this.ask('greeting', ''), '220 fault.example ESMTP');
  }

  private listen(sock: net.Socket): void {
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
  }

  private ask(step: Step, arg: string): Answer {
    return this.opts.hook?.(step, arg, this.id);
  }

  /** Sends the hook's answer or the normal one; a fault stalls or drops. True when something was sent. */
  private answer(a: Answer, normal: string): boolean {
    if (a === 'stall') {
      this.stalled = true;
      return false;
    }
    if (a === 'drop') {
      this.sock.destroy();
      return false;
    }
    this.sock.write(`${a ?? normal}\r\n`);
    return true;
  }

  private onData(text: string): void {
    if (this.stalled) return;
    this.buf += text;
    for (let guard = 0; guard < 10_000 && !this.stalled && !this.sock.destroyed; guard++) {
      if (this.inData) {
        if (!this.takeData()) return;
        continue;
      }
      const nl = this.buf.indexOf('\r\n');
      if (nl < 0) return;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      this.command(line);
    }
  }

  /** Collects DATA up to the final dot; false when more is needed. */
  private takeData(): boolean {
    const end = this.buf.indexOf('\r\n.\r\n');
    if (end < 0) {
      if (this.ask('body', '') === 'drop') {
        // stop reading, so that the client cannot hand over the rest, then go away
        this.sock.pause();
        this.stalled = true;
        setTimeout(() => this.sock.destroy(), 200);
      }
      return false;
    }
    this.data = this.buf.slice(0, end + 2).replace(/^\./gm, '');
    this.buf = this.buf.slice(end + 5);
    this.inData = false;
    this.finishMessage();
    return true;
  }

  private finishMessage(): void {
    const a = this.ask('dot', this.data);
    if (a === undefined)
      this.state.received.push({
        from: this.from === '<>' ? '' : this.from,
        to: this.to,
        data: this.data,
        connection: this.id,
      });
    if (this.opts.lmtp && a === undefined) {
      // LMTP: one reply per recipient, each of which a hook may decide ('lmtp-rcpt')
      this.sock.write(
        `${this.to.map((t) => this.ask('lmtp-rcpt', t) ?? `250 2.0.0 <${t}> delivered`).join('\r\n')}\r\n`,
      );
    } else this.answer(a, '250 2.0.0 queued as F1');
    this.from = '';
    this.to = [];
  }

  private command(line: string): void {
    this.seen.commands.push(
      /^AUTH /i.test(line) ? line.split(' ').slice(0, 2).join(' ') : this.pendingAuth ? '(auth data)' : line,
    );
    if (this.pendingAuth) {
      const f = this.pendingAuth;
      this.pendingAuth = undefined;
      return f(line);
    }
    const verb = line.split(' ')[0]!.toUpperCase();
    const arg = /<([^>]*)>/.exec(line)?.[1] ?? line.slice(verb.length + 1);
    switch (verb) {
      case 'EHLO':
      case 'LHLO':
        return void this.answer(this.ask('ehlo', arg), this.ehlo());
      case 'STARTTLS':
        return this.startTls();
      case 'AUTH':
        return this.auth(line.split(' ').slice(1));
      case 'MAIL': {
        // as Postfix: a transaction left open (all recipients refused, DATA refused) needs RSET first
        if (this.from) return void this.sock.write('503 5.5.1 Error: nested MAIL command\r\n');
        const a = this.ask('mail', arg);
        this.from = a === undefined ? arg || '<>' : '';
        this.to = [];
        return void this.answer(a, '250 2.1.0 sender ok');
      }
      case 'RCPT': {
        if (!this.from) return void this.sock.write('503 5.5.1 MAIL first\r\n');
        const a = this.ask('rcpt', arg);
        if (a === undefined) this.to.push(arg);
        return void this.answer(a, '250 2.1.5 recipient ok');
      }
      case 'DATA': {
        const a = this.ask('data', '');
        if (a === undefined && (!this.from || this.to.length === 0))
          return void this.sock.write('554 5.5.1 no valid recipients\r\n');
        if (this.answer(a, '354 go ahead') && a === undefined) this.inData = true;
        return;
      }
      case 'RSET':
        this.from = '';
        this.to = [];
        return void this.answer(this.ask('rset', ''), '250 2.0.0 reset');
      case 'QUIT':
        return void this.sock.end('221 2.0.0 bye\r\n');
      default:
        return void this.sock.write('250 2.0.0 ok\r\n');
    }
  }

  private ehlo(): string {
    const ext = [...(this.opts.extensions ?? ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES'])];
    if (this.opts.tls && !this.seen.secure) ext.push('STARTTLS');
    if (this.opts.auth) ext.push(`AUTH ${this.opts.auth.mechanisms.join(' ')}`);
    return ['fault.example', ...ext].map((l, i, a) => `250${i === a.length - 1 ? ' ' : '-'}${l}`).join('\r\n');
  }

  private startTls(): void {
    if (!this.opts.tls || this.seen.secure) return void this.sock.write('454 4.7.0 TLS not available\r\n');
    this.sock.write('220 2.0.0 ready for TLS\r\n');
    if (this.ask('starttls', '') === 'drop') return void this.sock.end(); // a handshake that never happens
    this.sock.removeAllListeners('data');
    const secure = new tls.TLSSocket(this.sock, {
      isServer: true,
      key: this.opts.tls.key,
      cert: this.opts.tls.cert,
      requestCert: !!this.opts.tls.requestCert,
      rejectUnauthorized: false,
    });
    secure.once('secure', () => {
      const peer = secure.getPeerCertificate();
      if (peer?.subject) this.seen.clientCert = String(peer.subject.CN);
    });
    this.sock = secure;
    this.seen.secure = true;
    this.listen(secure);
  }

  /** AUTH with the mechanisms configured; a refusal may carry failText (to test that echoes are cut). */
  private auth(words: string[]): void {
    const a = this.opts.auth;
    const mech = (words[0] ?? '').toUpperCase();
    if (!a?.mechanisms.includes(mech)) return void this.sock.write('504 5.5.4 mechanism not offered\r\n');
    const verdict = (ok: boolean): void => {
      const forced = this.ask('auth', mech);
      if (forced !== undefined) return void this.answer(forced, '');
      this.sock.write(
        ok ? '235 2.7.0 authenticated\r\n' : `535 5.7.8 authentication failed${a.failText ? ` ${a.failText}` : ''}\r\n`,
      );
    };
    const b64 = (s: string): string => Buffer.from(s, 'base64').toString('utf8');
    const then = (prompt: string, f: (line: string) => void): void => {
      this.pendingAuth = f;
      this.sock.write(`334 ${prompt}\r\n`);
    };
    if (mech === 'PLAIN') {
      const check = (x: string): void => verdict(b64(x) === `\0${a.user}\0${a.secret}`);
      return words[1] ? check(words[1]) : then('', check);
    }
    if (mech === 'LOGIN')
      return then('VXNlcm5hbWU6', (u) =>
        then('UGFzc3dvcmQ6', (p) => verdict(b64(u) === a.user && b64(p) === a.secret)),
      );
    if (mech === 'CRAM-MD5') {
      const challenge = `<${Date.now()}.${this.id}@fault.example>`;
      const want = `${a.user} ${createHmac('md5', a.secret).update(challenge).digest('hex')}`;
      return then(Buffer.from(challenge).toString('base64'), (x) => verdict(b64(x) === want));
    }
    // XOAUTH2: a refusal is a 334 with a JSON error, answered by an empty line, then 535
    const ok = b64(words[1] ?? '') === `user=${a.user}\x01auth=Bearer ${a.secret}\x01\x01`;
    if (ok) return verdict(true);
    then(Buffer.from('{"status":"401"}').toString('base64'), () => verdict(false));
  }
}
