/**
 * Delivery to a command: an argv template filled in per recipient or per message, run without a shell,
 * with a clean environment, the message on stdin (LF line ends unless told to keep CRLF; optionally an
 * mbox "From " line and ">From" escaping), and the exit code read through the sysexits table.
 *
 * Addresses are untrusted and only ever become whole argv elements (a template word such as
 * "--to=${recipient}" is substituted, never split or interpreted), so quotes, ";", "$(...)", backticks
 * and a leading "-" reach the command as plain text. stderr (first 1,000 bytes, its first line) is the
 * error text. A timeout, or a message that cannot be read to its end, kills the whole process group
 * before the command sees the end of its input. Never throws: every failure is an outcome.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { Transform, type TransformCallback } from 'node:stream';
import type { Outcome } from '../domain/outcome.js';
import { EX } from '../domain/sysexits.js';
import { contentRefusal } from '../errors.js';
import type { DeliveryRequest, DeliveryResult, RecipientResult, Transport } from './types.js';

/** How to run the command. */
export interface PipeSettings {
  /** argv template; ${sender} (MAILER-DAEMON for <>), ${recipient}, ${local_part}, ${domain}, ${id}, ${route}. */
  command: string[];
  /**
   * Once per recipient (default) or once for all recipients: then a word naming ${recipient},
   * ${local_part} or ${domain} becomes one word per recipient.
   */
  perRecipient?: boolean;
  /** Prepend an mbox "From sender date" line and escapeFrom body lines starting with "From ". */
  fromLine?: boolean;
  /** Keep the spool's CRLF line ends (default: LF, as local delivery programs expect). */
  crlf?: boolean;
  route?: string;
  timeoutMs?: number;
  /** Extra environment variables (the environment is otherwise empty but for PATH). */
  env?: Record<string, string>;
}

/** The variables a command template may name. */
export const PIPE_VARIABLES = ['sender', 'recipient', 'local_part', 'domain', 'id', 'route'] as const;
/** The variables that differ from one recipient to the next. */
const PER_RECIPIENT = /\$\{(recipient|local_part|domain)\}/;
const DEFAULT_TIMEOUT_MS = 300_000;

/** The ${...} names in a template that are not variables (a typo would otherwise reach the command). */
export function unknownVariables(command: string[]): string[] {
  const named = command.flatMap((w) => [...w.matchAll(/\$\{([^}]*)\}/g)].map((m) => m[1]!));
  return [...new Set(named.filter((v) => !(PIPE_VARIABLES as readonly string[]).includes(v)))];
}

/** Exit codes and what they mean (sysexits; 75 is the temporary one). */
export function outcomeOfExit(code: number | null): { outcome: Outcome; status: string } {
  if (code === EX.OK) return { outcome: 'ok', status: '250 2.0.0' };
  if (code === EX.TEMPFAIL) return { outcome: 'tempfail', status: '451 4.3.0' };
  if (code === EX.NOUSER) return { outcome: 'permfail', status: '550 5.1.1' };
  if (code === EX.NOHOST) return { outcome: 'permfail', status: '550 5.1.2' };
  if (code === EX.DATAERR) return { outcome: 'permfail', status: '554 5.6.0' };
  if (code === EX.NOPERM) return { outcome: 'permfail', status: '550 5.7.1' };
  if (code === EX.UNAVAILABLE || code === EX.PROTOCOL || code === EX.USAGE)
    return { outcome: 'permfail', status: '554 5.3.0' };
  // crashes, signals, and everything else: try again later
  return { outcome: 'tempfail', status: '451 4.3.0' };
}

/** Fills the template's variables into one argv element. */
const VARIABLE = new RegExp(`\\$\\{(${PIPE_VARIABLES.join('|')})\\}`, 'g');

function fill(word: string, vars: Record<string, string>): string {
  return word.replace(VARIABLE, (_m, k: string) => vars[k] ?? '');
}

/** The variables of one recipient. */
function recipientVars(recipient: string): Record<string, string> {
  const at = recipient.lastIndexOf('@');
  return {
    recipient,
    local_part: at > 0 ? recipient.slice(0, at) : recipient,
    domain: at > 0 ? recipient.slice(at + 1) : '',
  };
}

/** The argv of one run: a word naming a recipient variable is repeated for each recipient of the run. */
export function argvFor(
  command: string[],
  common: { sender: string; id: string; route: string },
  recipients: string[],
): string[] {
  return command.flatMap((w) =>
    PER_RECIPIENT.test(w) ? recipients.map((r) => fill(w, { ...common, ...recipientVars(r) })) : [fill(w, common)],
  );
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** The mbox From_ line: "From SENDER Www Mmm dd hh:mm:ss yyyy" (the asctime form mbox readers parse; UTC). */
export function fromLineOf(sender: string, at = new Date()): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  const time = `${two(at.getUTCHours())}:${two(at.getUTCMinutes())}:${two(at.getUTCSeconds())}`;
  return `From ${sender || 'MAILER-DAEMON'} ${DAYS[at.getUTCDay()]} ${MONTHS[at.getUTCMonth()]} ${String(at.getUTCDate()).padStart(2, ' ')} ${time} ${at.getUTCFullYear()}\n`;
}

/**
 * Line handling on the way into the command: CRLF to LF (unless kept), ">From " for body lines that
 * start with "From " (when an mbox From_ line goes first). Holds at most one partial line of 8 KiB.
 */
class ToCommand extends Transform {
  private carry = '';
  private midLine = false;
  constructor(
    private head: string,
    private readonly escapeFrom: boolean,
    private readonly lf: boolean,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    const lines = (this.carry + chunk.toString('latin1')).split('\n');
    this.carry = lines.pop() ?? '';
    let out = this.takeHead() + lines.map((l) => `${this.line(l)}\n`).join('');
    if (this.carry.length > 8192) {
      // a very long line: pass on all but a possible CR, which the next chunk may pair with an LF
      const keep = this.carry.endsWith('\r') ? 1 : 0;
      out += this.line(this.carry.slice(0, this.carry.length - keep), true);
      this.carry = this.carry.slice(this.carry.length - keep);
    }
    cb(null, Buffer.from(out, 'latin1'));
  }
  override _flush(cb: TransformCallback): void {
    cb(null, Buffer.from(this.takeHead() + (this.carry ? this.line(this.carry) : ''), 'latin1'));
  }
  /** One line (or the first part of one, when partial), without its LF. */
  private line(l: string, partial = false): string {
    const text = this.lf && !partial && l.endsWith('\r') ? l.slice(0, -1) : l;
    const escaped = this.escapeFrom && !this.midLine && text.startsWith('From ') ? `>${text}` : text;
    this.midLine = partial;
    return escaped;
  }
  private takeHead(): string {
    const h = this.head;
    this.head = '';
    return h;
  }
}

/** Kills the command and everything it started (it leads its own process group). */
function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/** The message as the command gets it. */
function input(s: PipeSettings, req: DeliveryRequest, body: Readable): Readable {
  if (!s.fromLine && s.crlf) return body;
  return body.pipe(new ToCommand(s.fromLine ? fromLineOf(req.sender) : '', s.fromLine === true, !s.crlf));
}

/** Runs the command once with the message on stdin; resolves with the outcome and a one-line reply. */
function runOnce(
  s: PipeSettings,
  req: DeliveryRequest,
  argv: string[],
  recipients: string[],
): Promise<{ outcome: Outcome; reply: string }> {
  return new Promise((resolve) => {
    let stderr = '';
    let settled = false;
    const done = (r: { outcome: Outcome; reply: string }): void => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(r);
      }
    };
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...s.env },
      detached: true,
    });
    const ms = s.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const timer = setTimeout(() => {
      done({ outcome: 'tempfail', reply: `451 4.4.7 ${argv[0]} did not finish within ${ms} ms` });
      killGroup(child);
    }, ms);
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 1000) stderr += d.toString('utf8').slice(0, 1000 - stderr.length);
    });
    child.stdin!.on('error', () => undefined); // a command that does not read its input
    child.on('error', (err: NodeJS.ErrnoException) =>
      done({ outcome: 'tempfail', reply: `451 4.3.0 cannot run ${argv[0]}: ${err.code ?? err.message}` }),
    );
    child.on('close', (code) => {
      const { outcome, status } = outcomeOfExit(code);
      // eslint-disable-next-line no-control-regex
      const why = stderr
        .split('\n')
        .find((l) => l.trim())
        ?.replace(/[\x00-\x1f\x7f]/g, ' ')
        .trim();
      done({ outcome, reply: `${status} ${argv[0]} exited ${code ?? 'on a signal'}${why ? `: ${why}` : ''}` });
    });
    if (child.pid === undefined) return; // the 'error' event says why
    const body = req.message(recipients);
    // a message that breaks off must not reach the command as a shorter one: kill it before its input ends
    const broken = (err: Error): void => {
      const refused = contentRefusal(err);
      if (refused) done({ outcome: 'permfail', reply: `${refused.code} ${refused.enhanced} ${refused.text}` });
      else done({ outcome: 'tempfail', reply: `451 4.3.0 message not passed to ${argv[0]}: ${err.message}` });
      killGroup(child);
    };
    body.once('error', broken);
    const feed = input(s, req, body);
    if (feed !== body) feed.once('error', broken);
    feed.pipe(child.stdin!);
  });
}

/** Creates a transport that hands messages to a command; one whose template cannot work refuses every
 * delivery (tempfail) and says why in `problem`. */
export function pipeTransport(s: PipeSettings): Transport & { problem?: string } {
  const relay = `pipe:${s.command[0] ?? '?'}`;
  const unknown = unknownVariables(s.command);
  const problem = !s.command.length
    ? 'no command configured'
    : unknown.length
      ? `the pipe command names unknown variables: ${unknown.map((v) => `\${${v}}`).join(', ')}`
      : undefined;
  const why = problem && s.route ? `route ${s.route}: ${problem}` : problem;
  return {
    problem: why,
    async deliver(req: DeliveryRequest): Promise<DeliveryResult> {
      if (why)
        return {
          relay,
          results: req.recipients.map((r) => ({ address: r.address, outcome: 'tempfail', reply: `451 4.3.5 ${why}` })),
        };
      // the null sender is MAILER-DAEMON, as in the From_ line (and Postfix's pipe)
      const common = { sender: req.sender || 'MAILER-DAEMON', id: req.id, route: s.route ?? '' };
      if (s.perRecipient === false) {
        const r = await runOnce(
          s,
          req,
          argvFor(
            s.command,
            common,
            req.recipients.map((x) => x.address),
          ),
          req.recipients.map((x) => x.address),
        );
        return { relay, results: req.recipients.map((x): RecipientResult => ({ address: x.address, ...r })) };
      }
      const results: RecipientResult[] = [];
      for (const rc of req.recipients)
        results.push({
          address: rc.address,
          ...(await runOnce(s, req, argvFor(s.command, common, [rc.address]), [rc.address])),
        });
      return { relay, results };
    },
  };
}
