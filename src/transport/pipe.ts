/**
 * Delivery to a command: an argv template filled in per recipient or per message, run without a shell,
 * with a clean environment, the message on stdin (optionally with an mbox "From " line and ">From"
 * escaping), and the exit code read through the sysexits table.
 *
 * Addresses are untrusted and only ever become whole argv elements (a template word such as
 * "--to=${recipient}" is substituted, never split or interpreted), so quotes, ";", "$(...)", backticks
 * and newlines reach the command as plain text. stderr (first 1,000 bytes, one line) is the error text.
 * A timeout kills the whole process group. Never throws: every failure is an outcome.
 */
import { spawn } from 'node:child_process';
import { Transform, type TransformCallback } from 'node:stream';
import type { Outcome } from '../domain/outcome.js';
import { EX } from '../domain/sysexits.js';
import type { DeliveryRequest, DeliveryResult, RecipientResult, Transport } from './types.js';

/** How to run the command. */
export interface PipeSettings {
  /** argv template; ${sender}, ${recipient}, ${local_part}, ${domain}, ${id} and ${route} are filled in. */
  command: string[];
  /** Once per recipient (default) or once for all recipients (then ${recipient} etc. are empty). */
  perRecipient?: boolean;
  /** Prepend an mbox "From sender date" line and escape body lines starting with "From ". */
  fromLine?: boolean;
  route?: string;
  timeoutMs?: number;
  /** Extra environment variables (the environment is otherwise empty but for PATH). */
  env?: Record<string, string>;
}

/** Exit codes and what they mean (sysexits; 75 is the temporary one). */
function outcomeOfExit(code: number | null): { outcome: Outcome; status: string } {
  if (code === EX.OK) return { outcome: 'ok', status: '250 2.0.0' };
  if (code === EX.TEMPFAIL) return { outcome: 'tempfail', status: '451 4.3.0' };
  if (code === EX.NOUSER) return { outcome: 'permfail', status: '550 5.1.1' };
  if (code === EX.NOHOST) return { outcome: 'permfail', status: '550 5.1.2' };
  if (code === EX.DATAERR) return { outcome: 'permfail', status: '554 5.6.0' };
  if (code === EX.NOPERM) return { outcome: 'permfail', status: '550 5.7.1' };
  if (code === EX.UNAVAILABLE || code === EX.PROTOCOL || code === EX.USAGE) return { outcome: 'permfail', status: '554 5.3.0' };
  // crashes, signals, and everything else: try again later
  return { outcome: 'tempfail', status: '451 4.3.0' };
}

/** Fills the template's variables into one argv element. */
function fill(word: string, vars: Record<string, string>): string {
  return word.replace(/\$\{(sender|recipient|local_part|domain|id|route)\}/g, (_m, k: string) => vars[k] ?? '');
}

/** Prepends the mbox From line and escapes "From " at line starts (">From "), line by line. */
class MboxFrom extends Transform {
  private carry = '';
  private head: string;
  constructor(head: string) {
    super();
    this.head = head;
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    const lines = (this.carry + chunk.toString('latin1')).split('\n');
    this.carry = lines.pop() ?? '';
    const out = lines.map((l) => (l.startsWith('From ') ? `>${l}` : l)).join('\n') + (lines.length ? '\n' : '');
    cb(null, Buffer.from(this.takeHead() + out, 'latin1'));
  }
  override _flush(cb: TransformCallback): void {
    const last = this.carry.startsWith('From ') ? `>${this.carry}` : this.carry;
    cb(null, Buffer.from(this.takeHead() + last, 'latin1'));
  }
  private takeHead(): string {
    const h = this.head;
    this.head = '';
    return h;
  }
}

/** Runs the command once with the message on stdin; resolves with the outcome and a one-line reply. */
function runOnce(s: PipeSettings, req: DeliveryRequest, vars: Record<string, string>): Promise<{ outcome: Outcome; reply: string }> {
  return new Promise((resolve) => {
    const argv = s.command.map((w) => fill(w, vars));
    let stderr = '';
    let settled = false;
    const done = (r: { outcome: Outcome; reply: string }): void => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(r);
      }
    };
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'ignore', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...s.env }, detached: true });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      done({ outcome: 'tempfail', reply: `451 4.4.7 ${argv[0]} did not finish within ${s.timeoutMs ?? 300_000} ms` });
    }, s.timeoutMs ?? 300_000);
    child.stderr!.on('data', (d: Buffer) => {
      if (stderr.length < 1000) stderr += d.toString('utf8').slice(0, 1000 - stderr.length);
    });
    child.stdin!.on('error', () => undefined); // a command that does not read its input
    child.on('error', (err: NodeJS.ErrnoException) => done({ outcome: 'tempfail', reply: `451 4.3.0 cannot run ${argv[0]}: ${err.code ?? err.message}` }));
    child.on('close', (code) => {
      const { outcome, status } = outcomeOfExit(code);
      // eslint-disable-next-line no-control-regex
      const why = stderr.split('\n').find((l) => l.trim())?.replace(/[\x00-\x1f\x7f]/g, ' ').trim();
      done({ outcome, reply: `${status} ${argv[0]} exited ${code ?? 'on a signal'}${why ? `: ${why}` : ''}` });
    });
    const body = req.message();
    const head = s.fromLine ? `From ${req.sender || 'MAILER-DAEMON'} ${new Date().toUTCString()}\n` : '';
    (s.fromLine ? body.pipe(new MboxFrom(head)) : body).pipe(child.stdin!);
  });
}

/** Variables for one recipient (or none). */
function varsFor(s: PipeSettings, req: DeliveryRequest, recipient?: string): Record<string, string> {
  const at = recipient ? recipient.lastIndexOf('@') : -1;
  return {
    sender: req.sender,
    recipient: recipient ?? '',
    local_part: recipient && at > 0 ? recipient.slice(0, at) : recipient ?? '',
    domain: recipient && at > 0 ? recipient.slice(at + 1) : '',
    id: req.id,
    route: s.route ?? '',
  };
}

/** Creates a transport that hands messages to a command. */
export function pipeTransport(s: PipeSettings): Transport {
  return {
    async deliver(req: DeliveryRequest): Promise<DeliveryResult> {
      const relay = `pipe:${s.command[0] ?? '?'}`;
      if (!s.command.length) return { relay, results: req.recipients.map((r) => ({ address: r.address, outcome: 'tempfail', reply: '451 4.3.5 no command configured' })) };
      if (s.perRecipient === false) {
        const r = await runOnce(s, req, varsFor(s, req));
        return { relay, results: req.recipients.map((x): RecipientResult => ({ address: x.address, ...r })) };
      }
      const results: RecipientResult[] = [];
      for (const rc of req.recipients) results.push({ address: rc.address, ...(await runOnce(s, req, varsFor(s, req, rc.address))) });
      return { relay, results };
    },
  };
}
