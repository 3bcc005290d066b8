/**
 * The transport section of a route file: every key known for its type, of the right type, and the
 * combinations that make sense (one destination for SMTP/LMTP, at most one source of a secret, TLS
 * settings only where TLS can happen). Problems are reported through the route file's `add`, so they come
 * with file, line and key like every other route key.
 *
 * Pure: reads no files (a password file's mode or a command's failure can only be found at delivery time,
 * see queue/wiring.ts). Never throws.
 */

/** Reports one problem at a key of the section. */
type Add = (key: string, message: string, at?: (string | number)[]) => void;

/** A check of one value: undefined when fine, else what it must be. */
type Check = (v: unknown) => string | undefined;

const str: Check = (v) => (typeof v === 'string' && v.length > 0 ? undefined : 'must be a non-empty string');
const bool: Check = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');
const argv: Check = (v) =>
  Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x.length > 0)
    ? undefined
    : 'must be a non-empty list of strings';
const oneOf =
  (...values: string[]): Check =>
  (v) =>
    typeof v === 'string' && values.includes(v) ? undefined : `must be one of ${values.join(', ')}`;
const int =
  (min: number, max: number): Check =>
  (v) =>
    Number.isInteger(v) && (v as number) >= min && (v as number) <= max
      ? undefined
      : `must be a whole number from ${min} to ${max}`;
const seconds: Check = (v) =>
  typeof v === 'number' && v > 0 && v <= 3600 ? undefined : 'must be a number of seconds above 0 and at most 3600';
const absolute: Check = (v) => str(v) ?? ((v as string).startsWith('/') ? undefined : 'must be an absolute path');
const envName: Check = (v) =>
  typeof v === 'string' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(v)
    ? undefined
    : 'must be the name of an environment variable';
const hostName: Check = (v) =>
  typeof v === 'string' && /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.IPv]+\]$/.test(v)
    ? undefined
    : 'must be a host name';
const fingerprint: Check = (v) =>
  typeof v === 'string' && normalFingerprint(v)
    ? undefined
    : 'must be a SHA-256 fingerprint: 64 hex digits, with or without colons';

/** A SOCKS5 proxy: socks5://host:port or socks5h://host:port (the proxy resolves names either way). */
export const PROXY_URL = /^socks5h?:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/;
const proxy: Check = (v) =>
  typeof v === 'string' &&
  PROXY_URL.exec(v) &&
  Number(PROXY_URL.exec(v)![2]) <= 65535 &&
  Number(PROXY_URL.exec(v)![2]) > 0
    ? undefined
    : 'must be socks5://host:port';

const SMTP = ['smtp', 'lmtp'];
/** Every key: the types it belongs to and its check. */
const KEYS: Record<string, { types: string[]; check: Check }> = {
  type: { types: ['smtp', 'lmtp', 'pipe'], check: oneOf('smtp', 'lmtp', 'pipe') },
  host: { types: SMTP, check: str },
  port: { types: SMTP, check: int(1, 65535) },
  socket: { types: SMTP, check: absolute },
  mx: { types: ['smtp'], check: bool },
  tls: { types: SMTP, check: oneOf('starttls', 'opportunistic', 'smtps', 'none') },
  ca_file: { types: SMTP, check: absolute },
  fingerprint: { types: SMTP, check: fingerprint },
  tls_cert: { types: SMTP, check: absolute },
  tls_key: { types: SMTP, check: absolute },
  tls_verify: { types: SMTP, check: bool },
  tls_name: { types: SMTP, check: hostName },
  proxy: { types: SMTP, check: proxy },
  user: { types: SMTP, check: str },
  password_file: { types: SMTP, check: absolute },
  password_command: { types: SMTP, check: argv },
  password_env: { types: SMTP, check: envName },
  auth_method: { types: SMTP, check: oneOf('plain', 'login', 'cram-md5', 'xoauth2') },
  helo: { types: SMTP, check: hostName },
  connections: { types: SMTP, check: int(1, 100) },
  connect_timeout: { types: SMTP, check: seconds },
  greeting_timeout: { types: SMTP, check: seconds },
  command_timeout: { types: SMTP, check: seconds },
  progress_timeout: { types: SMTP, check: seconds },
  command: { types: ['pipe'], check: argv },
  per_recipient: { types: ['pipe'], check: bool },
  from_line: { types: ['pipe'], check: bool },
  crlf: { types: ['pipe'], check: bool },
  timeout: { types: ['pipe'], check: seconds },
};

/** A fingerprint as 64 lower-case hex digits, or undefined when it is not one. */
export function normalFingerprint(v: string): string | undefined {
  const hex = v.replace(/:/g, '').toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) && (!v.includes(':') || /^([0-9a-fA-F]{2}:){31}[0-9a-fA-F]{2}$/.test(v))
    ? hex
    : undefined;
}

/** Checks a route's transport section; raw is the parsed YAML value (undefined when absent). */
export function checkTransport(raw: unknown, add: Add): void {
  const at = (k: string): [string, string] => ['transport', k];
  if (raw === undefined) return;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw))
    return add('transport', 'must be a mapping with at least a type');
  const t = raw as Record<string, unknown>;
  if (t.type === undefined) return add('transport', 'needs a type: smtp, lmtp or pipe');
  for (const [k, v] of Object.entries(t)) {
    const spec = KEYS[k];
    if (!spec) add(`transport.${k}`, 'unknown key', at(k));
    else if (typeof t.type === 'string' && KEYS.type!.check(t.type) === undefined && !spec.types.includes(t.type))
      add(`transport.${k}`, `is not a key of type ${t.type}`, at(k));
    else {
      const bad = spec.check(v);
      if (bad) add(`transport.${k}`, bad, at(k));
    }
  }
  if (t.type === 'pipe' && t.command === undefined) add('transport', 'type pipe needs command (an argv list)');
  if (t.type === 'smtp' || t.type === 'lmtp')
    combinations(t, (k, m) => add(`transport${k ? `.${k}` : ''}`, m, k ? at(k) : ['transport']));
}

/** The rules between SMTP/LMTP keys. */
function combinations(t: Record<string, unknown>, add: (key: string, message: string) => void): void {
  const has = (k: string): boolean => t[k] !== undefined;
  const where = ['host', 'socket', 'mx'].filter((k) => has(k) && t[k] !== false);
  if (where.length === 0) add('', 'needs where to deliver: host and port, socket, or mx: true');
  if (where.length > 1) add(where[1]!, `${where.join(' and ')} exclude each other`);
  if (has('host') && !has('port')) add('host', 'host needs port');
  if (has('port') && !has('host') && t.mx !== true) add('port', 'port goes with host (or mx: true)');
  if (has('socket') && has('tls') && t.tls !== 'none')
    add('tls', 'a unix socket has no TLS: leave tls out or set none');
  if (has('socket') && has('proxy')) add('proxy', 'a unix socket is reached directly: leave proxy out');
  const secrets = ['password_file', 'password_command', 'password_env'].filter(has);
  if (secrets.length > 1) add(secrets[1]!, `${secrets.join(' and ')} exclude each other: give one`);
  if (has('user') && secrets.length === 0) add('user', 'user needs password_file, password_command or password_env');
  if (!has('user') && secrets.length) add(secrets[0]!, `${secrets[0]} needs user`);
  if (has('auth_method') && !has('user')) add('auth_method', 'auth_method needs user');
  if (t.mx === true && has('user')) add('user', 'MX hosts do not take AUTH: user is for a smarthost');
  if (t.tls === 'none')
    for (const k of ['ca_file', 'fingerprint', 'tls_verify', 'tls_name', 'tls_cert'])
      if (has(k)) add(k, `${k} needs TLS, but tls is none`);
  if (has('tls_cert') !== has('tls_key'))
    add(has('tls_cert') ? 'tls_cert' : 'tls_key', 'tls_cert and tls_key go together');
  if (t.mx === true && has('tls_name'))
    add('tls_name', 'MX hosts are checked by their own names: tls_name is for a smarthost');
  if (has('fingerprint') && t.tls_verify === false)
    add('tls_verify', 'a fingerprint is already the check: leave tls_verify out');
}
