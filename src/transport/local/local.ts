/**
 * The local transport: delivers the recipients of this host (local.* settings) to the targets their
 * expansion recorded: a user's mailbox (mbox in local.mail_dir, a Maildir in the home directory, the
 * delivery agent local.mda, or the LMTP server local.lmtp), a file or Maildir an alias named, or a
 * command. Every write and every command happens in the agent of the user it is for (agents.ts), never
 * in this process; an LMTP server is talked to from here.
 *
 * A daemon running as root creates a missing /var/mail/USER for the user (owner the user, group mail,
 * 0660, as Debian's tools expect) and holds its dot-lock while the agent writes, since only root and
 * group mail may create files there. Before anything is written, what a later run needs to verify the
 * delivery (Maildir name, mbox offset) is recorded durably through the request's record().
 *
 * Trusts the recorded targets (the expansion checked them) and the settings. Per-recipient results;
 * never throws.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { accountOf, accountOfSync, groupIdSync } from '../../accounts.js';
import type { LocalTarget } from '../../domain/envelope.js';
import type { DeliveryRequest, DeliveryResult, RecipientResult, Transport } from '../types.js';
import type { AgentPool } from './agents.js';
import { fillArgv } from './command.js';
import { dotLock } from './dotlock.js';
import { deliveryKey } from './maildir.js';
import type { MboxMark } from './mbox.js';
import type { DeliverJob, VerifyJob } from './protocol.js';
import type { LocalResult } from './results.js';

/** What the local transport needs of the settings. */
export interface LocalTransportSettings {
  hostname: string;
  mailbox: 'mbox' | 'maildir' | 'mda' | 'lmtp';
  mailDir: string;
  maildir: string;
  mda: string[];
  mdaFromLine: boolean;
  /** The LMTP server's transport, for mailbox: lmtp. */
  lmtp?: Transport;
  delimiter: string;
  caseless: boolean;
  commandTimeoutMs: number;
  pool: AgentPool;
}

/** A delivery's detail as the in-flight journal keeps it: whose agent can check it, and how. */
export interface LocalDetail extends Record<string, unknown> {
  user: string;
  verify: VerifyJob;
}

/** The whole message of a stream. */
/**
 * Bytes of message held in memory for local deliveries at once: a delivery waits for room before it
 * reads its message, so that many large messages delivered together cannot exhaust memory (one larger
 * than the whole budget runs alone).
 */
export const LOCAL_MEMORY_BUDGET = 64 * 1024 * 1024;
let inMemory = 0;
const waitingForRoom: Array<() => void> = [];

/** Takes room for size bytes (waiting while others hold it); resolves with the function that gives it back. */
export async function room(size: number): Promise<() => void> {
  const want = Math.min(Math.max(size, 1), LOCAL_MEMORY_BUDGET);
  while (inMemory > 0 && inMemory + want > LOCAL_MEMORY_BUDGET) await new Promise<void>((r) => waitingForRoom.push(r));
  inMemory += want;
  let given = false;
  return () => {
    if (given) return;
    given = true;
    inMemory -= want;
    for (const wake of waitingForRoom.splice(0)) wake();
  };
}

async function whole(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** The target of a recipient that came without one (queued by an older version, or a notice): its
 * local part as a user. */
function targetOf(s: LocalTransportSettings, r: DeliveryRequest['recipients'][number]): LocalTarget {
  if (r.local) return r.local;
  const at = r.address.lastIndexOf('@');
  let lp = at < 0 ? r.address : r.address.slice(0, at);
  const cut = s.delimiter ? lp.indexOf(s.delimiter) : -1;
  const extension = cut > 0 ? lp.slice(cut + s.delimiter.length) : undefined;
  if (cut > 0) lp = lp.slice(0, cut);
  const a = accountOfSync(lp, { caseless: s.caseless });
  if (!a) return { kind: 'refused', reply: `550 5.1.1 <${r.address}>: no such user here` };
  return { kind: 'mailbox', user: a.name, ...(extension ? { extension } : {}) };
}

/** Makes a missing mbox in the mail folder for its user (root only: the folder is root's and group mail's). */
function ensureSpoolMailbox(file: string, uid: number): void {
  const gid = groupIdSync('mail') ?? 0;
  try {
    const fd = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      0o660,
    );
    try {
      fs.fchownSync(fd, uid, gid);
      fs.fchmodSync(fd, 0o660);
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** Builds the local transport. */
export function localTransport(s: LocalTransportSettings): Transport {
  return {
    deliver: async (req): Promise<DeliveryResult> => {
      const results: RecipientResult[] = [];
      // LMTP recipients by the address the server is given (user@hostname) and the one they have here
      const lmtp = new Map<string, DeliveryRequest['recipients'][number]>();
      for (const r of req.recipients) {
        const t = targetOf(s, r);
        if (t.kind === 'mailbox' && s.mailbox === 'lmtp' && !lmtp.has(`${t.user}@${s.hostname}`))
          lmtp.set(`${t.user}@${s.hostname}`, r);
        else results.push({ address: r.address, ...(await deliverOne(s, req, r, t)) });
      }
      if (lmtp.size) results.push(...(await viaLmtp(s, req, lmtp)));
      return { relay: 'local', results };
    },
    close: async () => {
      await s.lmtp?.close?.();
    },
  };
}

/** Hands the mailbox recipients to the LMTP server as user@hostname; results under their own addresses. */
async function viaLmtp(
  s: LocalTransportSettings,
  req: DeliveryRequest,
  byServer: Map<string, DeliveryRequest['recipients'][number]>,
): Promise<RecipientResult[]> {
  const own = (a: string): string => byServer.get(a)?.address ?? a;
  if (!s.lmtp)
    return [...byServer.values()].map((r) => ({
      address: r.address,
      outcome: 'tempfail',
      reply: '451 4.3.5 local.mailbox is lmtp but local.lmtp is not set',
    }));
  const result = await s.lmtp.deliver({
    ...req,
    recipients: [...byServer].map(([address, r]) => ({ ...r, address })),
    message: (to) => req.message((to ?? [...byServer.keys()]).map(own)),
  });
  return result.results.map((x) => ({ ...x, address: own(x.address) }));
}

/** Delivers one recipient through the agent of the user it is for. */
async function deliverOne(
  s: LocalTransportSettings,
  req: DeliveryRequest,
  r: DeliveryRequest['recipients'][number],
  t: LocalTarget,
): Promise<LocalResult> {
  if (t.kind === 'refused') return { outcome: 'permfail', reply: t.reply };
  const account = accountOfSync(t.user) ?? (await accountOf(t.user));
  if (!account) return { outcome: 'permfail', reply: `550 5.1.1 <${r.address}>: ${t.user} is no user here` };
  const base = {
    dotlock: 'self' as const,
    create: true,
    key: deliveryKey(req.id, r.attempts ?? 0, r.address),
    sender: req.sender,
    recipient: r.address,
    orig: r.orig,
    host: s.hostname,
    timeoutMs: s.commandTimeoutMs,
  };
  let job: DeliverJob;
  if (t.kind === 'command') job = { ...base, kind: 'command', argv: t.argv };
  else if (t.kind === 'file') {
    // the mail folder's files are its users' mailboxes: an alias or .forward never names one (the
    // daemon makes and locks files there as root, for the mailbox's own user alone)
    if (path.dirname(path.resolve(t.path)) === path.resolve(s.mailDir))
      return {
        outcome: 'permfail',
        reply: `550 5.7.1 <${r.address}>: ${t.path} is in the mail folder ${s.mailDir}: only its user's own mail goes there`,
      };
    job = { ...base, kind: t.path.endsWith('/') ? 'maildir' : 'mbox', path: t.path };
  } else if (s.mailbox === 'maildir') job = { ...base, kind: 'maildir', path: path.join(account.home, s.maildir) };
  else if (s.mailbox === 'mda') {
    if (!s.mda.length) return { outcome: 'tempfail', reply: '451 4.3.5 local.mailbox is mda but local.mda is empty' };
    const ctx = { ...base, extension: t.extension, user: account.name, home: account.home, shell: account.shell };
    job = { ...base, kind: 'command', argv: fillArgv(s.mda, ctx), extension: t.extension };
    if (!s.mdaFromLine) job.noFromLine = true;
  } else job = { ...base, kind: 'mbox', path: path.join(s.mailDir, account.name) };
  if (t.kind === 'mailbox') job.extension = t.extension;
  return runJob(s, req, r.address, account.name, account.uid, job, t.kind === 'mailbox');
}

/** Runs a job in the user's agent; for an mbox in the mail folder, a root daemon holds the dot-lock. */
async function runJob(
  s: LocalTransportSettings,
  req: DeliveryRequest,
  address: string,
  user: string,
  uid: number,
  job: DeliverJob,
  ownMailbox: boolean,
): Promise<LocalResult> {
  let release: (() => Promise<void>) | undefined;
  // room for the message in memory first, before any lock is held while waiting for it
  const giveBack = await room(req.size);
  try {
    if (ownMailbox && job.kind === 'mbox' && process.geteuid?.() === 0 && path.dirname(job.path!) === s.mailDir) {
      ensureSpoolMailbox(job.path!, uid);
      const dl = await dotLock(job.path!);
      if (!('release' in dl))
        return {
          outcome: 'tempfail',
          reply: `451 4.2.0 ${'busy' in dl ? dl.busy : 'denied' in dl ? dl.denied : dl.failed}`,
        };
      release = dl.release;
      job.dotlock = 'held';
      job.create = false;
    }
    // a Maildir delivery's name is known before it is written: recorded now, it is all a later run needs
    let check: VerifyJob | undefined =
      job.kind === 'maildir' ? { kind: 'maildir', path: job.path!, key: job.key } : undefined;
    if (check && req.record) await req.record(address, detail(user, check));
    // an mbox entry is recorded (its offset) before its first byte is written; a command cannot be
    // checked afterwards, so its hand-over is noted as any other
    const message = await whole(req.message([address], { recorded: job.kind !== 'command' && !!req.record }));
    const onMark = async (m: MboxMark): Promise<boolean> => {
      // the agent runs as the user: what it says it writes must be the file it was given (a later check
      // takes that file's dot-lock as root)
      if (job.kind !== 'mbox' || m.file !== job.path) return false;
      check = { kind: 'mbox', mark: m, dotlock: job.dotlock };
      if (req.record) await req.record(address, detail(user, check));
      return true;
    };
    const result = await s.pool.deliver(user, job, message, onMark);
    return result.outcome === 'uncertain' && check ? await settleLost(s, user, check, result) : result;
  } catch (err) {
    return { outcome: 'tempfail', reply: `451 4.3.0 ${(err as Error).message}` };
  } finally {
    await release?.();
    giveBack();
  }
}

/** A delivery whose agent ended in the middle (killed, out of memory) is checked at once by a new agent,
 * under the locks still held: found whole, it is delivered; not there or cut back, it is tried again
 * (before anything else is appended after a half-written entry); otherwise it stays uncertain. */
async function settleLost(
  s: LocalTransportSettings,
  user: string,
  check: VerifyJob,
  lost: LocalResult,
): Promise<LocalResult> {
  const found = await s.pool.verify(user, check);
  if (found === 'delivered')
    return { outcome: 'ok', reply: '250 2.0.0 delivered (found whole after the delivery agent ended)' };
  if (found === 'absent' || found === 'repaired')
    return {
      outcome: 'tempfail',
      reply: `${lost.reply.replace(/; it may have been made$/, '')}; ${found === 'repaired' ? 'its half-written copy was removed' : 'nothing was written'}`,
    };
  return lost;
}

/** The journal detail of a delivery. */
function detail(user: string, verify: VerifyJob): LocalDetail {
  return { user, verify };
}

/** Checks, after a killed run, whether a recorded local delivery happened: delivered, absent (or cut
 * back: repaired), or unknown. */
export async function verifyLocal(
  s: Pick<LocalTransportSettings, 'pool' | 'mailDir'>,
  d: LocalDetail,
): Promise<string> {
  if (!d || typeof d.user !== 'string' || !d.verify || typeof d.verify !== 'object') return 'unknown';
  const v = d.verify;
  let release: (() => Promise<void>) | undefined;
  try {
    if (v.kind === 'mbox' && v.dotlock === 'held') {
      if (process.geteuid?.() !== 0) return 'unknown';
      const dl = await dotLock(v.mark.file);
      if (!('release' in dl)) return 'unknown';
      release = dl.release;
    }
    return await s.pool.verify(d.user, v);
  } finally {
    await release?.();
  }
}
