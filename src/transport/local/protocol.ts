/**
 * The conversation between the daemon and a delivery agent (agent.ts), a child process that runs as one
 * user. Requests are JSON lines on the agent's standard input; a delivery's message follows its request
 * as chunks (`LENGTH\n` and that many bytes, ended by `0\n`). Answers are JSON lines on its standard
 * output. An mbox delivery asks before it writes (`mark`) and waits for `go`, so that the daemon can
 * record where the entry goes first.
 *
 * Plain types and the framing; the agent trusts the daemon that started it, the daemon trusts nothing an
 * agent says beyond the shape checked here. Never throws.
 */
import type { Outcome } from '../../domain/outcome.js';
import type { MboxCheck, MboxMark } from './mbox.js';

/** One delivery an agent makes. */
export interface DeliverJob {
  kind: 'maildir' | 'mbox' | 'command';
  /** The Maildir folder or the mbox file. */
  path?: string;
  /** The command's argv (variables filled in). */
  argv?: string[];
  /** command: no "From " line before the message. */
  noFromLine?: boolean;
  /** mbox: the dot-lock is held by the daemon, or the agent takes it. */
  dotlock: 'held' | 'self';
  /** mbox: it may be created when missing. */
  create: boolean;
  /** Maildir: the delivery's key (maildir.ts). */
  key: string;
  sender: string;
  recipient: string;
  orig?: string;
  extension?: string;
  /** The host name, for Maildir file names. */
  host: string;
  timeoutMs: number;
}

/** One check, after a killed run, of whether a delivery happened. */
export type VerifyJob =
  | { kind: 'maildir'; path: string; key: string }
  | { kind: 'mbox'; mark: MboxMark; dotlock: 'held' | 'self' };

/** A request to an agent. */
export type AgentRequest =
  | { seq: number; op: 'deliver'; job: DeliverJob }
  | { seq: number; op: 'verify'; job: VerifyJob }
  | { seq: number; op: 'go'; ok: boolean };

/** An answer from an agent. */
export type AgentAnswer =
  | { type: 'ready'; uid: number }
  | { type: 'fatal'; reply: string }
  | { type: 'warn'; text: string }
  | { seq: number; type: 'mark'; mark: MboxMark }
  | { seq: number; type: 'result'; outcome: Outcome; reply: string }
  | { seq: number; type: 'verified'; check: MboxCheck | string };

/** The frames of a message body: chunks, then the end. */
export function chunkFrame(chunk: Buffer): Buffer[] {
  return [Buffer.from(`${chunk.length}\n`), chunk];
}
export const END_FRAME = Buffer.from('0\n');

/** Checks an answer's shape; undefined when it is not one. */
export function parseAnswer(line: string): AgentAnswer | undefined {
  try {
    const a = JSON.parse(line) as AgentAnswer;
    if (!a || typeof a !== 'object' || typeof a.type !== 'string') return undefined;
    if (a.type === 'result')
      return ['ok', 'tempfail', 'permfail', 'uncertain'].includes(a.outcome) && typeof a.reply === 'string'
        ? a
        : undefined;
    return a;
  } catch {
    return undefined;
  }
}

/**
 * Reads the request stream: JSON lines, each deliver request followed by its body. Calls onRequest for
 * every request, with the body (complete) for a delivery.
 */
export class RequestReader {
  private buf: Buffer = Buffer.alloc(0);
  private pending: { req: AgentRequest; parts: Buffer[]; need: number | null } | null = null;

  constructor(private readonly onRequest: (req: AgentRequest, body?: Buffer) => void) {}

  /** Takes more input. */
  push(data: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    for (;;) {
      if (this.pending && this.pending.need !== null) {
        if (this.buf.length < this.pending.need) return;
        this.pending.parts.push(this.buf.subarray(0, this.pending.need));
        this.buf = this.buf.subarray(this.pending.need);
        this.pending.need = null;
        continue;
      }
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) return;
      const line = this.buf.subarray(0, nl).toString('utf8');
      this.buf = this.buf.subarray(nl + 1);
      if (this.pending) {
        const n = Number(line);
        if (n === 0) {
          const p = this.pending;
          this.pending = null;
          this.onRequest(p.req, Buffer.concat(p.parts));
        } else this.pending.need = n;
        continue;
      }
      const req = JSON.parse(line) as AgentRequest;
      if (req.op === 'deliver') this.pending = { req, parts: [], need: null };
      else this.onRequest(req);
    }
  }
}
