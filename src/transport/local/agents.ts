/**
 * The daemon's side of the delivery agents: one child process per user (agent.ts), started on the
 * first delivery for that user and ended after a while without work, so that a burst of mail for one
 * person pays for one start. A delivery hands the agent the whole message at once (never half a
 * message); an mbox delivery's `mark` is passed to the caller, which records it before the agent may
 * write.
 *
 * Trusts nothing an agent says beyond the protocol's shapes. An agent that cannot become its user, or
 * that ends with work outstanding, answers every request it had: temporary failures, or uncertain for a
 * delivery it may have made. Never throws.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { LocalResult } from './results.js';
import type { MboxMark } from './mbox.js';
import { chunkFrame, END_FRAME, parseAnswer, type AgentAnswer, type DeliverJob, type VerifyJob } from './protocol.js';

/** How long an agent without work stays. */
const IDLE_MS = 30_000;

/** The agent program, next to this module. */
const AGENT = fileURLToPath(new URL('./agent.js', import.meta.url));

/** A request waiting for its answer. */
interface Waiting {
  answer: (a: AgentAnswer | { lost: string; sent: boolean }) => void;
  onMark?: (m: MboxMark) => Promise<boolean>;
  /** The agent may have acted on it (the message was whole, or an mbox write was allowed). */
  sent: boolean;
}

/** One running agent. */
class Agent {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<number, Waiting>();
  private seq = 0;
  private out = '';
  private idle: NodeJS.Timeout | undefined;
  private fatal: string | undefined;
  readonly ready: Promise<string | undefined>;
  ended = false;

  constructor(
    readonly user: string,
    private readonly warn: (text: string) => void,
    private readonly gone: (a: Agent) => void,
  ) {
    this.child = spawn(process.execPath, [AGENT, user], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8' },
      detached: true,
    });
    let readyDone: (why: string | undefined) => void = () => undefined;
    this.ready = new Promise((r) => (readyDone = r));
    this.child.stdin!.on('error', () => undefined);
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => this.read(d, readyDone));
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => this.warn(`delivery agent for ${user}: ${d.trim().split('\n')[0]}`));
    this.child.once('error', (err) => this.end(`the delivery agent could not start (${err.message})`, readyDone));
    this.child.once('close', (code, signal) =>
      this.end(this.fatal ?? `the delivery agent for ${user} ended (${signal ?? `exit ${code}`})`, readyDone),
    );
  }

  /** Handles answer lines. */
  private read(d: string, readyDone: (why: string | undefined) => void): void {
    this.out += d;
    let nl: number;
    while ((nl = this.out.indexOf('\n')) >= 0) {
      const a = parseAnswer(this.out.slice(0, nl));
      this.out = this.out.slice(nl + 1);
      if (!a) continue;
      if (a.type === 'ready') readyDone(undefined);
      else if (a.type === 'fatal') {
        this.fatal = a.reply;
        readyDone(a.reply);
      } else if (a.type === 'warn') this.warn(a.text);
      else if (a.type === 'mark') this.mark(a.seq, a.mark);
      else {
        const w = this.waiting.get(a.seq);
        this.waiting.delete(a.seq);
        w?.answer(a);
        this.schedule();
      }
    }
  }

  /** An mbox delivery asks to write: the caller records the mark, then the agent may go on. */
  private mark(seq: number, m: MboxMark): void {
    const w = this.waiting.get(seq);
    const record = w?.onMark ? w.onMark(m).catch(() => false) : Promise.resolve(false);
    void record.then((ok) => {
      if (w && ok) w.sent = true;
      this.write([Buffer.from(`${JSON.stringify({ seq, op: 'go', ok })}\n`)]);
    });
  }

  /** The agent is gone: every request still waiting gets an answer. */
  private end(why: string, readyDone: (why: string | undefined) => void): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.idle);
    readyDone(why);
    for (const w of this.waiting.values()) w.answer({ lost: why, sent: w.sent });
    this.waiting.clear();
    this.gone(this);
  }

  /** Frames waiting for the end of this turn of the event loop. */
  private pendingOut: Buffer[] = [];

  /** Writes frames to the agent: those of one turn of the event loop go in one write. */
  private write(frames: Buffer[]): void {
    if (this.ended) return;
    if (this.pendingOut.length === 0)
      setImmediate(() => {
        const all = this.pendingOut;
        this.pendingOut = [];
        if (!this.ended) this.child.stdin!.write(all.length === 1 ? all[0]! : Buffer.concat(all));
      });
    this.pendingOut.push(...frames);
  }

  /** Ends the agent once it has been idle a while; an idle agent does not keep this process alive. */
  private schedule(): void {
    clearTimeout(this.idle);
    if (this.waiting.size === 0) {
      this.idle = setTimeout(() => this.child.stdin!.end(), IDLE_MS).unref();
      this.hold(false);
    }
  }

  /** Whether the agent (its process and pipes) keeps this process alive: while it has work. */
  private hold(on: boolean): void {
    for (const h of [this.child, this.child.stdin, this.child.stdout, this.child.stderr] as Array<{
      ref?(): void;
      unref?(): void;
    } | null>)
      on ? h?.ref?.() : h?.unref?.();
  }

  /** Kills the agent and its process group (it runs as the user, who can stop it): every request still
   * waiting is answered with `why`. */
  kill(why: string): void {
    if (this.ended) return;
    this.fatal = why;
    try {
      process.kill(-this.child.pid!, 'SIGKILL');
    } catch {
      this.child.kill('SIGKILL');
    }
  }

  /** Sends a request (with its message, for a delivery) and resolves with its answer; an agent that has
   * not answered within deadlineMs is killed, so that no user can hold up the queue by stopping theirs. */
  request(
    req: { op: 'deliver'; job: DeliverJob } | { op: 'verify'; job: VerifyJob },
    deadlineMs: number,
    message?: Buffer,
    onMark?: (m: MboxMark) => Promise<boolean>,
  ): Promise<AgentAnswer | { lost: string; sent: boolean }> {
    clearTimeout(this.idle);
    this.hold(true);
    const seq = ++this.seq;
    return new Promise((resolve) => {
      const timer = setTimeout(
        () =>
          this.kill(
            `the delivery agent for ${this.user} did not answer within ${Math.round(deadlineMs / 1000)} s and was ended`,
          ),
        deadlineMs,
      );
      const answer = (a: AgentAnswer | { lost: string; sent: boolean }): void => {
        clearTimeout(timer);
        resolve(a);
      };
      if (this.ended) return answer({ lost: this.fatal ?? 'the delivery agent ended', sent: false });
      // a whole maildir or command delivery may happen as soon as the message is there
      const w: Waiting = { answer, onMark, sent: req.op === 'deliver' && req.job.kind !== 'mbox' };
      this.waiting.set(seq, w);
      const frames: Buffer[] = [Buffer.from(`${JSON.stringify({ seq, ...req })}\n`)];
      if (message) {
        if (message.length) frames.push(...chunkFrame(message));
        frames.push(END_FRAME);
      }
      this.write(frames);
    });
  }

  /** Ends the agent now (its input ends; deliveries it has whole still finish). */
  close(): void {
    this.child.stdin!.end();
  }
}

/** How long a mailbox write or a check may take before its agent is ended (a stopped agent never answers). */
const MAILBOX_DEADLINE_MS = 120_000;
/** How long past its own timeout a command's agent may take to answer (at most the timeout again). */
const COMMAND_GRACE_MS = 30_000;
/** How long an agent may take to start. */
const START_DEADLINE_MS = 30_000;

/** Waits for an agent to be ready (undefined) or to fail (why); one that does not start in time is ended. */
async function started(a: Agent): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((r) => {
    timer = setTimeout(() => {
      const why = `the delivery agent for ${a.user} did not start within ${START_DEADLINE_MS / 1000} s`;
      a.kill(why);
      r(`451 4.3.0 ${why}`);
    }, START_DEADLINE_MS);
  });
  try {
    return await Promise.race([a.ready, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The agents of this process, by user. */
export class AgentPool {
  private readonly agents = new Map<string, Agent>();

  constructor(private readonly warn: (text: string) => void) {}

  /** The running agent of a user, started when there is none. */
  private agentOf(user: string): Agent {
    let a = this.agents.get(user);
    if (!a || a.ended) {
      a = new Agent(user, this.warn, (x) => this.agents.get(user) === x && this.agents.delete(user));
      this.agents.set(user, a);
    }
    return a;
  }

  /** Makes one delivery as the user. */
  async deliver(
    user: string,
    job: DeliverJob,
    message: Buffer,
    onMark: (m: MboxMark) => Promise<boolean>,
  ): Promise<LocalResult> {
    const a = this.agentOf(user);
    const fatal = await started(a);
    if (fatal) return { outcome: /^5/.test(fatal) ? 'permfail' : 'tempfail', reply: fatal };
    const deadline =
      job.kind === 'command' ? job.timeoutMs + Math.min(COMMAND_GRACE_MS, job.timeoutMs) : MAILBOX_DEADLINE_MS;
    const r = await a.request({ op: 'deliver', job }, deadline, message, onMark);
    if ('lost' in r)
      return r.sent
        ? {
            outcome: 'uncertain',
            reply: `451 4.3.0 ${r.lost} during the delivery to ${job.recipient}; it may have been made`,
          }
        : { outcome: 'tempfail', reply: `451 4.3.0 ${r.lost}` };
    return r.type === 'result'
      ? { outcome: r.outcome, reply: r.reply }
      : { outcome: 'tempfail', reply: '451 4.3.0 the delivery agent answered out of turn' };
  }

  /** Checks whether an interrupted delivery happened; a string: delivered, absent, repaired or unknown. */
  async verify(user: string, job: VerifyJob): Promise<string> {
    const a = this.agentOf(user);
    if (await started(a)) return 'unknown';
    const r = await a.request({ op: 'verify', job }, MAILBOX_DEADLINE_MS);
    return 'lost' in r || r.type !== 'verified' ? 'unknown' : r.check;
  }

  /** Ends every agent. */
  close(): void {
    for (const a of this.agents.values()) a.close();
    this.agents.clear();
  }
}
