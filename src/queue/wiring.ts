/**
 * Builds what the queue runner needs from the configuration: a transport per route (from its transport
 * section; the runner keeps one per route for a run, so that it reuses its connections), the outgoing message
 * stream (header rewriting on the way out, then the route's DKIM signature over the rewritten header
 * section, the body streamed from the spool untouched), and the queuing of delivery status notices
 * through the spool's normal commit.
 *
 * Route files are the administrator's; a transport section that does not make sense fails that route's
 * deliveries as tempfail with the reason (mail waits, nothing is lost): a password file others can read,
 * a CA file that cannot be read, a DKIM key that cannot be used (nothing leaves unsigned: the key is
 * checked before each delivery, and the message stream fails before its first byte). Secrets come from a
 * file readable only by its owner, a command or an environment variable, never from argv or the route
 * file itself; they are fetched at every login, and a command's output never appears in a reply or a
 * log, only how it failed.
 */
import fs from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import type { Envelope } from '../domain/envelope.js';
import { newRecipient } from '../domain/envelope.js';
import { dataError } from '../errors.js';
import { fieldValue, parseHeaderBlock } from '../domain/header.js';
import { rewriteHeaderSection } from '../route/header-rewrite.js';
import type { DkimSettings, Route } from '../route/types.js';
import { bodyHashOf, loadDkimKey, signatureField } from '../sign/dkim.js';
import { noteBytes } from '../spool/reclaim.js';
import type { Store } from '../spool/store.js';
import type { SpoolWriter } from '../spool/writer.js';
import { pipeTransport } from '../transport/pipe.js';
import { smtpTransport, type MxResolver } from '../transport/smtp.js';
import type { Transport } from '../transport/types.js';
import type { Notice } from './bounce.js';
import { ms, smtpSettingsOf } from './smtp-settings.js';
import { readAt } from '../spool/layout.js';
import { openSpoolFile } from '../spool/safety.js';

/** A transport that refuses everything for now, saying why (a broken route must not lose mail). */
function broken(why: string): Transport & { problem: string } {
  return {
    problem: why,
    deliver: async (req) => ({
      relay: 'none',
      results: req.recipients.map((r) => ({
        address: r.address,
        outcome: 'tempfail' as const,
        reply: `451 4.3.5 ${why}`,
      })),
    }),
  };
}

/** What would make a route defer all its mail before it even connects (a password file others can read,
 * a CA file missing, a pipe command naming unknown variables, an unusable DKIM key), or undefined;
 * for `ferrymail config check`. */
export function routeProblem(route: Route, hostname: string): string | undefined {
  const t = buildTransport(route, hostname) as Transport & { problem?: string };
  void t.close?.();
  if (t.problem) return t.problem;
  if (!route.dkim) return undefined;
  try {
    loadDkimKey(route.dkim);
    return undefined;
  } catch (err) {
    return `route ${route.name}: dkim ${(err as Error).message}`;
  }
}

/** The SMTP/LMTP transport of a transport section (already validated by config/). */
function smtpFrom(route: Route, t: Record<string, unknown>, hostname: string, resolver?: MxResolver): Transport {
  if (typeof t.host !== 'string' && typeof t.socket !== 'string' && t.mx !== true)
    return broken(`route ${route.name}: transport needs host and port, socket, or mx`);
  return smtpTransport({ ...smtpSettingsOf(t, hostname), resolver });
}

/**
 * The transport of a route, built from its transport section (the queue runner keeps one per route for
 * a whole run, so that its sessions carry every message of the run; resolver: DNS for MX delivery).
 */
export function transportFor(route: Route, hostname: string, resolver?: MxResolver): Transport {
  const inner = buildTransport(route, hostname, resolver);
  return route.dkim ? keyChecked(route, route.dkim, inner) : inner;
}

/**
 * A signing route's transport: the key is checked before each delivery (before any connection), so a
 * broken one defers with the reason; messageFor reads it again to sign.
 */
function keyChecked(route: Route, dkim: DkimSettings, inner: Transport): Transport {
  const checked: Transport = {
    deliver: (req) => {
      try {
        loadDkimKey(dkim);
      } catch (err) {
        return broken(`route ${route.name}: dkim ${(err as Error).message}`).deliver(req);
      }
      return inner.deliver(req);
    },
  };
  if (inner.close) checked.close = () => inner.close!();
  return checked;
}

/** Builds the transport of a route. */
function buildTransport(route: Route, hostname: string, resolver?: MxResolver): Transport {
  const t = route.transport;
  try {
    if (t.type === 'smtp' || t.type === 'lmtp') return smtpFrom(route, t, hostname, resolver);
    if (t.type === 'pipe') {
      if (!Array.isArray(t.command) || !t.command.every((x) => typeof x === 'string') || !t.command.length)
        return broken(`route ${route.name}: pipe needs a command list`);
      return pipeTransport({
        command: t.command as string[],
        perRecipient: t.per_recipient !== false,
        fromLine: t.from_line === true,
        crlf: t.crlf === true,
        timeoutMs: ms(t.timeout),
        route: route.name,
      });
    }
    return broken(`route ${route.name}: unknown transport type ${JSON.stringify(t.type)}`);
  } catch (err) {
    return broken(`route ${route.name}: ${(err as Error).message}`);
  }
}

/** Bodies up to this size leave from one synchronous read (a few microseconds from the page cache)
 * instead of a file stream, whose thread-pool round trips cost more than the read. */
const SMALL_BODY = 256 * 1024;

/**
 * The message as it leaves by a route: header section rewritten, signed when the route says so, body
 * from the spool (read at once when small, else streamed). Signing reads the body once more before
 * anything is written (the signature comes first and covers the body), so only the header section and
 * at most SMALL_BODY bytes are ever held in memory. `head` is the header section when the caller has
 * already read it.
 */
export function messageFor(store: Store, env: Envelope, route: Route, head?: string, hostname?: string): Readable {
  const out = new PassThrough();
  const data = store.layout.data(env.id);
  const start = async (): Promise<void> => {
    const section = head ?? (await store.readHead(env));
    const after = Buffer.byteLength(section, 'latin1');
    const own = route.hideLocalReceived && hostname ? withoutOwnReceived(section, hostname) : section;
    const rewritten = rewriteHeaderSection(own, route.rewrite);
    const top = route.dkim
      ? (await signature(route, route.dkim, rewritten, data, after, env.size)) + rewritten
      : rewritten;
    if (out.destroyed) return;
    const small = smallBody(data, after, env.size);
    // checked before the first byte goes out
    if (small?.includes(0) || top.includes('\0')) return void out.destroy(NUL_INSIDE());
    out.write(Buffer.from(top, 'latin1'));
    if (small) out.end(small);
    else {
      const body = bodyStream(data, after, env.size);
      // a transaction that ends before DATA destroys `out`: the file must be closed with it
      out.once('close', () => body.destroy());
      body
        .on('error', (e) => out.destroy(e))
        // no door lets a NUL in; one in an older spool file must not reach a hop that could drop it
        .on('data', (c: string | Buffer) => {
          noteBytes(c.length);
          if (typeof c !== 'string' && c.includes(0)) out.destroy(NUL_INSIDE());
        })
        .pipe(out);
    }
  };
  start().catch((err: Error) => out.destroy(err));
  return out;
}

/** A header section without the Received lines this host put on top of it ("by HOST (ferrymail)"): the
 * first ones only, so that what other hops added stays. */
export function withoutOwnReceived(section: string, hostname: string): string {
  const { fields } = parseHeaderBlock(section);
  const mine = new RegExp(`(?:^|\\s)by\\s+${hostname.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+\\(ferrymail\\)`, 'i');
  let n = 0;
  while (n < fields.length && fields[n]!.lower === 'received' && mine.test(fieldValue(fields[n]!))) n++;
  return (
    fields
      .slice(n)
      .map((f) => f.raw)
      .join('') + section.slice(fields.reduce((a, f) => a + f.raw.length, 0))
  );
}

/** The error that stops a message holding a NUL byte (an older intake may have stored one) from leaving:
 * transports fail its recipients for good with this reply. */
const NUL_INSIDE = (): Error => dataError(554, '5.6.0', 'Message contains NUL characters; it cannot be sent');

/** The message's bytes from offset up to its size, as a stream. A data file may carry the message's
 * envelope behind it (spool/trailer.ts): nothing past the size is ever read. */
function bodyStream(file: string, offset: number, size: number): Readable {
  if (offset >= size) return Readable.from([]);
  return fs.createReadStream('', { fd: openSpoolFile(file), start: offset, end: size - 1 });
}

/** The body (the data from offset up to the message's size) when it is at most SMALL_BODY bytes, else
 * undefined. */
function smallBody(file: string, offset: number, total: number): Buffer | undefined {
  const fd = openSpoolFile(file);
  try {
    const size = Math.max(0, total - offset);
    return size > SMALL_BODY ? undefined : readAt(fd, size, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** The DKIM-Signature field for a rewritten header section and the body that follows it in the data file. */
async function signature(
  route: Route,
  dkim: DkimSettings,
  section: string,
  data: string,
  bodyAt: number,
  size: number,
): Promise<string> {
  try {
    const key = loadDkimKey(dkim);
    return signatureField(section, await bodyHashOf(bodyStream(data, bodyAt, size)), key);
  } catch (err) {
    throw new Error(`route ${route.name}: dkim signing failed: ${(err as Error).message}`);
  }
}

/** Queues a notice through the spool's normal, durable commit. */
export async function enqueueNotice(spool: SpoolWriter, notice: Notice): Promise<void> {
  const w = await spool.begin();
  w.stream.end(Buffer.from(notice.text, 'utf8'));
  await w.commit({
    version: 1,
    arrival: new Date().toISOString(),
    sender: '',
    recipients: [notice.recipient, ...(notice.copies ?? [])].map((a) => newRecipient(a)),
    origin: { door: 'sendmail', user: 'MAILER-DAEMON' },
    protocol: 'local',
  });
}
