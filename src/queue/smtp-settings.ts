/**
 * The SMTP settings of a route's transport section: where the secret comes from (a file readable by its
 * owner only, a command run without a shell, or the environment: fetched at every login, never logged),
 * TLS (a CA file, a fingerprint, a client certificate), a SOCKS proxy, timeouts; and `inspectRoute`, what
 * a route's server offers, for `ferrymail route test`.
 *
 * Trusts the route files (validated by config/). Files are checked when the settings are made: an
 * unusable one throws with the reason, which makes the route defer its mail with it.
 */
import fs from 'node:fs';
import { PROXY_URL, normalFingerprint } from '../config/transport-section.js';
import type { Route } from '../route/types.js';
import { inspectServer, type AuthMethod, type ServerInfo, type SmtpSettings } from '../transport/smtp.js';
import { lookupMx, systemResolver } from '../transport/mx.js';
import { runCommand } from '../proc/run.js';

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
export function ms(v: unknown): number | undefined {
  return typeof v === 'number' && v > 0 ? Math.round(v * 1000) : undefined;
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
