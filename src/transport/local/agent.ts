/**
 * A delivery agent: the child process that writes into one user's mailboxes and runs that user's
 * commands, as that user. Started by the daemon (agents.ts) with the user's name; when started as root
 * it first takes the user's groups, group and user id (initgroups, setgid, setuid: in that order, and
 * before it reads a single request), so that nothing it does afterwards can touch another user's files.
 * Then it answers requests (protocol.ts) until its input ends, finishing the deliveries whose message it
 * has whole, and exits. A message is written only once all of it has arrived, so a daemon that dies
 * mid-transfer leaves nothing half-written.
 *
 * Trusts the daemon that started it; re-checks every file it writes (maildir.ts, mbox.ts). A request it
 * cannot carry out gets a result saying why; it exits with a `fatal` answer only when it cannot become
 * the user.
 */
import { accountOf, accountOfSync, type Account } from '../../accounts.js';
import { deliverCommand } from './command.js';
import { mailboxForm, seenHere } from './format.js';
import { deliverMaildir, verifyMaildir } from './maildir.js';
import { deliverMbox, verifyMbox, type MboxMark } from './mbox.js';
import { RequestReader, type AgentAnswer, type AgentRequest, type DeliverJob, type VerifyJob } from './protocol.js';
import type { LocalResult } from './results.js';

/** Answers waiting for the end of this turn of the event loop: they go in one write. */
let pendingOut: string[] = [];

/** Writes one answer line (with the others of this turn). */
function send(a: AgentAnswer): void {
  if (pendingOut.length === 0) setImmediate(flushOut);
  pendingOut.push(`${JSON.stringify(a)}\n`);
}

/** Writes the answers waiting (a pipe's stdout is written synchronously: they are out on return). */
function flushOut(): void {
  if (!pendingOut.length) return;
  const text = pendingOut.join('');
  pendingOut = [];
  process.stdout.write(text);
}

/** Ends the agent once its answers are out. */
function exit(): void {
  flushOut();
  process.exit(0);
}

/** Becomes the user: groups, group, user. Returns a reason when it cannot. */
function become(a: Account): string | undefined {
  const euid = process.geteuid?.() ?? -1;
  if (euid === a.uid) return undefined;
  if (euid !== 0)
    return `ferrymail runs as uid ${euid} and cannot deliver as ${a.name}; run the daemon as root or alias ${a.name}`;
  try {
    (process as unknown as { initgroups(user: string, group: number): void }).initgroups(a.name, a.gid);
    process.setgid!(a.gid);
    process.setuid!(a.uid);
  } catch (err) {
    return `cannot become ${a.name}: ${(err as Error).message}`;
  }
  return process.geteuid?.() === a.uid && process.getuid?.() === a.uid ? undefined : `cannot become ${a.name}`;
}

/** Deliveries under way, and whether input has ended. */
let busy = 0;
let ending = false;
let account: Account;
/** Answers to mark requests, by seq. */
const waitingGo = new Map<number, (ok: boolean) => void>();
/** mbox deliveries to one file go one after the other. */
const mboxChains = new Map<string, Promise<unknown>>();
const warned = new Set<string>();

/** Runs fn after the last mbox job of the same file. */
function serial<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const prev = mboxChains.get(file) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  mboxChains.set(
    file,
    next.catch(() => undefined),
  );
  return next;
}

/** Tells the daemon once about something it should log. */
function warnOnce(text: string): void {
  if (warned.has(text)) return;
  warned.add(text);
  send({ type: 'warn', text });
}

/** Makes one delivery. */
async function deliver(seq: number, raw: DeliverJob, message: Buffer): Promise<LocalResult> {
  // a command or file an alias named: the trace header names the alias's address, as Postfix writes it
  const job = raw.recipient.includes('@') ? raw : { ...raw, recipient: raw.orig ?? raw.recipient };
  if (seenHere(message, job.recipient))
    return {
      outcome: 'permfail',
      reply: `554 5.4.6 mail forwarding loop for ${job.recipient} (a Delivered-To of it is in the message)`,
    };
  if (job.kind === 'maildir') {
    const form = mailboxForm(message, { sender: job.sender, recipient: job.recipient, mbox: false });
    return deliverMaildir(job.path!, form.data, job.key, job.host);
  }
  if (job.kind === 'mbox') {
    const form = mailboxForm(message, { sender: job.sender, recipient: job.recipient, mbox: true });
    return serial(job.path!, () =>
      deliverMbox(job.path!, form.data, form.fromLine!, {
        dotlock: job.dotlock,
        create: job.create,
        warn: warnOnce,
        mark: (mark: MboxMark) =>
          new Promise<boolean>((resolve) => {
            waitingGo.set(seq, resolve);
            send({ seq, type: 'mark', mark });
          }),
      }),
    );
  }
  const form = mailboxForm(message, { sender: job.sender, recipient: job.recipient, mbox: true });
  const data = Buffer.concat([
    Buffer.from(job.noFromLine ? '' : form.fromLine!),
    mailboxForm(message, { ...job, mbox: false }).data,
  ]);
  return deliverCommand(
    job.argv!,
    data,
    { ...job, user: account.name, home: account.home, shell: account.shell },
    job.timeoutMs,
  );
}

/** Makes one check. */
function verify(job: VerifyJob): Promise<string> {
  if (job.kind === 'maildir') return Promise.resolve(verifyMaildir(job.path, job.key));
  return serial(job.mark.file, () => verifyMbox(job.mark, { dotlock: job.dotlock, warn: warnOnce }));
}

/** Handles one request. */
function handle(req: AgentRequest, body?: Buffer): void {
  if (req.op === 'go') {
    waitingGo.get(req.seq)?.(req.ok);
    waitingGo.delete(req.seq);
    return;
  }
  busy++;
  const work: Promise<AgentAnswer> =
    req.op === 'deliver'
      ? deliver(req.seq, req.job, body ?? Buffer.alloc(0)).then((r) => ({ seq: req.seq, type: 'result', ...r }))
      : verify(req.job).then((check) => ({ seq: req.seq, type: 'verified', check }) as AgentAnswer);
  work
    .catch((err: Error) => ({
      seq: req.seq,
      type: 'result' as const,
      outcome: 'tempfail' as const,
      reply: `451 4.3.0 ${err.message}`,
    }))
    .then((a) => {
      send(a as AgentAnswer);
      busy--;
      if (ending && busy === 0) exit();
    });
}

/** Becomes the user named on the command line and serves requests until input ends. */
async function main(): Promise<void> {
  const name = process.argv[2] ?? '';
  const a = accountOfSync(name) ?? (await accountOf(name));
  if (!a) return send({ type: 'fatal', reply: `550 5.1.1 ${name} is no user here` });
  const why = become(a);
  if (why) return send({ type: 'fatal', reply: `451 4.3.0 ${why}` });
  account = a;
  process.umask(0o077);
  try {
    process.chdir(a.home || '/');
  } catch {
    process.chdir('/');
  }
  send({ type: 'ready', uid: process.geteuid?.() ?? -1 });
  const reader = new RequestReader(handle);
  process.stdin.on('data', (d: Buffer) => reader.push(d));
  process.stdin.on('end', () => {
    ending = true;
    if (busy === 0) exit();
  });
}

void main();
