/**
 * The SMTP door's envelope and data: the replies smtp-server turns into SMTP errors, which MAIL and RCPT
 * parameters the door implements, the envelope form of the addresses a client gave, and the streaming of
 * one DATA into the spool with the SMTP header edits (Received; Date and Message-ID for trusted clients).
 *
 * Everything here comes from a client and is untrusted; addresses were syntax-checked by the handlers.
 * receiveData rejects with a FerryError (content, storage) that intakeReply turns into the SMTP reply.
 */
import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server';
import type { Config } from '../config/types.js';
import { checkAddress } from '../domain/address.js';
import type { Door, Envelope, NotifyKeyword } from '../domain/envelope.js';
import { expandRecipients } from '../local/recipients.js';
import { newRecipient } from '../domain/envelope.js';
import { FerryError } from '../errors.js';
import type { DoorDeps } from './smtp.js';
import { fieldValue, qualifyField, receivedHeader, rfc5322Date, type HeaderField } from '../scan/headers.js';
import { LineEndGuard } from '../scan/steps.js';
import { intake, type IntakePlan } from './intake.js';
import type { SessionFacts } from './stages.js';

/** An error smtp-server turns into a reply "code enhanced text". */
export function smtpError(code: number, enhanced: string, text: string): Error {
  const err = new Error(`${enhanced} ${text}`) as Error & { responseCode: number };
  err.responseCode = code;
  return err;
}

/** Maps an intake failure to the SMTP error to answer with. */
export function intakeReply(err: unknown): Error {
  if (err instanceof FerryError) {
    if (err.reply) return smtpError(err.reply.code, err.reply.enhanced, err.reply.text);
    if (err.code === 'spool-full') return smtpError(452, '4.3.1', 'Insufficient system storage, try again later');
  }
  return smtpError(451, '4.3.0', 'Local error in processing, try again later');
}

/** ESMTP parameters the door implements (RFC 1870, 6152, 6531, 3461, 4954); anything else gets 555. */
export const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH']);
export const RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);

/** The first parameter of a MAIL or RCPT command that is not in the known set. */
export function unknownParam(address: SMTPServerAddress, known: Set<string>): string | undefined {
  return Object.keys(address.args || {}).find((k) => !known.has(k.toUpperCase()));
}

/** RFC 5321 4.5.1: a bare "postmaster" recipient means this host's postmaster. */
export function postmaster(address: string, hostname: string): string {
  return /^postmaster$/i.test(address) ? `postmaster@${hostname}` : address;
}

/** The envelope form of an address the door accepted (domain lower-case, in A-labels). */
export function normalAddress(address: string, hostname: string): string {
  const c = checkAddress(postmaster(address, hostname));
  return c.ok ? c.address : address;
}

/** Recipients whose envelope forms differ (RCPT TO:<postmaster> and <postmaster@host> are one). */
export function uniqueRcpts<T extends { address: string }>(rcpts: T[], hostname: string): T[] {
  const seen = new Set<string>();
  return rcpts.filter((r) => {
    const k = normalAddress(r.address, hostname).toLowerCase();
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** True when an accepted address still needs SMTPUTF8 in its envelope form (a UTF-8 local part). */
export function needsUtf8(address: string, hostname: string): boolean {
  const c = checkAddress(postmaster(address, hostname));
  return c.ok && c.utf8;
}

/** Streams one DATA into the spool with the SMTP header edits. */
export function receiveData(
  cfg: Config,
  deps: DoorDeps,
  stream: NodeJS.ReadableStream,
  session: SMTPServerSession,
  f: SessionFacts,
  door: Door,
  local?: { name: string; uid: number },
  beforeCommit?: IntakePlan['beforeCommit'],
): Promise<Envelope> {
  const env = session.envelope;
  const rcpts = env.rcptTo;
  const now = new Date();
  const protocol = session.transmissionType || 'ESMTP';
  const received = !local || deps.local?.received !== false;
  return intake(deps.spool, stream as unknown as import('node:stream').Readable, {
    pre: [new LineEndGuard(cfg.smtp.bare_line_ends)],
    maxSize: cfg.limits.message_size,
    maxHeaderBytes: cfg.limits.header_size,
    maxHops: cfg.limits.received_hops,
    minFree: cfg.limits.spool_minfree,
    declaredSize: Number(env.mailFrom && env.mailFrom.args ? env.mailFrom.args.SIZE : 0) || 0,
    beforeCommit,
    edit: (fields, id) => {
      const prepend = !received
        ? ''
        : receivedHeader({
            hostname: cfg.hostname,
            id,
            protocol,
            date: now,
            helo: session.hostNameAppearsAs || undefined,
            peer: local ? undefined : session.remoteAddress,
            uid: local?.uid,
            user: local?.name,
            authUser: local ? undefined : f.user,
            clientName:
              session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : undefined,
            recipients: rcpts.map((r) => r.address),
            tls:
              session.secure && session.tlsOptions
                ? `${session.tlsOptions.version ?? 'TLS'} ${session.tlsOptions.name ?? ''}`.trim()
                : undefined,
          });
      let append = '';
      if (f.trusted || f.user) {
        if (!fields.some((x) => x.lower === 'date')) append += `Date: ${rfc5322Date(now)}\r\n`;
        if (!fields.some((x) => x.lower === 'message-id')) append += `Message-ID: <${id}@${cfg.hostname}>\r\n`;
      }
      // a local program's bare local names ("From: root") become whole addresses, as for sendmail
      return { prepend, append, replace: local ? (fl: HeaderField) => qualifyField(fl, cfg.hostname) : undefined };
    },
    envelope: async (fields, id) => {
      const mid = fields.find((x) => x.lower === 'message-id');
      return {
        version: 1,
        arrival: now.toISOString(),
        sender: env.mailFrom ? normalAddress(env.mailFrom.address, cfg.hostname) : '',
        // this host's own recipients become the targets of their aliases (RCPT refused unknown ones)
        recipients: await expandRecipients(
          cfg,
          uniqueRcpts(rcpts, cfg.hostname).map((r) =>
            newRecipient(normalAddress(r.address, cfg.hostname), {
              notify: r.dsn?.notify as NotifyKeyword[] | undefined,
              orcpt: r.dsn?.orcpt ?? undefined,
            }),
          ),
        ),
        origin: local
          ? { door, helo: session.hostNameAppearsAs || undefined, user: local.name, uid: local.uid }
          : {
              door,
              peer: session.remoteAddress,
              peerPort: session.remotePort,
              helo: session.hostNameAppearsAs || undefined,
              user: f.user,
            },
        protocol,
        body: env.bodyType === '8bitmime' ? '8BITMIME' : '7BIT',
        // a UTF-8 address needs SMTPUTF8 on the way out even when the client did not say so
        smtputf8:
          env.smtpUtf8 ||
          [env.mailFrom ? env.mailFrom.address : '', ...rcpts.map((r) => r.address)].some(
            (a) => a !== '' && needsUtf8(a, cfg.hostname),
          ) ||
          undefined,
        ret: (env.dsn?.ret as 'FULL' | 'HDRS' | null) ?? undefined,
        envid: env.dsn?.envid ?? undefined,
        messageId: mid ? fieldValue(mid) : f.trusted || f.user ? `<${id}@${cfg.hostname}>` : undefined,
      };
    },
  });
}
