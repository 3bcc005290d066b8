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
import { PassThrough, type Readable } from 'node:stream';
import { PROXY_URL, normalFingerprint } from '../config/transport-section.js';
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
import {
  inspectServer,
  smtpTransport,
  type AuthMethod,
  type MxResolver,
  type ServerInfo,
  type SmtpSettings,
} from '../transport/smtp.js';
import { lookupMx, systemResolver } from '../transport/mx.js';
import type { Transport } from '../transport/types.js';
import type { Notice } from './bounce.js';
import { runCommand } from '../proc/run.js';
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

/** True when a program name is an executable file: a path, or a name found on PATH. */
export function findProgram(name: string): boolean {
  if (!name) return false;
  const dirs = name.includes('/') ? [''] : (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':');
  return dirs.some((d) => {
    try {
      fs.accessSync(d ? `${d}/${name}` : name, fs.constants.X_OK);
      return fs.statSync(d ? `${d}/${name}` : name).isFile();
    } catch {
      return false;
    }
  });
}

/** Checks a password file's mode now (a file others can read is a broken route, not a delivery failure). */
function checkPasswordFile(file: string): void {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) throw new Error(`password_file ${file} must be readable by its owner only`);
}

const SECRET_TIMEOUT_MS = 10_000;

/** Runs a secret command (proc/run: its own process group, killed with its children after the timeout,
 * SECRET_TIMEOUT_MS); its output is never shown, only how it failed. It inherits the environment, so
 * that it can reach its agent (gpg-agent, the keyring). */
export async function runSecretCommand(argv: string[], timeoutMs = SECRET_TIMEOUT_MS): Promise<string> {
  const r = await runCommand(argv, { env: process.env, timeoutMs, capture: { stderr: false } });
  const fail = (why: string): Error => new Error(`password_command ${argv[0]} ${why}`);
  if (r.timedOut) throw fail('timed out');
  if (r.error) throw fail(`failed (${r.error})`);
  if (r.code !== 0) throw fail(r.signal ? `killed by ${r.signal}` : `exited ${r.code}`);
  const line = r.stdout.split('\n')[0]?.replace(/\r$/, '') ?? '';
  if (!line) throw fail('printed nothing');
  return line;
}

/** Where a route's secret comes from: read at every login (a token command prints a fresh one each time). */
function secretSource(t: Record<string, unknown>): (() => Promise<string>) | undefined {
  if (typeof t.password_file === 'string') {
    const file = t.password_file;
    checkPasswordFile(file);
    return async () => {
      checkPasswordFile(file);
      return (await fs.promises.readFile(file, 'utf8')).split('\n')[0]?.replace(/\r$/, '') ?? '';
    };
  }
  if (Array.isArray(t.password_command)) {
    const argv = t.password_command as string[];
    if (!findProgram(argv[0] ?? ''))
      throw new Error(
        `password_command ${argv[0] ?? '(empty)'} is not a program this host has (not found, or not executable)`,
      );
    return () => runSecretCommand(argv);
  }
  if (typeof t.password_env === 'string') {
    const name = t.password_env;
    return async () => {
      const v = process.env[name];
      if (!v) throw new Error(`environment variable ${name} is not set`);
      return v;
    };
  }
  return undefined;
}

/** The TLS settings of a transport section (a CA file is read now: a missing one breaks the route). */
function tlsSettings(
  t: Record<string, unknown>,
): Pick<
  SmtpSettings,
  'secure' | 'starttls' | 'verify' | 'ca' | 'fingerprint' | 'servername' | 'clearAuth' | 'proxy' | 'clientCert'
> {
  const mode = typeof t.tls === 'string' ? t.tls : 'opportunistic';
  return {
    secure: mode === 'smtps',
    starttls: mode === 'none' ? 'never' : mode === 'starttls' ? 'required' : 'opportunistic',
    // RFC 7435: MX hosts rarely have certificates for their names, so MX delivery encrypts without
    // verifying unless asked; a smarthost is one known server and is verified
    verify: typeof t.tls_verify === 'boolean' ? t.tls_verify : t.mx !== true,
    ca: typeof t.ca_file === 'string' ? fs.readFileSync(t.ca_file) : undefined,
    fingerprint: typeof t.fingerprint === 'string' ? normalFingerprint(t.fingerprint) : undefined,
    servername: typeof t.tls_name === 'string' ? t.tls_name : undefined,
    proxy: typeof t.proxy === 'string' ? parseProxy(t.proxy) : undefined,
    clearAuth: mode === 'none',
    clientCert:
      typeof t.tls_cert === 'string' && typeof t.tls_key === 'string'
        ? clientCertificate(t.tls_cert, t.tls_key)
        : undefined,
  };
}

/** A client certificate and its key, read now; the key must be readable by its owner only. */
function clientCertificate(certFile: string, keyFile: string): { cert: Buffer; key: Buffer } {
  if ((fs.statSync(keyFile).mode & 0o077) !== 0)
    throw new Error(`tls_key ${keyFile} must be readable by its owner only`);
  return { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
}

/** A proxy URL (socks5://host:port, checked when the route file was read) as host and port. */
function parseProxy(url: string): { host: string; port: number } | undefined {
  const m = PROXY_URL.exec(url);
  return m ? { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) } : undefined;
}

/** Seconds from a route key to milliseconds, or undefined for the default. */
function ms(v: unknown): number | undefined {
  return typeof v === 'number' && v > 0 ? Math.round(v * 1000) : undefined;
}

/** The SMTP/LMTP transport of a transport section (already validated by config/). */
function smtpFrom(route: Route, t: Record<string, unknown>, hostname: string, resolver?: MxResolver): Transport {
  if (typeof t.host !== 'string' && typeof t.socket !== 'string' && t.mx !== true)
    return broken(`route ${route.name}: transport needs host and port, socket, or mx`);
  return smtpTransport({ ...smtpSettingsOf(t, hostname), resolver });
}

/** The SMTP settings of a transport section (files such as a CA or a password file are checked now:
 * throws with the reason when one is unusable). */
export function smtpSettingsOf(t: Record<string, unknown>, hostname: string): SmtpSettings {
  const secret = secretSource(t);
  return {
    host: typeof t.host === 'string' ? t.host : undefined,
    port: typeof t.port === 'number' ? t.port : undefined,
    socket: typeof t.socket === 'string' ? t.socket : undefined,
    mx: t.mx === true,
    name: typeof t.helo === 'string' ? t.helo : hostname,
    lmtp: t.type === 'lmtp',
    ...tlsSettings(t),
    auth:
      typeof t.user === 'string' && secret
        ? { user: t.user, secret, method: t.auth_method as AuthMethod | undefined }
        : undefined,
    connections: typeof t.connections === 'number' ? t.connections : undefined,
    timeouts: {
      connect: ms(t.connect_timeout),
      greeting: ms(t.greeting_timeout),
      command: ms(t.command_timeout),
      progress: ms(t.progress_timeout),
    },
  };
}

/**
 * What the server of an SMTP or LMTP route offers, for `ferrymail route test`: for an MX route the first
 * MX host of `domain`. Fails with a readable Error when the route is no SMTP route or its files are
 * unusable.
 */
export async function inspectRoute(route: Route, hostname: string, domain?: string): Promise<ServerInfo> {
  const t = route.transport;
  if (t.type !== 'smtp' && t.type !== 'lmtp')
    throw new Error(`route ${route.name} delivers by ${String(t.type)}, not to a server`);
  const s = smtpSettingsOf(t, hostname);
  const timeouts = {
    connect: s.timeouts?.connect ?? 10_000,
    greeting: s.timeouts?.greeting ?? 30_000,
    command: s.timeouts?.command ?? 300_000,
    progress: s.timeouts?.progress ?? 30_000,
  };
  let target = s.socket
    ? { host: 'localhost', port: 0, socket: s.socket }
    : { host: s.host ?? 'localhost', port: s.port ?? 25 };
  if (s.mx) {
    if (!domain) throw new Error(`route ${route.name} delivers by MX: name a recipient domain (--to)`);
    const mx = await lookupMx(systemResolver(timeouts.connect), domain);
    if (!('hosts' in mx)) throw new Error('permfail' in mx ? mx.permfail : mx.tempfail);
    target = { host: mx.hosts[0]!, port: s.port ?? 25 };
  }
  return inspectServer({ ...s, timeouts }, target);
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
    const section = head ?? (await store.readHead(env.id));
    const after = Buffer.byteLength(section, 'latin1');
    const own = route.hideLocalReceived && hostname ? withoutOwnReceived(section, hostname) : section;
    const rewritten = rewriteHeaderSection(own, route.rewrite);
    const top = route.dkim ? (await signature(route, route.dkim, rewritten, data, after)) + rewritten : rewritten;
    if (out.destroyed) return;
    const small = smallBody(data, after);
    // checked before the first byte goes out
    if (small?.includes(0) || top.includes('\0')) return void out.destroy(NUL_INSIDE());
    out.write(Buffer.from(top, 'latin1'));
    if (small) out.end(small);
    else {
      const body = fs.createReadStream('', { fd: openSpoolFile(data), start: after });
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

/** The body (the data from offset on) when it is at most SMALL_BODY bytes, else undefined. */
function smallBody(file: string, offset: number): Buffer | undefined {
  const fd = openSpoolFile(file);
  try {
    const size = fs.fstatSync(fd).size - offset;
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
): Promise<string> {
  try {
    const key = loadDkimKey(dkim);
    return signatureField(
      section,
      await bodyHashOf(fs.createReadStream('', { fd: openSpoolFile(data), start: bodyAt })),
      key,
    );
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
