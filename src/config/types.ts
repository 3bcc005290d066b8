/**
 * The normalised configuration every other module receives: complete, validated, frozen.
 *
 * Pure types and the embedded default; cannot fail.
 */
import os from 'node:os';
import type { InterfaceRule } from '../domain/online.js';

/** Validated settings with every default filled in and paths made absolute. */
export interface Config {
  /** Directory the settings were read from. */
  dir: string;
  /** The settings file, whether or not it exists. */
  file: string;
  /** True when the settings file exists (false: embedded default). */
  fromFile: boolean;
  hostname: string;
  listen: string[];
  lmtp_listen: string[];
  /** Submission listeners: STARTTLS, then AUTH, before any mail (port 587). */
  submission_listen: string[];
  /** Submission listeners with implicit TLS (port 465). */
  submissions_listen: string[];
  spool: string;
  log_format: 'text' | 'json';
  local_domains: string[];
  local_nets: string[];
  limits: {
    message_size: number;
    recipients: number;
    connections: number;
    reserved_local: number;
    connections_per_client: number;
    per_client_exempt: string[];
    command_line: number;
    header_size: number;
    errors: number;
    idle_timeout: number;
    session_time: number;
    min_data_rate: number;
    spool_minfree: number;
    received_hops: number;
  };
  smtp: {
    bare_line_ends: 'reject' | 'normalize';
    reverse_lookup: boolean;
    early_talker_delay: number;
    banner: string;
  };
  tls: { cert?: string; key?: string };
  auth: { users_file?: string; check_command: string[]; max_failures: number; failure_window: number };
  /** Who may submit what. */
  submission: {
    local_senders: LocalSenders[];
    senders: LocalSenders[];
    /** Refusals within suspend_window (seconds) that suspend a user; 0: never. */
    suspend_after: number;
    suspend_window: number;
  };
  /** Hook modules at the SMTP stages, in order. */
  hooks: HookSetting[];
  /** The DNS servers built-in hooks ask (empty: the system's). */
  dns: { servers: string[] };
  /** Desktop notifications (a per-user relay): for a bounce, and for mail waiting long. */
  desktop: { notify: boolean; command: string[]; waiting_after: number };
  online: { state_file?: string; command: string[]; rules: InterfaceRule[]; probe_timeout: number };
  /** Mail for this host's own people: what is local, aliases, mailboxes (docs/local.md). */
  local: LocalSettings;
  /** Retry times and notices; durations in seconds (the file writes them as "5m", "4h", "5d"). */
  queue: {
    retry_min: number;
    retry_max: number;
    lifetime: number;
    delay_warnings: number[];
    route_hold_down: number;
    local_notices: 'unroutable' | 'always';
    notice_mailbox?: string;
    notify_command: string[];
  };
}

/** Where alias targets come from, for allow_commands and allow_files. */
export type AliasSource = 'aliases' | 'include' | 'forward';

/** The local.* settings. */
export interface LocalSettings {
  /** Domains delivered here besides hostname, localhost and the host's address literals. */
  domains: string[];
  /** Address globs delivered here although their domain is not local. */
  addresses: string[];
  /** Local parts are matched against alias names and user names whatever their case. */
  caseless: boolean;
  /** The recipient delimiter: user+ext is user's; "" for none. */
  delimiter: string;
  /** The aliases file; undefined: none. */
  aliases?: string;
  /** Who reads root's mail when the aliases do not say: a login name, or auto. */
  root: string;
  /** The user commands and files of a root-owned aliases or include file run as. */
  default_user: string;
  /** How a user's mailbox is delivered. */
  mailbox: 'mbox' | 'maildir' | 'mda' | 'lmtp';
  /** The folder of mbox files (USER in it). */
  mail_dir: string;
  /** The Maildir, relative to the user's home directory. */
  maildir: string;
  /** The delivery agent's argv for mailbox: mda. */
  mda: string[];
  /** The mda gets the message with a "From sender date" line first (procmail; not maildrop). */
  mda_from_line: boolean;
  /** Seconds a delivery agent or command may run (Postfix: command_time_limit). */
  command_time_limit: number;
  /** The local LMTP server for mailbox: lmtp: a unix socket path or host:port. */
  lmtp?: string;
  /** Local domains whose recipients are delivered to local.lmtp before the final reply to DATA ("*":
   * every local domain), so that the sender learns each verdict in the dialogue. */
  deliver_in_dialogue: string[];
  /** Honour ~/.forward. */
  forward: boolean;
  allow_commands: AliasSource[];
  allow_files: AliasSource[];
}

/** One hooks entry, its path absolute and its timeout in seconds. */
export interface HookSetting {
  /** A module's path, or undefined for a built-in. */
  path?: string;
  builtin?: 'policy_server' | 'milter' | 'filter' | 'ip_list' | 'dnsbl' | 'rate_limit' | 'address_map' | 'vet';
  name?: string;
  stages?: string[];
  options?: Record<string, unknown>;
  timeout: number;
  on_error: 'tempfail' | 'accept';
}

/** One submission.local_senders entry: a login name (or *) and the envelope senders it may use. */
export interface LocalSenders {
  user: string;
  senders: string[];
}

/** The settings a file can give; everything optional. */
export type Settings = Omit<
  Partial<Config>,
  | 'dir'
  | 'file'
  | 'fromFile'
  | 'limits'
  | 'smtp'
  | 'tls'
  | 'auth'
  | 'online'
  | 'queue'
  | 'submission'
  | 'local'
  | 'hooks'
  | 'desktop'
> & {
  desktop?: Partial<Omit<Config['desktop'], 'waiting_after'>> & { waiting_after?: string | number };
  local?: Partial<LocalSettings>;
  dns?: Partial<Config['dns']>;
  hooks?: Array<
    Omit<HookSetting, 'timeout' | 'on_error'> & { timeout?: string | number; on_error?: 'tempfail' | 'accept' }
  >;
  online?: Partial<Config['online']>;
  /** Durations as written: "5m", "4h", or whole seconds. */
  queue?: Partial<Record<'retry_min' | 'retry_max' | 'lifetime' | 'route_hold_down', string | number>> & {
    delay_warnings?: (string | number)[];
    local_notices?: Config['queue']['local_notices'];
    notice_mailbox?: string;
    notify_command?: string[];
  };
  limits?: Partial<Config['limits']>;
  smtp?: Partial<Config['smtp']>;
  tls?: Partial<Config['tls']>;
  auth?: Partial<Omit<Config['auth'], 'failure_window'>> & { failure_window?: string | number };
  submission?: Partial<Omit<Config['submission'], 'suspend_window'>> & { suspend_window?: string | number };
};

/** The embedded default settings (spool and hostname are filled in at load time). */
export function defaultSettings(): Omit<Config, 'dir' | 'file' | 'fromFile' | 'spool'> {
  return {
    hostname: os.hostname().toLowerCase() || 'localhost',
    listen: ['127.0.0.1:2525', '[::1]:2525'],
    lmtp_listen: [],
    submission_listen: [],
    submissions_listen: [],
    log_format: 'text',
    local_domains: ['localhost'],
    local_nets: ['127.0.0.0/8', '::1/128'],
    limits: {
      message_size: 52_428_800,
      recipients: 1000,
      connections: 100,
      reserved_local: 10,
      connections_per_client: 20,
      per_client_exempt: ['127.0.0.0/8', '::1/128'],
      command_line: 2048,
      header_size: 102_400,
      errors: 10,
      idle_timeout: 300,
      session_time: 1800,
      min_data_rate: 500,
      spool_minfree: 20 * 1024 * 1024,
      received_hops: 50,
    },
    smtp: { bare_line_ends: 'reject', reverse_lookup: false, early_talker_delay: 100, banner: '' },
    tls: {},
    auth: { check_command: [], max_failures: 10, failure_window: 900 },
    submission: { local_senders: [], senders: [], suspend_after: 0, suspend_window: 3600 },
    hooks: [],
    dns: { servers: [] },
    desktop: { notify: false, command: ['notify-send', '--app-name=ferrymail'], waiting_after: 3600 },
    online: { command: [], rules: [], probe_timeout: 2000 },
    local: {
      domains: [],
      addresses: [],
      caseless: true,
      delimiter: '+',
      root: 'auto',
      default_user: 'nobody',
      mailbox: 'mbox',
      mail_dir: '/var/mail',
      maildir: 'Maildir/',
      mda: [],
      mda_from_line: true,
      command_time_limit: 600,
      deliver_in_dialogue: [],
      forward: false,
      allow_commands: ['aliases', 'forward'],
      allow_files: ['aliases', 'forward'],
    },
    // Postfix's defaults: 5 minutes doubling to 4 hours, 5 days in all, one delay warning at 4 hours
    queue: {
      retry_min: 300,
      retry_max: 14_400,
      lifetime: 432_000,
      delay_warnings: [14_400],
      route_hold_down: 60,
      local_notices: 'unroutable',
      notify_command: [],
    },
  };
}

/** Freezes an object and everything below it. */
export function deepFreeze<T>(obj: T): T {
  if (obj && typeof obj === 'object') {
    for (const v of Object.values(obj)) deepFreeze(v);
    Object.freeze(obj);
  }
  return obj;
}
