/**
 * Builds what the queue runner needs from the configuration: a transport per route (from its transport
 * section), the outgoing message stream (header rewriting on the way out, then the route's DKIM
 * signature over the rewritten header section, the body streamed from the spool untouched), and the
 * queuing of delivery status notices through the spool's normal commit.
 *
 * Route files are the administrator's; a transport section that does not make sense, or a DKIM key that
 * cannot be used, fails that route's deliveries as tempfail with the reason (mail waits, nothing is lost,
 * nothing leaves unsigned: the message stream fails before its first byte). Secrets come from a file
 * readable only by its owner or from a command, never from argv or the route file itself, and never
 * appear in a reply or a log.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { PassThrough, type Readable } from 'node:stream';
import type { Envelope } from '../domain/envelope.js';
import { newRecipient } from '../domain/envelope.js';
import { rewriteHeaderSection } from '../route/header-rewrite.js';
import type { DkimSettings, Route } from '../route/types.js';
import { bodyHashOf, loadDkimKey, signatureField } from '../sign/dkim.js';
import type { Store } from '../spool/store.js';
import type { SpoolWriter } from '../spool/writer.js';
import { pipeTransport, unknownVariables } from '../transport/pipe.js';
import { smtpTransport } from '../transport/smtp.js';
import type { Transport } from '../transport/types.js';
import type { Notice } from './bounce.js';

/** A transport that refuses everything for now, saying why (a broken route must not lose mail). */
function broken(why: string): Transport {
  return { deliver: async (req) => ({ relay: 'none', results: req.recipients.map((r) => ({ address: r.address, outcome: 'tempfail' as const, reply: `451 4.3.5 ${why}` })) }) };
}

/** Reads a secret from a file only its owner can read, or from a command's first output line. */
function secret(t: Record<string, unknown>): string | undefined {
  if (typeof t.password_file === 'string') {
    const st = fs.statSync(t.password_file);
    if ((st.mode & 0o077) !== 0) throw new Error(`password_file ${t.password_file} must be readable by its owner only`);
    return fs.readFileSync(t.password_file, 'utf8').split('\n')[0];
  }
  if (Array.isArray(t.password_command) && t.password_command.every((x) => typeof x === 'string') && t.password_command.length) {
    const [cmd, ...args] = t.password_command as string[];
    return execFileSync(cmd!, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
  }
  return undefined;
}

/** The transport of a route: built from its transport section, checking the DKIM key of a signing route. */
export function transportFor(route: Route, hostname: string): Transport {
  const inner = buildTransport(route, hostname);
  return route.dkim ? keyChecked(route, route.dkim, inner) : inner;
}

/**
 * A signing route's transport: the key is checked before each delivery (before any connection), so a
 * broken one defers with the reason; messageFor reads it again to sign.
 */
function keyChecked(route: Route, dkim: DkimSettings, inner: Transport & { close?: () => Promise<void> }): Transport {
  const checked: Transport & { close?: () => Promise<void> } = {
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

/** The transport built from a route's transport section. */
function buildTransport(route: Route, hostname: string): Transport {
  const t = route.transport;
  try {
    if (t.type === 'smtp' || t.type === 'lmtp') {
      if (typeof t.host !== 'string' || !Number.isInteger(t.port)) return broken(`route ${route.name}: transport needs host and port`);
      const pass = secret(t);
      return smtpTransport({
        host: t.host,
        port: t.port as number,
        name: hostname,
        lmtp: t.type === 'lmtp',
        secure: t.tls === 'smtps',
        starttls: t.tls === 'none' ? 'never' : t.tls === 'starttls' ? 'required' : 'opportunistic',
        auth: typeof t.user === 'string' && pass !== undefined ? { user: t.user, pass } : undefined,
      });
    }
    if (t.type === 'pipe') {
      if (!Array.isArray(t.command) || !t.command.every((x) => typeof x === 'string') || !t.command.length) return broken(`route ${route.name}: pipe needs a command list`);
      const unknown = unknownVariables(t.command as string[]);
      if (unknown.length) return broken(`route ${route.name}: the pipe command names unknown variables: ${unknown.map((v) => `\${${v}}`).join(', ')}`);
      if (t.timeout !== undefined && !(typeof t.timeout === 'number' && t.timeout > 0)) return broken(`route ${route.name}: pipe timeout must be a number of seconds`);
      return pipeTransport({
        command: t.command as string[],
        perRecipient: t.per_recipient !== false,
        fromLine: t.from_line === true,
        crlf: t.crlf === true,
        timeoutMs: typeof t.timeout === 'number' ? t.timeout * 1000 : undefined,
        route: route.name,
      });
    }
    return broken(`route ${route.name}: unknown transport type ${JSON.stringify(t.type)}`);
  } catch (err) {
    return broken(`route ${route.name}: ${(err as Error).message}`);
  }
}

/**
 * The message as it leaves by a route: header section rewritten, signed when the route says so, body
 * streamed from the spool. Signing reads the body once more before anything is written (the signature
 * comes first and covers the body), so only the header section is ever held in memory.
 */
export function messageFor(store: Store, env: Envelope, route: Route): Readable {
  const out = new PassThrough();
  const data = store.layout.data(env.id);
  const start = async (): Promise<void> => {
    const head = await store.readHead(env.id);
    const after = Buffer.byteLength(head, 'latin1');
    const rewritten = rewriteHeaderSection(head, route.rewrite);
    const section = route.dkim ? (await signature(route, route.dkim, rewritten, data, after)) + rewritten : rewritten;
    if (out.destroyed) return;
    out.write(Buffer.from(section, 'latin1'));
    fs.createReadStream(data, { start: after }).on('error', (e) => out.destroy(e)).pipe(out);
  };
  start().catch((err: Error) => out.destroy(err));
  return out;
}

/** The DKIM-Signature field for a rewritten header section and the body that follows it in the data file. */
async function signature(route: Route, dkim: DkimSettings, section: string, data: string, bodyAt: number): Promise<string> {
  try {
    const key = loadDkimKey(dkim);
    return signatureField(section, await bodyHashOf(fs.createReadStream(data, { start: bodyAt })), key);
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
    recipients: [newRecipient(notice.recipient)],
    origin: { door: 'sendmail', user: 'MAILER-DAEMON' },
    protocol: 'local',
  });
}
