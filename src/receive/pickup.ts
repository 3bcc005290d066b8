/**
 * The daemon's door for drop files (spool/drop.ts): messages of local users who may not write the spool.
 *
 * The submitter is the drop file's owner, which the kernel vouches for: the envelope records that uid and
 * its user name, the log line and the Received header name them, and submission.local_senders is checked
 * against them. Nothing else in the file is trusted: the trailer's envelope request is checked field by
 * field, and the message passes the same intake as every other door (bare line ends and NUL refused,
 * size and header limits, loop check), with the Received line written here.
 *
 * Failures: a file that is refused (bad request, content, sender) moves to corrupt/ with a log line; a
 * spool that cannot take the message now leaves the file for the next pickup. Never throws for one file.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import type { Config } from '../config/types.js';
import { checkAddress } from '../domain/address.js';
import { newRecipient, type Envelope, type NotifyKeyword } from '../domain/envelope.js';
import { FerryError, isFerryError } from '../errors.js';
import { expandRecipients } from '../local/recipients.js';
import type { Logger } from '../log/logger.js';
import {
  claimDrop,
  DropRefused,
  finishPickup,
  listDrops,
  rejectPickup,
  returnPickup,
  type Claimed,
  type DropRequest,
} from '../spool/drop.js';
import type { Store } from '../spool/store.js';
import type { MessageWriter, SpoolWriter } from '../spool/writer.js';
import { LineEndGuard } from '../scan/steps.js';
import { fieldValue } from '../scan/headers.js';
import { intake } from './intake.js';
import { localHeaders, type LocalUser } from './local.js';
import { checkLocalSender } from './senders.js';
import { userName } from '../accounts.js';

/** What a pickup needs. */
export interface PickupDeps {
  spool: SpoolWriter;
  store: Store;
  log: Logger;
  onMessage?: (env: Envelope) => void;
}

/** Takes every ready drop file into the queue; resolves with how many were queued. */
export async function pickupDrops(cfg: Config, deps: PickupDeps): Promise<number> {
  let n = 0;
  for (const name of listDrops(deps.spool.layout)) {
    const r = await pickupOne(cfg, deps, name);
    if (r === 'queued') n++;
    if (r === 'later') break; // the spool cannot take mail now: the rest waits too
  }
  return n;
}

/** Picks up one drop file. */
async function pickupOne(
  cfg: Config,
  deps: PickupDeps,
  name: string,
): Promise<'queued' | 'refused' | 'gone' | 'later'> {
  let w: MessageWriter;
  try {
    w = await deps.spool.begin();
  } catch (err) {
    deps.log.log('error', 'drop file not picked up: the spool cannot take it now', {
      file: name,
      error: (err as Error).message,
    });
    return 'later';
  }
  const lock = await deps.store.lockMessage(w.id, 0).catch(() => null);
  let claimed: Claimed | null = null;
  try {
    claimed = lock ? claimDrop(deps.spool.layout, name, w.id, cfg.limits.message_size) : null;
    if (!claimed) {
      await w.abort();
      return 'gone';
    }
    const env = await take(cfg, deps.spool, w, claimed);
    finishPickup(deps.spool.layout, w.id);
    deps.onMessage?.(env);
    return 'queued';
  } catch (err) {
    await w.abort();
    return failed(deps, name, w.id, claimed, err);
  } finally {
    if (claimed && claimed.fd >= 0) fs.close(claimed.fd, () => undefined);
    await lock?.release();
  }
}

/** Deals with a drop file that could not be queued: refused ones go to corrupt/, the rest wait. */
function failed(
  deps: PickupDeps,
  name: string,
  id: string,
  claimed: Claimed | null,
  err: unknown,
): 'refused' | 'later' {
  const who = claimed ? { uid: claimed.uid } : {};
  // only a spool without room is a reason to wait: anything else about this file would fail again and
  // must not hold up the drop files behind it
  if (!spoolFull(err)) {
    if (claimed) rejectPickup(deps.spool.layout, id);
    deps.log.log('warn', 'drop file refused; kept in corrupt/', { file: name, ...who, reason: (err as Error).message });
    return 'refused';
  }
  if (claimed) returnPickup(deps.spool.layout, id);
  deps.log.log('error', 'drop file not picked up: the spool cannot take it now', {
    file: name,
    ...who,
    error: (err as Error).message,
  });
  return 'later';
}

/** True for a spool that has no room now (the file waits in drop/ for the next pickup). */
function spoolFull(err: unknown): boolean {
  if (err instanceof DropRefused) return false;
  const code = (err as NodeJS.ErrnoException)?.code;
  return isFerryError(err, 'spool-full') || code === 'ENOSPC' || code === 'EDQUOT';
}

/** Streams a claimed drop file through the intake into the writer already begun. */
async function take(cfg: Config, spool: SpoolWriter, w: MessageWriter, c: Claimed): Promise<Envelope> {
  const user: LocalUser = { name: await userName(c.uid), uid: c.uid };
  const req = checkRequest(cfg, c.request);
  const sender = req.sender ?? `${user.name}@${cfg.hostname}`;
  checkLocalSender(cfg.submission.local_senders, {
    login: user.name,
    uid: user.uid,
    ownerUid: process.geteuid?.() ?? -1,
    sender: req.sender ?? undefined,
  });
  const source = c.length > 0 ? fs.createReadStream('', { fd: c.fd, start: 0, end: c.length - 1 }) : Readable.from([]);
  if (c.length > 0) c.fd = -1; // the stream owns the descriptor now and closes it
  source.on('error', () => undefined); // a read error ends the intake through 'close'
  try {
    return await takeFrom(cfg, spool, w, source, { user, req, sender });
  } finally {
    // the descriptor is closed only once no read is under way on it
    if (!source.closed) {
      const closed = once(source, 'close');
      source.destroy();
      await closed;
    }
  }
}

/** The intake of one drop file's message from its stream. */
async function takeFrom(
  cfg: Config,
  spool: SpoolWriter,
  w: MessageWriter,
  source: Readable,
  { user, req, sender }: { user: LocalUser; req: DropRequest; sender: string },
): Promise<Envelope> {
  const now = new Date();
  const recipients = req.recipients.map((r) => r.address);
  let messageId: string | undefined;
  const begun: SpoolWriter = { layout: spool.layout, begin: async () => w };
  return intake(begun, source, {
    pre: [new LineEndGuard('reject')],
    maxSize: cfg.limits.message_size,
    maxHeaderBytes: cfg.limits.header_size,
    maxHops: cfg.limits.received_hops,
    minFree: cfg.limits.spool_minfree,
    edit: (fields, id) => {
      // From was the submitter's to add; the sendmail door removes Bcc, -bs keeps the header as sent
      const edit = localHeaders(fields, { id, now, sender, hostname: cfg.hostname, user, recipients, from: false });
      const mid = fields.find((f) => f.lower === 'message-id');
      messageId = edit.added.messageId ?? (mid ? fieldValue(mid) : undefined);
      return {
        prepend: edit.prepend,
        append: edit.append,
        drop: req.door === 'sendmail' ? edit.drop : new Set<string>(),
        replace: edit.replace,
      };
    },
    envelope: async () => ({
      version: 1,
      arrival: now.toISOString(),
      sender,
      recipients: await expandRecipients(
        cfg,
        req.recipients.map((r) =>
          newRecipient(r.address, { notify: r.notify as NotifyKeyword[] | undefined, orcpt: r.orcpt }),
        ),
      ),
      origin: { door: req.door, user: user.name, uid: user.uid },
      protocol: req.door === 'sendmail' ? 'local' : 'ESMTP',
      ret: req.ret as Envelope['ret'],
      envid: req.envid,
      body: req.body as Envelope['body'],
      smtputf8: req.smtputf8 || undefined,
      messageId,
    }),
  });
}

const NOTIFY = new Set(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']);

/** Checks a drop file's envelope request field by field; throws a data FerryError naming the first bad one. */
export function checkRequest(cfg: Config, raw: unknown): DropRequest {
  const bad = (what: string): never => {
    throw new FerryError('data', `the drop file's envelope is not valid: ${what}`);
  };
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) bad('not an object');
  const r = raw as Record<string, unknown>;
  if (r.door !== 'sendmail' && r.door !== 'sendmail-bs') bad('door');
  if (r.sender !== null && (typeof r.sender !== 'string' || (r.sender !== '' && !checkAddress(r.sender).ok)))
    bad('sender');
  if (!Array.isArray(r.recipients) || r.recipients.length === 0) bad('no recipients');
  if ((r.recipients as unknown[]).length > cfg.limits.recipients) bad(`more than ${cfg.limits.recipients} recipients`);
  const recipients = (r.recipients as unknown[]).map((x) => checkRecipient(x, bad));
  if (r.ret !== undefined && r.ret !== 'FULL' && r.ret !== 'HDRS') bad('ret');
  if (r.envid !== undefined && (typeof r.envid !== 'string' || !/^[\x21-\x7e]{1,100}$/.test(r.envid))) bad('envid');
  if (r.body !== undefined && r.body !== '7BIT' && r.body !== '8BITMIME') bad('body');
  if (r.smtputf8 !== undefined && typeof r.smtputf8 !== 'boolean') bad('smtputf8');
  return {
    door: r.door as DropRequest['door'],
    sender: r.sender as string | null,
    recipients,
    ret: r.ret as string | undefined,
    envid: r.envid as string | undefined,
    body: r.body as string | undefined,
    smtputf8: r.smtputf8 as boolean | undefined,
  };
}

/** Checks one requested recipient. */
function checkRecipient(x: unknown, bad: (what: string) => never): DropRequest['recipients'][number] {
  if (!x || typeof x !== 'object') bad('recipient');
  const r = x as Record<string, unknown>;
  const c = typeof r.address === 'string' ? checkAddress(r.address) : null;
  if (!c?.ok) return bad(`recipient ${JSON.stringify(r.address)}`);
  if (r.notify !== undefined && (!Array.isArray(r.notify) || !r.notify.every((k) => NOTIFY.has(k as string))))
    bad('notify');
  if (r.orcpt !== undefined && (typeof r.orcpt !== 'string' || !/^[\x21-\x7e]{1,500}$/.test(r.orcpt))) bad('orcpt');
  return { address: c.address, notify: r.notify as string[] | undefined, orcpt: r.orcpt as string | undefined };
}
