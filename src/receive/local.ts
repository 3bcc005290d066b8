/**
 * The sendmail door: a message on standard input from a local program, into the spool.
 *
 * Input is untrusted bytes with LF (or CRLF) line ends. Lines become CRLF; without -i a line holding a
 * single dot ends the message; a leading mbox "From " line is dropped. Missing From, Date and
 * Message-ID are added, Bcc is always removed, -t takes recipients from To, Cc and Bcc (command-line
 * recipients are added to them, as Postfix does). Called as qmail-inject, qmail's rules for the header
 * and the envelope sender apply instead (qmail-rules.ts). Fails with FerryError: usage (bad address), data
 * (no recipients, bad header), not-allowed (a sender the user may not use), spool-* (could not store).
 */
import os from 'node:os';
import { checkAddress, qualify } from '../domain/address.js';
import type { Envelope, NotifyKeyword } from '../domain/envelope.js';
import { newRecipient } from '../domain/envelope.js';
import { expandRecipients } from '../local/recipients.js';
import { FerryError } from '../errors.js';
import type { Config } from '../config/types.js';
import type { Readable } from 'node:stream';
import { nulError, type Step } from '../scan/steps.js';
import {
  addressesIn,
  displayName,
  fieldValue,
  fold,
  qualifyField,
  receivedHeader,
  rfc5322Date,
  type HeaderField,
} from '../scan/headers.js';
import type { SpoolWriter } from '../spool/writer.js';
import { intake, tooLarge, type BlockingSource } from './intake.js';
import { qmailHeaders, recipientFields, returnPathOf, type QmailRules } from './qmail-rules.js';
import { checkLocalSender } from './senders.js';

/** A local submission's options (from the sendmail command line). */
export interface Submission {
  sender?: string; // undefined: the user's own address; "" null sender
  fullName?: string;
  recipients: string[];
  extract: boolean; // -t
  dotEnds: boolean; // no -i / -oi
  deliveryMode: 'background' | 'interactive' | 'queue';
  notify?: NotifyKeyword[];
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  /** qmail-inject's rules for the header and the envelope sender (the qmail-inject name); absent: sendmail's. */
  qmail?: QmailRules;
}

/** Turns local text into CRLF lines; ends at a lone "." when dotEnds; drops a leading "From " line;
 * refuses a NUL byte (exit 65). */
export class LocalLines implements Step {
  /** The unfinished last line, as chunks (joined once it ends: no quadratic re-splitting). */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private first = true;
  /** A lone dot ended the message: the rest of the input is not read. */
  done = false;
  constructor(
    private readonly dotEnds: boolean,
    private readonly maxBytes = Infinity,
  ) {}

  push(chunk: Buffer): Buffer | undefined {
    if (this.done) return undefined;
    if (chunk.includes(0)) throw nulError();
    const nl = chunk.lastIndexOf(0x0a);
    if (nl < 0) {
      this.partial.push(chunk);
      this.partialBytes += chunk.length;
      if (this.partialBytes > this.maxBytes) throw tooLarge(this.maxBytes);
      return undefined;
    }
    const lines = Buffer.concat([...this.partial, chunk.subarray(0, nl + 1)])
      .toString('latin1')
      .split(/\r?\n/);
    lines.pop(); // the empty rest after the last line end
    this.partial = [chunk.subarray(nl + 1)];
    this.partialBytes = chunk.length - nl - 1;
    return this.convert(lines);
  }

  end(): Buffer | undefined {
    if (this.done || this.partialBytes === 0) return undefined;
    return this.convert([Buffer.concat(this.partial).toString('latin1')]);
  }

  /** Converts complete lines; stops at the terminating dot. */
  private convert(lines: string[]): Buffer {
    const out: string[] = [];
    for (const line of lines) {
      if (this.done) break;
      if (this.first) {
        this.first = false;
        if (line.startsWith('From ')) continue;
      }
      if (this.dotEnds && line === '.') {
        this.done = true;
        break;
      }
      out.push(line.replace(/\r/g, '\r\n'), '\r\n');
    }
    return Buffer.from(out.join(''), 'latin1');
  }
}

/** Local facts about the submitting user. */
export interface LocalUser {
  name: string;
  uid: number;
}

/** The submitting user, as the system knows it. */
export function currentUser(): LocalUser {
  const info = os.userInfo();
  return { name: info.username, uid: info.uid };
}

/** Checks and qualifies a list of addresses; throws a usage or data error naming the bad one. */
function checkAll(list: string[], domain: string, code: 'usage' | 'data'): string[] {
  return list.map((raw) => {
    const addr = qualify(raw.trim().replace(/^<(.*)>$/, '$1'), domain);
    const c = checkAddress(addr);
    if (!c.ok) throw new FerryError(code, `bad address ${JSON.stringify(raw)}: ${c.reason}`);
    return c.address;
  });
}

/** Splits command-line recipients: each word may hold a comma-separated list. */
function splitRecipients(words: string[]): string[] {
  return words
    .flatMap((w) => w.split(','))
    .map((w) => w.trim())
    .filter(Boolean);
}

/** How a submission is written: by whom, and whether this process may vouch for its origin. */
export interface SubmitOptions {
  /** The submitter (default: this process's user). */
  user?: LocalUser;
  /** The spool owner's uid, whose submissions (as root's) may use any sender (default: this process's). */
  ownerUid?: number;
  /** Write the Received line naming the user (false for a drop file: the daemon writes it, from the
   * file's owner, since a line written by the submitter's own process proves nothing). */
  received?: boolean;
  /** Told, before the message is committed, whether its envelope sender was named (by -f, or for
   * qmail-inject by the environment or a Return-Path) rather than being the user's own default. */
  senderNamed?: (named: boolean) => void;
}

/** Reads a message from a local program and commits it; resolves with its envelope. */
export async function submitLocal(
  cfg: Config,
  spool: SpoolWriter,
  sub: Submission,
  input: Readable | BlockingSource,
  opts: SubmitOptions = {},
): Promise<Envelope> {
  const user = opts.user ?? currentUser();
  const domain = cfg.hostname;
  const argvRcpts = dedupe(checkAll(splitRecipients(sub.recipients), domain, 'usage'));
  const ownSender = `${user.name}@${domain}`;
  let sender =
    sub.sender !== undefined
      ? sub.sender === ''
        ? ''
        : checkAll([sub.sender], domain, 'usage')[0]!
      : sub.qmail
        ? checkAll([sub.qmail.sender], domain, 'usage')[0]!
        : ownSender;
  // a sender qmail-inject takes from the environment or a Return-Path is a named one unless it is the
  // user's own address; -f always names one
  const namedUnlessOwn = (): boolean => sender.toLowerCase() !== ownSender.toLowerCase();
  let named = sub.sender !== undefined || namedUnlessOwn();
  const checkSender = (): void =>
    checkLocalSender(cfg.submission.local_senders, {
      login: user.name,
      uid: user.uid,
      ownerUid: opts.ownerUid ?? process.geteuid?.() ?? -1,
      sender: named ? sender : undefined,
    });
  checkSender();
  const from = sub.qmail ? checkAll([sub.qmail.from], domain, 'usage')[0]! : undefined;
  const now = new Date();
  let recipients = argvRcpts;
  let added: { messageId?: string } = {};
  return intake(spool, input, {
    // a lone dot ends the message even while the sender keeps its end of the pipe open (intake stops
    // reading once the step is done)
    pre: [new LocalLines(sub.dotEnds, cfg.limits.message_size)],
    maxSize: cfg.limits.message_size,
    maxHeaderBytes: cfg.limits.header_size,
    maxHops: cfg.limits.received_hops,
    minFree: cfg.limits.spool_minfree,
    edit: (fields, id) => {
      const rp = sub.qmail?.returnPath && sub.sender === undefined ? returnPathOf(fields) : undefined;
      if (rp !== undefined) {
        // qmail-inject: an incoming Return-Path names the envelope sender, as -f would
        sender = rp === '' ? '' : checkAll([rp], domain, 'data')[0]!;
        named = namedUnlessOwn();
        checkSender();
      }
      if (sub.extract) {
        const names = sub.qmail ? recipientFields(fields) : ['to', 'cc', 'bcc'];
        recipients = dedupe([...checkAll(addressesIn(fields, names), domain, 'data'), ...argvRcpts]);
      }
      if (recipients.length === 0)
        throw new FerryError('no-recipients', 'no recipient addresses found in the message header');
      if (recipients.length > cfg.limits.recipients) {
        throw new FerryError(
          'data',
          `too many recipients (${recipients.length}; limits.recipients is ${cfg.limits.recipients})`,
        );
      }
      const edit = localHeaders(fields, {
        id,
        now,
        sender,
        fullName: sub.fullName,
        hostname: domain,
        user,
        recipients,
        received: opts.received !== false,
        qmail: sub.qmail && from ? { rules: sub.qmail, from } : undefined,
      });
      added = edit.added;
      opts.senderNamed?.(named);
      return edit;
    },
    envelope: async (fields, id) => ({
      version: 1,
      arrival: now.toISOString(),
      sender,
      // this host's own recipients become the targets of their aliases (an unknown one is bounced)
      recipients: await expandRecipients(
        cfg,
        recipients.map((r) => newRecipient(r, sub.notify ? { notify: sub.notify } : {})),
      ),
      origin: { door: 'sendmail', user: user.name, uid: user.uid },
      protocol: 'local',
      ret: sub.ret,
      envid: sub.envid,
      smtputf8: [sender, ...recipients].some((a) => /[^\x00-\x7f]/.test(a)) || undefined, // already in A-labels: only UTF-8 local parts count
      messageId: added.messageId ?? messageIdOf(fields) ?? `<${id}@${domain}>`,
    }),
  });
}

/** Removes repeated addresses, keeping the first. */
function dedupe(list: string[]): string[] {
  const seen = new Set<string>();
  return list.filter((a) => {
    const k = a.toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The Message-ID value of a header section, if it has one. */
function messageIdOf(fields: HeaderField[]): string | undefined {
  const f = fields.find((x) => x.lower === 'message-id');
  return f ? fieldValue(f) : undefined;
}

/** Header edits of the sendmail door: Received first (unless received is false), missing From/Date/Message-ID
 * after, no Bcc; with o.qmail, qmail-inject's additions and removals (qmail-rules.ts) after the Received. */
export function localHeaders(
  fields: HeaderField[],
  o: {
    id: string;
    now: Date;
    sender: string;
    fullName?: string;
    hostname: string;
    user: LocalUser;
    recipients: string[];
    received?: boolean;
    from?: boolean;
    /** qmail-inject's additions and removals instead of sendmail's, with the From address to add. */
    qmail?: { rules: QmailRules; from: string };
  },
): {
  prepend: string;
  append: string;
  drop: Set<string>;
  added: { messageId?: string };
  replace: (f: HeaderField) => string | undefined;
} {
  const has = (n: string): boolean => fields.some((f) => f.lower === n);
  const prepend =
    o.received === false
      ? ''
      : receivedHeader({
          hostname: o.hostname,
          id: o.id,
          protocol: 'local',
          date: o.now,
          uid: o.user.uid,
          user: o.user.name,
          recipients: o.recipients,
        });
  // a bare local name in an address field (cron's "From: root (Cron Daemon)", "To: root") becomes a
  // whole address before any route's maps look at it
  const replace = (f: HeaderField): string | undefined => qualifyField(f, o.hostname);
  if (o.qmail) {
    const q = qmailHeaders(fields, { ...o, ...o.qmail });
    return { prepend, append: q.append, drop: q.drop, added: q.added, replace };
  }
  let append = '';
  const added: { messageId?: string } = {};
  if (!has('from') && o.from !== false) {
    const addr = o.sender || `${o.user.name}@${o.hostname}`;
    const from = o.fullName ? `${displayName(o.fullName)} <${addr}>` : addr;
    append += fold(`From: ${from}`);
  }
  if (!has('date')) append += `Date: ${rfc5322Date(o.now)}\r\n`;
  if (!has('message-id')) {
    added.messageId = `<${o.id}@${o.hostname}>`;
    append += `Message-ID: ${added.messageId}\r\n`;
  }
  return { prepend, append, drop: new Set(['bcc']), added, replace };
}
