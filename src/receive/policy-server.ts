/**
 * The built-in hook `policy_server`: Postfix's policy delegation protocol (SMTPD_POLICY_README), so
 * that the policy servers an administrator already runs for Postfix (postgrey, policyd-spf, policyd-
 * rate-limit, ...) decide here too. For each asked stage it sends one request of name=value lines and an
 * empty line, and reads one `action=...` answer; connections are kept and reused, one request at a time
 * each.
 *
 * Answers: OK (accept), DUNNO (continue), REJECT and DEFER with their text, DEFER_IF_PERMIT and
 * DEFER_IF_REJECT (the stage's other hooks decide first), a reply code of its own (4NN/5NN text),
 * PREPEND (the header field is added at the top of the message at data_end), WARN and INFO (logged).
 * HOLD, DISCARD, FILTER and REDIRECT are not carried out here: they are logged and taken as DUNNO.
 *
 * Trusts the configuration; the server's answers are checked (anything else is the hook's failure, which
 * its entry's on_error decides). Never blocks a session beyond the entry's timeout: a connection whose
 * request timed out is closed, so that a late answer is never read as the next request's.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import type { HookApi, HookHandlers } from './hook-api.js';
import type { SessionFacts, StageInput, Verdict } from './stages.js';

/** Where a policy server listens. */
type Target = { path: string } | { host: string; port: number };

/** The protocol states a request can be made in, by stage. */
const STATE_OF = { rcpt: 'RCPT', data: 'DATA', data_end: 'END-OF-MESSAGE' } as const;

/** Parses "inet:host:port", "unix:/path", "host:port" or "/path". */
export function targetOf(server: unknown): Target {
  if (typeof server !== 'string' || !server) throw new Error('options.server must be inet:HOST:PORT or unix:/PATH');
  const s = server.replace(/^(inet|unix):/, '');
  if (s.startsWith('/')) return { path: s };
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(s);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535)
    throw new Error(`options.server ${JSON.stringify(server)} is not inet:HOST:PORT or unix:/PATH`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** The request's attribute lines (values without newlines: a client's text never adds an attribute). */
export function requestText(state: string, s: SessionFacts, input: StageInput, extra: Record<string, string>): string {
  const clean = (v: string | number | undefined): string => String(v ?? '').replace(/[\r\n]/g, ' ');
  const attrs: Record<string, string | number | undefined> = {
    request: 'smtpd_access_policy',
    protocol_state: state,
    protocol_name: s.helo ? 'ESMTP' : 'SMTP',
    helo_name: s.helo,
    queue_id: input.message?.id,
    sender: s.sender,
    recipient: state === 'RCPT' ? input.arg : '',
    recipient_count: state === 'RCPT' ? s.recipients.length : s.recipients.length,
    client_address: s.peer,
    client_name: 'unknown',
    reverse_client_name: 'unknown',
    sasl_method: s.user ? 'PLAIN' : '',
    sasl_username: s.user,
    size: input.message?.size ?? 0,
    encryption_protocol: s.secure ? 'TLS' : '',
    ...extra,
  };
  return `${Object.entries(attrs)
    .map(([k, v]) => `${k}=${clean(v)}\n`)
    .join('')}\n`;
}

/** What one answer means: a verdict, a header to prepend, a soft defer, or a line for the log. */
export interface PolicyAnswer {
  verdict: Verdict;
  prepend?: { name: string; value: string };
  /** DEFER_IF_PERMIT / DEFER_IF_REJECT: the reply, and when it applies. */
  soft?: { when: 'permit' | 'reject'; text: string };
  log?: string;
}

/** Reads an `action=...` value; throws on anything that is not a Postfix access action. */
export function parseAction(action: string): PolicyAnswer {
  const m = /^(\S+)\s*(.*)$/.exec(action.trim());
  if (!m) throw new Error('answered an empty action');
  const word = m[1]!.toUpperCase();
  const text = m[2]!.trim();
  const reply = (
    code: number,
    enhanced: string,
    fallback: string,
  ): { code: number; enhanced: string; text: string } => {
    const e = /^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$/.exec(text);
    return e && e[1]![0] === String(code)[0]
      ? { code, enhanced: e[1]!, text: e[2]! || fallback }
      : { code, enhanced, text: text || fallback };
  };
  if (/^[45]\d\d$/.test(word)) {
    const code = Number(word);
    const r = reply(code, code >= 500 ? '5.7.1' : '4.7.1', code >= 500 ? 'Access denied' : 'Try again later');
    return { verdict: { action: code >= 500 ? 'reject' : 'defer', reply: r } };
  }
  switch (word) {
    case 'OK':
      return { verdict: { action: 'accept' } };
    case 'DUNNO':
      return { verdict: { action: 'continue' } };
    case 'REJECT':
      return { verdict: { action: 'reject', reply: reply(554, '5.7.1', 'Access denied') } };
    case 'DEFER':
      return { verdict: { action: 'defer', reply: reply(450, '4.7.1', 'Try again later') } };
    case 'DEFER_IF_PERMIT':
      return { verdict: { action: 'continue' }, soft: { when: 'permit', text: text || 'Try again later' } };
    case 'DEFER_IF_REJECT':
      return { verdict: { action: 'continue' }, soft: { when: 'reject', text: text || 'Try again later' } };
    case 'PREPEND': {
      const h = /^([!-9;-~]+):[ \t]*(.*)$/.exec(text);
      if (!h || /[\x00-\x08\x0a-\x1f\x7f]/.test(text)) throw new Error(`answered PREPEND ${JSON.stringify(text)}`);
      return { verdict: { action: 'continue' }, prepend: { name: h[1]!, value: h[2]! } };
    }
    case 'WARN':
    case 'INFO':
      return { verdict: { action: 'continue' }, log: `${word} ${text}` };
    case 'HOLD':
    case 'DISCARD':
    case 'FILTER':
    case 'REDIRECT':
      return { verdict: { action: 'continue' }, log: `${word} is not carried out here; taken as DUNNO` };
    default:
      throw new Error(`answered the action ${JSON.stringify(action.slice(0, 80))}`);
  }
}

/** What a connection runs over: a socket, or the standard input and output of a spawned server. */
interface Channel {
  input: NodeJS.ReadableStream & { on(e: 'data', f: (d: Buffer | string) => void): unknown };
  output: NodeJS.WritableStream;
  events: NodeJS.EventEmitter[];
  destroy(): void;
}

/** One kept connection to the server. */
class Conn {
  private buf = '';
  private waiter: ((answer: string | Error) => void) | null = null;
  closed = false;
  constructor(readonly ch: Channel) {
    ch.input.setEncoding('utf8');
    ch.input.on('data', (d: Buffer | string) => {
      this.buf += d;
      const end = this.buf.indexOf('\n\n');
      if (end < 0) {
        if (this.buf.length > 64 * 1024) this.fail(new Error('answered more than 64 KB'));
        return;
      }
      const answer = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      const w = this.waiter;
      this.waiter = null;
      w?.(answer);
    });
    const gone = (err?: Error): void => this.fail(err ?? new Error('closed the connection'));
    for (const e of ch.events) {
      e.on('error', gone);
      e.on('close', () => gone());
    }
  }
  private fail(err: Error): void {
    this.closed = true;
    this.ch.destroy();
    const w = this.waiter;
    this.waiter = null;
    w?.(err);
  }
  /** Sends one request and resolves with the answer's lines. */
  ask(text: string): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error('closed the connection'));
      this.waiter = (a) => (a instanceof Error ? reject(a) : resolve(a));
      this.ch.output.write(text);
    });
  }
  close(): void {
    this.fail(new Error('closed'));
  }
}

/** Opens a connection (refused or unreachable: rejects). */
function connect(t: Target): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const sock = 'path' in t ? net.connect(t.path) : net.connect(t.port, t.host);
    sock.setNoDelay(true);
    sock.once('connect', () => {
      sock.removeListener('error', reject);
      resolve(new Conn({ input: sock, output: sock, events: [sock], destroy: () => sock.destroy() }));
    });
    sock.once('error', reject);
  });
}

/** Starts a server that speaks on its standard input and output (Postfix's spawn: policyd-spf), run
 * without a shell and with a clean environment; one process per connection. */
function spawnServer(argv: string[]): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'ignore'],
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
    });
    child.once('error', reject);
    child.once('spawn', () => {
      child.removeListener('error', reject);
      child.stdin!.on('error', () => undefined);
      resolve(
        new Conn({
          input: child.stdout!,
          output: child.stdin!,
          events: [child, child.stdout!],
          destroy: () => {
            child.stdin!.destroy();
            if (child.exitCode === null) child.kill('SIGTERM');
          },
        }),
      );
    });
  });
}

/** The built-in: handlers for the states in options.states (default RCPT), and data_end for PREPEND. */
export function policyServer(options: Record<string, unknown>, api: HookApi): HookHandlers {
  const command = options.command;
  if (
    command !== undefined &&
    (!Array.isArray(command) || !command.length || !command.every((a) => typeof a === 'string'))
  )
    throw new Error('options.command must be a list: the program and its arguments (no shell)');
  if (command !== undefined && options.server !== undefined)
    throw new Error('give options.server or options.command, not both');
  const target = command ? undefined : targetOf(options.server);
  const open = (): Promise<Conn> => (command ? spawnServer(command as string[]) : connect(target!));
  const states = (options.states ?? ['RCPT']) as unknown;
  if (!Array.isArray(states) || !states.every((x) => ['RCPT', 'DATA', 'END-OF-MESSAGE'].includes(String(x))))
    throw new Error('options.states must list RCPT, DATA or END-OF-MESSAGE');
  const idle: Conn[] = [];
  /** Per session: the transaction's number (Postfix's `instance`) and the headers to prepend to its
   * message; entries of sessions gone an hour are dropped. */
  const sessions = new Map<string, { tx: number; prepend: Array<{ name: string; value: string }>; at: number }>();
  const stateOf = (id: string): { tx: number; prepend: Array<{ name: string; value: string }>; at: number } => {
    let st = sessions.get(id);
    if (!st) {
      const now = Date.now();
      for (const [k, v] of sessions) if (now - v.at > 3_600_000) sessions.delete(k);
      st = { tx: 0, prepend: [], at: now };
      sessions.set(id, st);
    }
    return st;
  };

  const ask = async (state: string, s: SessionFacts, input: StageInput): Promise<Verdict> => {
    let conn = idle.pop();
    while (conn?.closed) conn = idle.pop();
    conn ??= await open();
    const st = stateOf(s.id);
    let answer: string;
    try {
      answer = await conn.ask(requestText(state, s, input, { instance: `${s.id}.${st.tx}` }));
    } catch (err) {
      conn.close();
      throw err;
    }
    // a hook call that timed out leaves its connection waiting: only a connection that answered is kept
    if (idle.length < 8) idle.push(conn);
    else conn.close();
    const line = answer.split('\n').find((l) => l.startsWith('action='));
    if (line === undefined) throw new Error('answered without an action');
    const a = parseAction(line.slice('action='.length));
    if (a.log) api.log(`policy server ${command ? (command as string[])[0] : options.server}: ${a.log}`);
    if (a.prepend) st.prepend.push(a.prepend);
    if (a.soft)
      return {
        action: 'continue',
        softDefer: { when: a.soft.when, reply: { code: 450, enhanced: '4.7.1', text: a.soft.text } },
      };
    return a.verdict;
  };

  const handlers: HookHandlers = {
    // a new transaction: its own instance, and nothing of the last one's headers
    mail: (s) => {
      const st = stateOf(s.id);
      st.tx++;
      st.prepend = [];
      st.at = Date.now();
      return { action: 'continue' };
    },
  };
  for (const stage of ['rcpt', 'data'] as const)
    if ((states as string[]).includes(STATE_OF[stage])) handlers[stage] = (s, i) => ask(STATE_OF[stage], s, i);
  handlers.data_end = async (s, i) => {
    const v = (states as string[]).includes('END-OF-MESSAGE') ? await ask('END-OF-MESSAGE', s, i) : undefined;
    const st = stateOf(s.id);
    const prepend = st.prepend;
    st.prepend = [];
    if (v && v.action !== 'continue') return v;
    return prepend.length ? { ...v, action: 'continue', headers: { prepend } } : (v ?? { action: 'continue' });
  };
  return handlers;
}
