/**
 * Test fixtures shared by the integration tests: a temporary configuration directory, the real daemon
 * started as a child process on a free loopback port, the sendmail and ferrymail commands run as programs,
 * and a small raw SMTP client for exact protocol checks.
 *
 * Every server listens on 127.0.0.1 / ::1 only. Every wait is bounded.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../src/config/load.js';
import { loadRoutes } from '../src/config/routes.js';
import { parseTrailer, TRAILER_BYTES } from '../src/spool/trailer.js';

/** The repository root (tests run from dist/test). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FERRYMAIL = path.join(ROOT, 'bin', 'ferrymail.js');
export const SENDMAIL = path.join(ROOT, 'bin', 'sendmail.js');

/** A fresh temporary directory, removed when the test process exits. */
export function tempDir(prefix = 'ferrymail-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Temporary directories of this test file, removed when its process exits. */
const made: string[] = [];
process.once('exit', () => {
  for (const d of made) {
    try {
      fs.rmSync(d, { recursive: true, force: true });
    } catch {
      /* a mount point still in use, or already gone */
    }
  }
});

/** Asks the kernel for a free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** A configuration directory with a ferrymail.yaml written from YAML text lines. */
export interface TestConfig {
  dir: string;
  configDir: string;
  spool: string;
  port: number;
}

/** Loads the route files of a configuration directory that must be refused; each problem as
 * "FILE: key@LINE: message" ("-" for no line). */
export function routeIssues(dir: string): string[] {
  try {
    loadRoutes(dir);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.issues.map((i) => `${i.key}@${i.line ?? '-'}: ${i.message}`);
  }
  assert.fail('the route files should have been refused');
}

/** Writes a route file into the configuration's routes/ folder (made when missing). */
export function writeRoute(cfg: TestConfig, file: string, lines: string[]): void {
  fs.mkdirSync(path.join(cfg.configDir, 'routes'), { recursive: true });
  fs.writeFileSync(path.join(cfg.configDir, 'routes', file), [...lines, ''].join('\n'));
}

/** The lines of a route that rewrites alice@laptop.local (envelope sender and From unless `from` only)
 * and delivers by SMTP to 127.0.0.1:port; `more` goes before the transport, `transport` into it. */
export function smtpRoute(
  name: string,
  connection: string,
  port: number,
  opts: { more?: string[]; transport?: string[]; fromOnly?: boolean } = {},
): string[] {
  return [
    `name: ${name}`,
    `connections: [${connection}]`,
    'rewrite:',
    ...(opts.fromOnly ? [] : ['  envelope_sender:', '    "*@laptop.local": "*@isp.example"']),
    '  from:',
    '    alice: alice.smith@isp.example',
    ...(opts.more ?? []),
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${port}`,
    ...(opts.transport ?? ['tls: none']).map((l) => `  ${l}`),
  ];
}

/** Writes a configuration listening on a free port with its own spool; extra is more YAML. */
/** A local.* section that keeps this host's own mail in the queue: its delivery agent always says "try
 * again later" (for tests that look at what was queued by a door rather than at delivery). */
export function localKept(dir: string): string {
  return `local:\n  root: root\n  aliases: ""\n  mail_dir: ${JSON.stringify(dir)}\n  mailbox: mda\n  mda: [/usr/bin/env, sh, -c, "exit 75"]\n`;
}

export async function makeConfig(extra = '', opts: { spool?: string; port?: number } = {}): Promise<TestConfig> {
  const dir = tempDir();
  const configDir = path.join(dir, 'cfg');
  const spool = opts.spool ?? path.join(dir, 'spool');
  const port = opts.port ?? (await freePort());
  fs.mkdirSync(configDir);
  // local delivery stays inside the test's folder: no aliases of this machine, root's mail to root, mbox
  // files in a mail folder of the test's own (as Debian's /var/mail: 2775 root:mail)
  const mailDir = path.join(dir, 'mail');
  fs.mkdirSync(mailDir);
  fs.chmodSync(mailDir, 0o2775);
  const local = /^local:/m.test(extra)
    ? ''
    : `local:\n  root: root\n  aliases: ""\n  mail_dir: ${JSON.stringify(mailDir)}\n`;
  fs.writeFileSync(
    path.join(configDir, 'ferrymail.yaml'),
    `hostname: test.example\nlisten: ["127.0.0.1:${port}"]\nspool: ${JSON.stringify(spool)}\n${local}${extra}\n`,
  );
  return { dir, configDir, spool, port };
}

/** A daemon running as a child process. */
export interface RunningDaemon {
  cfg: TestConfig;
  child: ChildProcess;
  log(): string;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
}

/** Waits until the port accepts connections (or the deadline passes). */
export async function waitForPort(port: number, timeoutMs = 10_000, host = '127.0.0.1'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, host);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts `ferrymail daemon` for a configuration and waits until it listens. With opts.netns it runs inside
 * that network namespace (`ip netns exec`), where its port cannot be reached from here: the start-up line
 * alone says it listens. opts.env adds to its environment.
 */
export async function startDaemon(
  cfg: TestConfig,
  extraArgs: string[] = [],
  opts: { netns?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunningDaemon> {
  const argv = [process.execPath, FERRYMAIL, '--config-dir', cfg.configDir, 'daemon', ...extraArgs];
  // inside a namespace the environment is set by env(1), so that `ip` itself is still found on PATH
  const vars = Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v ?? ''}`);
  const [cmd, ...args] = opts.netns ? ['ip', 'netns', 'exec', opts.netns, 'env', ...vars, ...argv] : argv;
  const child = spawn(cmd!, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.netns ? process.env : { ...process.env, ...opts.env },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await Promise.race([
      // the start-up line comes once every listener is bound (SMTP, LMTP, IPv4 and IPv6)
      (opts.netns ? Promise.resolve() : waitForPort(cfg.port)).then(async () => {
        if (!(await waitUntil(() => out.includes('ferrymail started'), 10_000)))
          throw new Error(`no start-up line: ${out}`);
      }),
      exited.then((code) => {
        throw new Error(`daemon exited with ${code}: ${out}`);
      }),
    ]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    cfg,
    child,
    log: () => out,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** What a finished command left. */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program with input on stdin; bounded by timeoutMs. */
export function run(
  cmd: string,
  args: string[],
  opts: { input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number; argv0?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      argv0: opts.argv0,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs the sendmail command (by personality name through a symlink when name is given). */
export async function sendmail(cfg: TestConfig, args: string[], input = '', name = 'sendmail'): Promise<RunResult> {
  let script = SENDMAIL;
  if (name !== 'sendmail') {
    const linkDir = path.join(cfg.dir, 'bin');
    fs.mkdirSync(linkDir, { recursive: true });
    script = path.join(linkDir, name);
    if (!fs.existsSync(script)) fs.symlinkSync(SENDMAIL, script);
  }
  return run(process.execPath, [script, ...args], { input, env: { FERRYMAIL_CONFIG_DIR: cfg.configDir } });
}

/** Runs the ferrymail admin command for a configuration. */
export function ferrymail(cfg: TestConfig, args: string[], input = ''): Promise<RunResult> {
  return run(process.execPath, [FERRYMAIL, '--config-dir', cfg.configDir, ...args], { input });
}

/** Queue entries as `ferrymail queue list --json` prints them. */
export async function queueJson(cfg: TestConfig): Promise<Array<Record<string, any>>> {
  const r = await ferrymail(cfg, ['queue', 'list', '--json']);
  if (r.code !== 0) throw new Error(`queue list failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The stored message of a queue id, as every reader of the spool sees it: up to its size (a data file
 * may still carry its envelope behind the message: docs/spool.md, the doors' commit). */
export function messageData(cfg: TestConfig, id: string): string {
  settledSync(cfg.spool);
  const data = fs.readFileSync(path.join(cfg.spool, 'msg', id));
  return data.subarray(0, sizeBehind(data) ?? data.length).toString('latin1');
}

/** The message's size a data file names in the trailer behind it (spool/trailer.ts), if it has one. */
export function sizeBehind(data: Buffer): number | undefined {
  return parseTrailer(data.subarray(Math.max(0, data.length - TRAILER_BYTES)))?.size;
}

/** The ids of messages a daemon answered that its mover has not yet finished with: data written in the
 * last second that still carries an envelope behind it (in tmp/'s claim's shadow, or just renamed into
 * queue/ and not yet cut back). Older such data is what a kill between the mover's rename and its cut
 * leaves, which readers never read past the size. */
function unmoved(spool: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(spool, 'msg'));
  } catch {
    return [];
  }
  const now = Date.now();
  return names.filter((id) => {
    try {
      const file = path.join(spool, 'msg', id);
      return now - fs.statSync(file).mtimeMs < 1000 && sizeBehind(fs.readFileSync(file)) !== undefined;
    } catch {
      return false;
    }
  });
}

/** Waits, up to 3 s, until every message a daemon answered is in its place (the mover starts 10 ms after
 * an answer), so that a look at the spool's folders sees what the client was told. */
export function settledSync(spool: string): void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (const end = Date.now() + 3000; unmoved(spool).length && Date.now() < end; ) Atomics.wait(nap, 0, 0, 5);
}

/**
 * A raw SMTP client for exact protocol tests: send() writes bytes, reply() reads one complete reply
 * (multi-line aware). Every read is bounded by a timeout.
 */
export class RawSmtp {
  private buf = '';
  private waiters: Array<() => void> = [];
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf += d;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => undefined);
  }

  /** Connects from a chosen local address (e.g. 127.0.0.2, to look like another client). */
  static connectFrom(port: number, host: string, localAddress: string): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, localAddress });
      s.once('connect', () => resolve(new RawSmtp(s)));
      s.once('error', reject);
    });
  }

  /** Connects to a unix socket (e.g. a forwarder into a network namespace). */
  static connectPath(file: string): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = net.connect(file);
      s.once('connect', () => resolve(new RawSmtp(s)));
      s.once('error', reject);
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawSmtp> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host);
      s.once('connect', () => resolve(new RawSmtp(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(data: string | Buffer): void {
    this.sock.write(data);
  }

  /** Reads one reply; resolves with its lines joined by \n (code included). */
  async reply(timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m[0].length);
        return m[0].replace(/\r\n/g, '\n').trimEnd();
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf)}`);
      if (Date.now() > deadline) throw new Error(`no reply within ${timeoutMs} ms; have ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Sends a command line and reads its reply. */
  async cmd(line: string): Promise<string> {
    this.send(`${line}\r\n`);
    return this.reply();
  }

  /** Waits for the server to close the connection. */
  async waitClose(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Waits until check() returns true, polling every stepMs; false when the deadline passed first. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  stepMs = 20,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Whether a process lives. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The file names in a spool's tmp/, msg/, queue/, hold/ and corrupt/ folders (missing folder: none).
 * tmp/ leaves out the spare lock directories of living processes (tmp/lock.PID.RAND, kept for their
 * next lock); those of dead processes show. */
export function spoolFiles(cfg: { spool: string }): Record<'tmp' | 'msg' | 'queue' | 'hold' | 'corrupt', string[]> {
  settledSync(cfg.spool);
  const list = (d: string): string[] => {
    try {
      return fs.readdirSync(path.join(cfg.spool, d)).sort();
    } catch {
      return [];
    }
  };
  const tmp = list('tmp').filter((n) => !(n.startsWith('lock.') && alive(Number(n.split('.')[1]))));
  return { tmp, msg: list('msg'), queue: list('queue'), hold: list('hold'), corrupt: list('corrupt') };
}

/** What one SMTP transaction sent by smtpSend got back. */
export interface SendResult {
  /** The reply to the end of DATA (or to the command that failed first). */
  reply: string;
  /** The queue id from "queued as ID", when the message was accepted. */
  id?: string;
}

/**
 * Sends one message on a new connection (EHLO, MAIL, RCPT..., DATA, QUIT) and returns the last reply.
 * data is the message without the terminating dot (CRLF line ends, dots already stuffed).
 */
export async function smtpSend(
  port: number,
  msg: { from?: string; to?: string[]; data?: string; host?: string; timeoutMs?: number } = {},
): Promise<SendResult> {
  const c = await RawSmtp.connect(port, msg.host);
  try {
    const t = msg.timeoutMs ?? 10_000;
    const step = async (line: string | null, expect: RegExp): Promise<string | null> => {
      if (line !== null) c.send(`${line}\r\n`);
      const r = await c.reply(t);
      return expect.test(r) ? null : r;
    };
    const failed =
      (await step(null, /^220/)) ??
      (await step('EHLO client.example', /^250/)) ??
      (await step(`MAIL FROM:<${msg.from ?? 'sender@client.example'}>`, /^250/));
    if (failed) return { reply: failed };
    for (const rcpt of msg.to ?? ['rcpt@example.org']) {
      const r = await step(`RCPT TO:<${rcpt}>`, /^250/);
      if (r) return { reply: r };
    }
    const r = await step('DATA', /^354/);
    if (r) return { reply: r };
    c.send(`${msg.data ?? 'Subject: test\r\n\r\nhello\r\n'}.\r\n`);
    const reply = await c.reply(t);
    c.send('QUIT\r\n');
    const id = /^250 .*queued as ([0-9A-Z]+)/.exec(reply)?.[1];
    return id ? { reply, id } : { reply };
  } finally {
    c.close();
  }
}

/** Stops a daemon: SIGTERM, then SIGKILL when it has not exited within timeoutMs. Safe to call twice. */
export async function stopDaemon(d: RunningDaemon | undefined, timeoutMs = 5_000): Promise<void> {
  if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
  const r = await Promise.race([d.stop(), late]);
  clearTimeout(timer);
  if (r === 'late') await d.kill();
}

/** One queue entry as `ferrymail queue show ID --json` prints it (the header section included). */
export async function queueShowJson(cfg: TestConfig, id: string): Promise<Record<string, any>> {
  const r = await ferrymail(cfg, ['queue', 'show', id, '--json']);
  if (r.code !== 0) throw new Error(`queue show ${id} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Commits n small messages straight into a spool (one recipient each, rN@example.org); resolves with
 * their ids. Quicker than n runs of the sendmail command, for tests that need a long queue. */
export async function fillSpool(spoolDir: string, n: number, sender = 'me@test.example'): Promise<string[]> {
  const { openSpoolWriter } = await import('../src/spool/writer.js');
  const { newRecipient } = await import('../src/domain/envelope.js');
  const spool = openSpoolWriter(spoolDir);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const w = await spool.begin();
    w.stream.end(`Subject: ${i}\r\n\r\nbody\r\n`);
    const env = await w.commit({
      version: 1,
      arrival: new Date().toISOString(),
      sender,
      recipients: [newRecipient(`r${i}@example.org`)],
      origin: { door: 'sendmail' },
      protocol: 'local',
    });
    ids.push(env.id);
  }
  return ids;
}

/** Runs `ip ARGS` at once; the error text, or null when it worked (network namespace tests). */
export function ip(...args: string[]): string | null {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.error) return r.error.message;
  return r.status === 0 ? null : (r.stderr || `exit ${r.status}`).trim();
}
