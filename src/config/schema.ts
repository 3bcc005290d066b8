/**
 * The settings table: every key of ferrymail.yaml, its type, default and check, in one place.
 *
 * The validator (validate.ts), the JSON schema handed to conf (store.ts) and docs/configuration.md are all
 * read off this table. Pure data; cannot fail.
 */
import { isIP, isIPv4, isIPv6 } from '../domain/ip.js';
import { parseListen } from './paths.js';

export { parseListen };

/** The kinds of value a setting can hold. */
export type FieldType =
  | 'string'
  | 'integer'
  | 'boolean'
  | 'string[]'
  | 'enum'
  | 'duration'
  | 'duration[]'
  | 'map[]'
  | 'mapping';

/** One setting. */
export interface Field {
  key: string; // dotted path, e.g. "limits.message_size"
  type: FieldType;
  values?: readonly string[]; // for enum
  /** Bounds of an integer, or of a duration in seconds. */
  min?: number;
  max?: number;
  /** Extra check of one (element) value; returns an error text or undefined. */
  check?: (value: string) => string | undefined;
  /** For map[] (a list of mappings): the keys of each element, named without the list's key. */
  fields?: readonly Field[];
  /** Inside a map[] element: the key must be given. */
  required?: boolean;
  doc: string;
}

const UNIT = { s: 1, m: 60, h: 3600, d: 86_400 } as const;

/** The pattern of a duration written as text: a whole number and an optional unit (s, m, h, d). */
export const DURATION_PATTERN = '^[0-9]{1,9}[smhd]?$';

/**
 * A duration in seconds from "30s", "5m", "4h", "5d", or a bare whole number of seconds (as text or
 * number); undefined when it is none of these.
 */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string' || !new RegExp(DURATION_PATTERN).test(v.trim())) return undefined;
  const t = v.trim();
  const unit = /[smhd]$/.test(t) ? (t.slice(-1) as keyof typeof UNIT) : 's';
  return Number(unit === 's' && !t.endsWith('s') ? t : t.slice(0, -1)) * UNIT[unit];
}

/** A duration in seconds written back the short way ("4h", "90s"). */
export function formatDuration(seconds: number): string {
  for (const [u, n] of [
    ['d', 86_400],
    ['h', 3600],
    ['m', 60],
  ] as const)
    if (seconds >= n && seconds % n === 0) return `${seconds / n}${u}`;
  return `${seconds}s`;
}

/** Checks a listen address. */
export function checkListen(v: string): string | undefined {
  const l = parseListen(v);
  if (!l) return 'must be host:port or [ipv6]:port';
  if (l.port > 65535) return 'port must be 0 to 65535';
  if (l.v6 && !isIPv6(l.host)) return 'bracketed host must be an IPv6 address';
  return undefined;
}

/** Checks an address range such as 192.168.1.0/24 or fd00::/8. */
export function checkCidr(v: string): string | undefined {
  const [addr, bits, extra] = v.split('/');
  if (extra !== undefined || !addr || bits === undefined || !/^\d{1,3}$/.test(bits)) {
    return 'must be address/prefix';
  }
  const family = isIP(addr);
  if (family === 0) return 'not an IP address';
  if (Number(bits) > (family === 4 ? 32 : 128)) return 'prefix too long';
  return undefined;
}

/** Checks a domain name as used in local_domains and hostname. */
export function checkDomain(v: string): string | undefined {
  return /^(?!-)[A-Za-z0-9.-]{1,253}$/.test(v) && !v.includes('..') ? undefined : 'not a domain name';
}

/** Checks a single IP address. */
export function checkIp(v: string): string | undefined {
  return isIP(v) ? undefined : 'not an IP address';
}

/** Checks host:port (a name, an IPv4 address or a bracketed IPv6 address) with a port 1 to 65535. */
export function checkHostPort(v: string): string | undefined {
  const hp = parseListen(v);
  if (!hp?.host) return 'must be host:port or [ipv6]:port';
  if (hp.v6 && !isIPv6(hp.host)) return 'bracketed host must be an IPv6 address';
  if (!hp.v6 && !isIPv4(hp.host) && checkDomain(hp.host)) return 'host is not a name or an address';
  return hp.port >= 1 && hp.port <= 65535 ? undefined : 'port must be 1 to 65535';
}

/** Checks a connection name as the online sources give them. */
export function checkConnection(v: string): string | undefined {
  return /^[A-Za-z0-9._@+-]{1,64}$/.test(v) ? undefined : 'must be 1 to 64 of A-Z a-z 0-9 . _ @ + -';
}

/** Checks an interface name glob (wlan*, tun?). */
export function checkInterfaceGlob(v: string): string | undefined {
  return /^[A-Za-z0-9._:@*?-]{1,32}$/.test(v) ? undefined : 'must be an interface name, * and ? allowed';
}

/** Checks a Wi-Fi network name (1 to 32 bytes). */
export function checkSsid(v: string): string | undefined {
  const n = Buffer.byteLength(v);
  return n >= 1 && n <= 32 ? undefined : 'must be 1 to 32 bytes';
}

/** The keys of one online.rules element. */
export const RULE_FIELDS: readonly Field[] = [
  {
    key: 'connection',
    type: 'string',
    required: true,
    check: checkConnection,
    doc: 'The connection this rule names (the name route files list).',
  },
  { key: 'interface', type: 'string', check: checkInterfaceGlob, doc: 'Interface name; * and ? allowed.' },
  { key: 'kind', type: 'enum', values: ['wired', 'wireless'], doc: 'wired or wireless.' },
  { key: 'default_route', type: 'boolean', doc: 'The interface must carry a default route (default true).' },
  {
    key: 'gateway',
    type: 'string',
    check: checkIp,
    doc: 'A default route through the interface goes to this gateway.',
  },
  { key: 'cidr', type: 'string', check: checkCidr, doc: 'The interface has an address in this range.' },
  { key: 'ssid', type: 'string', check: checkSsid, doc: 'The wireless interface is associated with this network.' },
  { key: 'probe', type: 'string', check: checkHostPort, doc: 'host:port that must accept a TCP connection.' },
  {
    key: 'nm_connection',
    type: 'string',
    doc: "NetworkManager's active connection on the interface has this id (* and ? allowed).",
  },
  { key: 'metered', type: 'boolean', doc: "NetworkManager says the interface's connection is (not) metered." },
  {
    key: 'nm_connectivity',
    type: 'boolean',
    doc: "Whether NetworkManager's connectivity counts (default true): portal, limited or none fails a rule that needs a default route.",
  },
];

/** The keys of one submission.local_senders element. */
export const LOCAL_SENDER_FIELDS: readonly Field[] = [
  { key: 'user', type: 'string', required: true, check: checkLoginGlob, doc: 'Local login name; * for every user.' },
  {
    key: 'senders',
    type: 'string[]',
    required: true,
    check: checkSenderPattern,
    doc: 'Envelope senders this user may use: addresses, * and ? globs, ${user} for the login name, <> for the null sender.',
  },
];

/** The stages a configured hook may serve. */
export const HOOK_STAGES = [
  'connect',
  'helo',
  'mail',
  'relay',
  'rcpt',
  'data',
  'data_end',
  'other',
  'unknown',
  'close',
  'queued',
  'delivering',
  'delivered',
  'deferred',
  'bounced',
] as const;

/** The stages after the commit, whose hooks only observe. */
export const OBSERVER_STAGES = ['queued', 'delivering', 'delivered', 'deferred', 'bounced'] as const;

/** The keys of one hooks element. */
export const HOOK_FIELDS: readonly Field[] = [
  {
    key: 'path',
    type: 'string',
    doc: 'The hook module (ESM JavaScript), an absolute path or one relative to the configuration directory; it and its folders must belong to root or the daemon user and be writable by no one else.',
  },
  {
    key: 'builtin',
    type: 'enum',
    values: ['policy_server', 'milter', 'filter', 'ip_list', 'dnsbl', 'rate_limit', 'address_map', 'vet'],
    doc: 'A built-in hook instead of a module (docs/policy.md): policy_server, milter, filter, ip_list, dnsbl, rate_limit, address_map, vet.',
  },
  { key: 'name', type: 'string', doc: 'Its name in the log and in `ferrymail hooks list` (default: the file name).' },
  {
    key: 'stages',
    type: 'string[]',
    check: (v) =>
      (HOOK_STAGES as readonly string[]).includes(v) ? undefined : `must be one of ${HOOK_STAGES.join(', ')}`,
    doc: 'The stages it serves, of those its module has handlers for (default: all of them).',
  },
  { key: 'options', type: 'mapping', doc: 'Passed to the module as they are.' },
  {
    key: 'timeout',
    type: 'duration',
    min: 1,
    max: 600,
    doc: 'How long one call may take; longer is a failure (default 30s).',
  },
  {
    key: 'on_error',
    type: 'enum',
    values: ['tempfail', 'accept'],
    doc: 'What a failure (a throw, no answer in time, no verdict) means: tempfail (451, the default) or accept (the hook is passed over).',
  },
];

/** Checks a login name or "auto". */
export function checkUserOrAuto(v: string): string | undefined {
  return v === 'auto' || /^[A-Za-z0-9._][A-Za-z0-9._$-]{0,31}$/.test(v) ? undefined : 'must be a login name or auto';
}

/** Checks a source of alias targets. */
export function checkAliasSource(v: string): string | undefined {
  return ['aliases', 'include', 'forward'].includes(v) ? undefined : 'must be aliases, include or forward';
}

/** Checks a login name (or * for everyone) in submission.local_senders. */
export function checkLoginGlob(v: string): string | undefined {
  return v === '*' || /^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}\$?$/.test(v) ? undefined : 'must be a login name or *';
}

/** Checks one sender pattern of submission.local_senders. */
export function checkSenderPattern(v: string): string | undefined {
  if (v === '<>') return undefined;
  return /^[^\s<>]+@[^\s<>@]+$/.test(v) ? undefined : 'must be local@domain (globs and ${user} allowed) or <>';
}

/** Every setting. Order is the order of docs/configuration.md. */
export const FIELDS: readonly Field[] = [
  {
    key: 'hostname',
    type: 'string',
    check: checkDomain,
    doc: 'Name used in the greeting, in Received headers and to qualify bare local names.',
  },
  { key: 'listen', type: 'string[]', check: checkListen, doc: 'SMTP listeners, host:port; [::1]:25 for IPv6.' },
  { key: 'lmtp_listen', type: 'string[]', check: checkListen, doc: 'LMTP listeners, host:port. Empty: no LMTP.' },
  {
    key: 'submission_listen',
    type: 'string[]',
    check: checkListen,
    doc: 'Submission listeners (port 587): STARTTLS and AUTH before any mail (needs tls.cert and auth.users_file). Empty: none.',
  },
  {
    key: 'submissions_listen',
    type: 'string[]',
    check: checkListen,
    doc: 'Submission listeners with implicit TLS (port 465): AUTH before any mail. Empty: none.',
  },
  { key: 'spool', type: 'string', doc: 'Spool directory. Relative paths are taken from the configuration directory.' },
  {
    key: 'log_format',
    type: 'enum',
    values: ['text', 'json'],
    doc: 'Log lines: human readable text or one JSON object per line.',
  },
  {
    key: 'local_domains',
    type: 'string[]',
    check: checkDomain,
    doc: 'The older name of local.domains: domains this host receives for; any client may send to them.',
  },
  {
    key: 'local_nets',
    type: 'string[]',
    check: checkCidr,
    doc: 'Client address ranges that may relay to any domain, as loopback may.',
  },
  {
    key: 'limits.message_size',
    type: 'integer',
    min: 1024,
    doc: 'Largest message in bytes (SIZE); larger ones get 552 5.3.4.',
  },
  { key: 'limits.recipients', type: 'integer', min: 1, doc: 'Recipients per message; more get 452 4.5.3.' },
  { key: 'limits.connections', type: 'integer', min: 1, doc: 'SMTP connections at once; more get 421 4.7.0.' },
  {
    key: 'limits.reserved_local',
    type: 'integer',
    min: 0,
    doc: 'Sessions of limits.connections kept for loopback and local_nets clients: other clients get 421 4.7.0 once all but this many are in use (by anyone).',
  },
  {
    key: 'limits.connections_per_client',
    type: 'integer',
    min: 1,
    doc: 'SMTP connections at once from one client address; more get 421 4.7.0.',
  },
  {
    key: 'limits.per_client_exempt',
    type: 'string[]',
    check: checkCidr,
    doc: 'Client ranges free of the per-client connection limit (local programs open and close connections in quick succession).',
  },
  { key: 'limits.command_line', type: 'integer', min: 512, doc: 'Longest SMTP command line in bytes.' },
  {
    key: 'limits.header_size',
    type: 'integer',
    min: 1024,
    doc: 'Largest header section in bytes; larger gets 552 5.3.4.',
  },
  {
    key: 'limits.errors',
    type: 'integer',
    min: 1,
    doc: 'Errors and unknown commands in one session before 421 and close.',
  },
  { key: 'limits.idle_timeout', type: 'integer', min: 1, max: 86_400, doc: 'Seconds an SMTP client may stay silent.' },
  {
    key: 'limits.session_time',
    type: 'integer',
    min: 10,
    max: 86_400,
    doc: 'Seconds a session of a client outside loopback and local_nets may last in all; then 421 4.4.2 and close (a message being received finishes first while it keeps limits.min_data_rate; with no minimum rate it is cut off).',
  },
  {
    key: 'limits.min_data_rate',
    type: 'integer',
    min: 0,
    doc: 'Bytes per second a client outside loopback and local_nets must keep up on average during DATA; slower gets 421 4.4.2. 0: no minimum.',
  },
  {
    key: 'limits.spool_minfree',
    type: 'integer',
    min: 0,
    doc: "Bytes the spool's file system must keep free after a new message; below it new mail gets 452 4.3.1 (exit 75), so that queue state always has room.",
  },
  {
    key: 'limits.received_hops',
    type: 'integer',
    min: 1,
    doc: 'Received headers above which a message is taken for a loop (554 5.4.6).',
  },
  {
    key: 'smtp.bare_line_ends',
    type: 'enum',
    values: ['reject', 'normalize'],
    doc: 'A bare LF or CR in DATA: reject the message (550 5.6.0) or turn it into CRLF.',
  },
  {
    key: 'smtp.reverse_lookup',
    type: 'boolean',
    doc: 'Look up the client name by reverse DNS (waits up to 1.5 s when offline).',
  },
  {
    key: 'smtp.early_talker_delay',
    type: 'integer',
    min: 0,
    max: 60_000,
    doc: 'Milliseconds to wait before the greeting to clients outside loopback and local_nets; a client that talks first is dropped.',
  },
  { key: 'smtp.banner', type: 'string', doc: 'Text after the host name in the 220 greeting.' },
  { key: 'tls.cert', type: 'string', doc: 'PEM certificate chain for STARTTLS. Unset: no STARTTLS.' },
  { key: 'tls.key', type: 'string', doc: 'PEM private key for tls.cert, readable only by its owner.' },
  {
    key: 'online.state_file',
    type: 'string',
    doc: 'File whose first line names the connection we are on; missing or empty means offline.',
  },
  {
    key: 'online.command',
    type: 'string[]',
    doc: 'Command (argv, no shell) whose exit 0 and first output line name the connection (masqmail online_query).',
  },
  {
    key: 'online.rules',
    type: 'map[]',
    fields: RULE_FIELDS,
    doc: 'Rules naming the connection from interface facts; the first that holds wins (docs/online.md).',
  },
  {
    key: 'online.probe_timeout',
    type: 'integer',
    min: 100,
    max: 30_000,
    doc: "Milliseconds a rule's probe may take to connect.",
  },
  {
    key: 'local.domains',
    type: 'string[]',
    check: checkDomain,
    doc: "More domains whose mail is delivered on this host; hostname, localhost and the host's own address literals ([192.0.2.1]) always are.",
  },
  {
    key: 'local.addresses',
    type: 'string[]',
    check: checkSenderPattern,
    doc: 'Addresses (globs) delivered on this host although their domain is not local; the local part names the user or alias.',
  },
  {
    key: 'local.caseless',
    type: 'boolean',
    doc: 'Local parts find aliases and users whatever their case (masqmail alias_local_caseless).',
  },
  {
    key: 'local.delimiter',
    type: 'string',
    check: (v) => (v === '' || /^[+\-=_.]$/.test(v) ? undefined : 'must be one of + - = _ . or empty'),
    doc: 'Recipient delimiter: user+extension is delivered to user; empty: none.',
  },
  {
    key: 'local.aliases',
    type: 'string',
    doc: 'The aliases file (aliases(5) format); default /etc/aliases when it exists; "" for none.',
  },
  {
    key: 'local.root',
    type: 'string',
    check: checkUserOrAuto,
    doc: "Who reads root's mail (and postmaster's) when the aliases do not say: a login name, or auto: the daemon's own user, or for a daemon run by root the first person's account (uid 1000 and up, with a login shell), else root.",
  },
  {
    key: 'local.default_user',
    type: 'string',
    check: checkUserOrAuto,
    doc: 'The user commands and files named by a root-owned aliases or include file run as (Postfix default_privs).',
  },
  {
    key: 'local.mailbox',
    type: 'enum',
    values: ['mbox', 'maildir', 'mda', 'lmtp'],
    doc: "How a user's mail is delivered: an mbox file in local.mail_dir, the Maildir local.maildir in the home directory, the command local.mda, or the LMTP server local.lmtp.",
  },
  { key: 'local.mail_dir', type: 'string', doc: 'The folder of the mbox files, one per user (Debian: /var/mail).' },
  {
    key: 'local.maildir',
    type: 'string',
    doc: "The Maildir, relative to the user's home directory (ending in /).",
  },
  {
    key: 'local.mda',
    type: 'string[]',
    doc: 'The delivery agent for local.mailbox: mda (argv, no shell, run as the user); ${user}, ${extension}, ${recipient}, ${sender}, ${home}, ${local_part}, ${domain} are filled in.',
  },
  {
    key: 'local.command_time_limit',
    type: 'duration',
    min: 1,
    max: 86_400,
    doc: 'How long a delivery agent (local.mda) or a |command target may run before it is killed and the delivery waits (Postfix: command_time_limit).',
  },
  {
    key: 'local.mda_from_line',
    type: 'boolean',
    doc: 'The delivery agent gets the message with an mbox "From sender date" line first, as Postfix\'s local(8) gives it to procmail; false for maildrop, which writes its own.',
  },
  {
    key: 'local.lmtp',
    type: 'string',
    check: (v) => (v.startsWith('/') || !checkHostPort(v) ? undefined : 'must be a unix socket path or host:port'),
    doc: 'The LMTP server for local.mailbox: lmtp (Dovecot: /run/dovecot/lmtp), a unix socket path or host:port.',
  },
  {
    key: 'local.deliver_in_dialogue',
    type: 'string[]',
    doc: 'Local domains ("*": all) whose recipients are handed to local.lmtp before the final reply to DATA, so the sender learns each verdict in the SMTP dialogue; such a recipient comes in a transaction of its own (452 4.5.3 to the others). Only with local.mailbox: lmtp.',
  },
  { key: 'local.forward', type: 'boolean', doc: "Honour a user's ~/.forward (checked as Postfix does)." },
  {
    key: 'local.allow_commands',
    type: 'string[]',
    check: checkAliasSource,
    doc: 'Where a |command target is allowed: aliases, include, forward.',
  },
  {
    key: 'local.allow_files',
    type: 'string[]',
    check: checkAliasSource,
    doc: 'Where a /file target is allowed: aliases, include, forward.',
  },
  {
    key: 'queue.retry_min',
    type: 'duration',
    min: 1,
    max: 86_400,
    doc: 'Wait after the first failed attempt of a recipient; doubled after each further one.',
  },
  { key: 'queue.retry_max', type: 'duration', min: 1, max: 7 * 86_400, doc: 'Longest wait between two attempts.' },
  {
    key: 'queue.lifetime',
    type: 'duration',
    min: 60,
    max: 365 * 86_400,
    doc: 'Time in the queue after which a recipient fails and the sender gets a failure notice.',
  },
  {
    key: 'queue.delay_warnings',
    type: 'duration[]',
    min: 60,
    max: 365 * 86_400,
    doc: 'Ages at which the sender gets a delay notice for recipients still waiting; [] sends none.',
  },
  {
    key: 'queue.route_hold_down',
    type: 'duration',
    min: 1,
    max: 86_400,
    doc: 'How long a route whose server could not be reached stays down after the run that found it (cleared by a change of connection or a manual flush).',
  },
  {
    key: 'queue.local_notices',
    type: 'enum',
    values: ['unroutable', 'always'],
    doc: 'When notices are also delivered locally (notice_mailbox, notify_command): only when no route could carry them now, or always.',
  },
  {
    key: 'queue.notice_mailbox',
    type: 'string',
    doc: 'mbox file that gets a copy of every notice delivered locally. Relative paths are taken from the configuration directory.',
  },
  {
    key: 'queue.notify_command',
    type: 'string[]',
    doc: 'Command (argv, no shell) run for every notice delivered locally; ${summary}, ${subject}, ${sender}, ${id} are filled in, the subject line and then the summary are on stdin.',
  },
  {
    key: 'auth.users_file',
    type: 'string',
    doc: 'File of user:scrypt-hash lines (ferrymail auth hash). Unset: no SMTP AUTH.',
  },
  {
    key: 'auth.check_command',
    type: 'string[]',
    doc: 'A command (argv, no shell) that checks a login instead of auth.users_file: it reads "USER\\0PASSWORD\\0" on standard input and exits 0 for good, 1 for bad, anything else for "cannot tell now" (454 4.7.0).',
  },
  {
    key: 'auth.max_failures',
    type: 'integer',
    min: 1,
    doc: 'Failed AUTH attempts from one client address, or for one user name, within auth.failure_window after which AUTH from that address or for that name is refused with 454 4.7.0, without a password check, for one auth.failure_window.',
  },
  {
    key: 'auth.failure_window',
    type: 'duration',
    min: 1,
    max: 86_400,
    doc: 'How long a failed AUTH attempt counts against its client address and user name, and how long a lockout lasts.',
  },
  {
    key: 'desktop.notify',
    type: 'boolean',
    doc: 'Desktop notifications (for a relay in a user session): one for each bounce, and one when mail has waited longer than desktop.waiting_after.',
  },
  {
    key: 'desktop.command',
    type: 'string[]',
    doc: 'The notifying command (argv, no shell); the summary and the body are added as its last two arguments, and --urgency=critical before them for a bounce.',
  },
  {
    key: 'desktop.waiting_after',
    type: 'duration',
    min: 0,
    max: 30 * 86_400,
    doc: 'Age after which waiting mail is notified (once per message). 0: never.',
  },
  {
    key: 'dns.servers',
    type: 'string[]',
    check: (v) =>
      isIP(v) || /^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(v) || /^\d+\.\d+\.\d+\.\d+:\d{1,5}$/.test(v)
        ? undefined
        : 'must be an address, address:port or [v6]:port',
    doc: 'DNS servers the built-in hooks ask (DNS lists); empty: the system resolver configuration.',
  },
  {
    key: 'hooks',
    type: 'map[]',
    fields: HOOK_FIELDS,
    doc: 'Modules run at the SMTP stages, in this order (docs/hooks.md).',
  },
  {
    key: 'submission.senders',
    type: 'map[]',
    fields: LOCAL_SENDER_FIELDS,
    doc: 'Envelope senders each authenticated user may use (Postfix smtpd_sender_login_maps with reject_sender_login_mismatch); empty: any.',
  },
  {
    key: 'submission.local_senders',
    type: 'map[]',
    fields: LOCAL_SENDER_FIELDS,
    doc: 'Envelope senders each local user may give to the sendmail command (Postfix local_login_sender_maps); empty: any.',
  },
  {
    key: 'submission.suspend_after',
    type: 'integer',
    min: 0,
    doc: 'Refusals by hooks (a limit, a filter, a milter, a policy server) of one authenticated user within submission.suspend_window after which that user is suspended until released (ferrymail auth release USER), and postmaster gets a notice. 0: never.',
  },
  {
    key: 'submission.suspend_window',
    type: 'duration',
    min: 1,
    max: 7 * 86_400,
    doc: 'How long a refusal counts towards submission.suspend_after.',
  },
];

/** Looks a field up by its dotted key. */
export function fieldFor(key: string): Field | undefined {
  return FIELDS.find((f) => f.key === key);
}
