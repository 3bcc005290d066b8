/**
 * Loads the configuration: reads DIR/ferrymail.yaml (if any), validates it against the settings table,
 * fills in the embedded defaults and returns one frozen Config.
 *
 * The file is untrusted text. A missing file means the embedded default. Any problem throws a
 * ConfigError listing every issue with file, line and key; nothing half-valid is ever returned.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { FerryError } from '../errors.js';
import { defaultSpool, settingsLocation } from './paths.js';
import { parseDuration } from './schema.js';
import { deepFreeze, defaultSettings, type Config, type Settings } from './types.js';

export { settingsLocation };
import { validateSettings, type ConfigIssue } from './validate.js';

/** A configuration that cannot be used, with every issue found. */
export class ConfigError extends FerryError {
  readonly issues: ConfigIssue[];
  readonly file: string;
  constructor(file: string, issues: ConfigIssue[]) {
    const first = issues[0];
    const where = first ? `${file}${first.line ? `:${first.line}` : ''}: ${first.key}: ${first.message}` : file;
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more; run 'ferrymail config check')` : '';
    super('config', `invalid configuration: ${where}${more}`);
    this.issues = issues;
    this.file = file;
  }
}

/** The parsed settings file with a way to find the line of a key. */
export interface ParsedSettings {
  file: string;
  exists: boolean;
  data: Settings;
  lineOf: (p: (string | number)[]) => number | undefined;
  syntax: ConfigIssue[];
  doc?: Document;
}

/** Reads and parses the settings file without validating it. */
export function parseSettingsFile(file: string): ParsedSettings {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      return { file, exists: false, data: {}, lineOf: () => undefined, syntax: [] };
    }
    const issue = { key: '(file)', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? err}` };
    return { file, exists: true, data: {}, lineOf: () => undefined, syntax: [issue] };
  }
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, uniqueKeys: true, prettyErrors: false });
  const syntax = doc.errors.map((e) => ({
    key: '(syntax)',
    line: counter.linePos(e.pos[0]).line,
    message: e.message.split('\n')[0] ?? 'syntax error',
  }));
  const lineOf = (p: (string | number)[]): number | undefined => {
    const node = doc.getIn(p, true);
    const range = isNode(node) ? node.range : undefined;
    return range ? counter.linePos(range[0]).line : undefined;
  };
  const data = syntax.length ? {} : ((doc.toJS() as Settings | null) ?? {});
  return { file, exists: true, data, lineOf, syntax, doc };
}

/** Checks that a configured file can be read. */
function checkReadable(
  key: string,
  p: string | undefined,
  issues: ConfigIssue[],
  lineOf: ParsedSettings['lineOf'],
  mayBeMissing = false,
): void {
  if (!p) return;
  try {
    fs.accessSync(p, fs.constants.R_OK);
  } catch (err) {
    if (mayBeMissing && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
    issues.push({ key, line: lineOf(key.split('.')), message: `cannot read ${p}` });
  }
}

/** Merges file settings over the defaults and makes paths absolute. */
function normalise(dir: string, parsed: ParsedSettings): Config {
  const d = defaultSettings();
  const s = parsed.data;
  // "~/..." is the user's home, as a shell would read it; other relative paths are the configuration
  // directory's
  const abs = (p: string | undefined): string | undefined =>
    p ? path.resolve(dir, p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p) : undefined;
  return {
    ...d,
    ...s,
    dir,
    file: parsed.file,
    fromFile: parsed.exists,
    spool: abs(s.spool) ?? defaultSpool(dir),
    limits: { ...d.limits, ...s.limits },
    smtp: { ...d.smtp, ...s.smtp },
    tls: { cert: abs(s.tls?.cert), key: abs(s.tls?.key) },
    auth: {
      users_file: abs(s.auth?.users_file),
      check_command: s.auth?.check_command ?? d.auth.check_command,
      max_failures: s.auth?.max_failures ?? d.auth.max_failures,
      failure_window:
        s.auth?.failure_window === undefined
          ? d.auth.failure_window
          : (parseDuration(s.auth.failure_window) ?? d.auth.failure_window),
    },
    submission: {
      local_senders: s.submission?.local_senders ?? d.submission.local_senders,
      senders: s.submission?.senders ?? d.submission.senders,
      suspend_after: s.submission?.suspend_after ?? d.submission.suspend_after,
      suspend_window:
        s.submission?.suspend_window === undefined
          ? d.submission.suspend_window
          : (parseDuration(s.submission.suspend_window) ?? d.submission.suspend_window),
    },
    dns: { servers: s.dns?.servers ?? d.dns.servers },
    desktop: {
      notify: s.desktop?.notify ?? d.desktop.notify,
      command: s.desktop?.command ?? d.desktop.command,
      waiting_after:
        s.desktop?.waiting_after === undefined
          ? d.desktop.waiting_after
          : (parseDuration(s.desktop.waiting_after) ?? d.desktop.waiting_after),
    },
    hooks: (s.hooks ?? []).map((h) => ({
      ...h,
      path: abs(h.path),
      timeout: h.timeout === undefined ? 30 : (parseDuration(h.timeout) ?? 30),
      on_error: h.on_error ?? 'tempfail',
    })),
    online: {
      state_file: abs(s.online?.state_file),
      command: s.online?.command ?? [],
      rules: s.online?.rules ?? [],
      probe_timeout: s.online?.probe_timeout ?? d.online.probe_timeout,
    },
    queue: queueSettings(d.queue, s.queue, abs),
    local: localSettings(d.local, s, abs),
  } as Config;
}

/** The local settings: paths made absolute, the aliases file's default, local_domains merged in. */
function localSettings(d: Config['local'], s: Settings, abs: (p?: string) => string | undefined): Config['local'] {
  const l = s.local ?? {};
  const aliases = l.aliases === undefined ? (fs.existsSync('/etc/aliases') ? '/etc/aliases' : undefined) : l.aliases;
  return {
    ...d,
    ...l,
    domains: [...new Set([...(l.domains ?? d.domains), ...(s.local_domains ?? [])].map((x) => x.toLowerCase()))],
    aliases: aliases ? abs(aliases) : undefined,
    mail_dir: abs(l.mail_dir) ?? d.mail_dir,
    lmtp: l.lmtp?.startsWith('/') ? abs(l.lmtp) : l.lmtp || undefined,
    deliver_in_dialogue: (l.deliver_in_dialogue ?? d.deliver_in_dialogue).map((x) => x.toLowerCase()),
    command_time_limit:
      l.command_time_limit === undefined
        ? d.command_time_limit
        : (parseDuration(l.command_time_limit as unknown as string) ?? d.command_time_limit),
  };
}

/** The queue settings with durations in seconds (the values were validated before). */
function queueSettings(
  d: Config['queue'],
  s: Settings['queue'] = {},
  abs: (p?: string) => string | undefined,
): Config['queue'] {
  const sec = (v: string | number | undefined, dflt: number): number =>
    v === undefined ? dflt : (parseDuration(v) ?? dflt);
  const warnings = s.delay_warnings?.map((w) => parseDuration(w) ?? 0) ?? d.delay_warnings;
  return {
    retry_min: sec(s.retry_min, d.retry_min),
    retry_max: sec(s.retry_max, d.retry_max),
    lifetime: sec(s.lifetime, d.lifetime),
    delay_warnings: [...new Set(warnings)].sort((a, b) => a - b),
    route_hold_down: sec(s.route_hold_down, d.route_hold_down),
    local_notices: s.local_notices ?? d.local_notices,
    notice_mailbox: abs(s.notice_mailbox),
    notify_command: s.notify_command ?? d.notify_command,
  };
}

/**
 * Loads, validates and freezes the configuration of a directory; throws ConfigError on any issue.
 * `submission`: for the sendmail command, which never reads the TLS key, certificate or users file (on a
 * multi-user host other users may not read them), so their readability is not checked.
 */
export function loadConfig(dirOrFile?: string, opts: { submission?: boolean } = {}): Config {
  const { dir, file } = settingsLocation(dirOrFile);
  const parsed = parseSettingsFile(file);
  const issues = [...parsed.syntax, ...validateSettings(parsed.data, parsed.lineOf)];
  if (issues.length === 0) {
    const cfg = normalise(dir, parsed);
    issues.push(...fileIssues(cfg, parsed.lineOf, opts.submission));
    if (issues.length === 0) return deepFreeze(cfg);
  }
  throw new ConfigError(parsed.file, issues);
}

/** Checks what a valid-looking configuration refers to: files readable, tls.cert and tls.key together. */
function fileIssues(cfg: Config, lineOf: ParsedSettings['lineOf'], submission = false): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!submission) {
    checkReadable('tls.cert', cfg.tls.cert, issues, lineOf);
    checkReadable('tls.key', cfg.tls.key, issues, lineOf);
    // a users file not made yet is a daemon nobody can log in to, and what `ferrymail auth add` makes
    checkReadable('auth.users_file', cfg.auth.users_file, issues, lineOf, true);
  }
  if (!!cfg.tls.cert !== !!cfg.tls.key) issues.push({ key: 'tls', message: 'tls.cert and tls.key go together' });
  const q = cfg.queue;
  if (q.retry_min > q.retry_max)
    issues.push({
      key: 'queue.retry_min',
      line: lineOf(['queue', 'retry_min']),
      message: 'must not be longer than queue.retry_max',
    });
  const late = q.delay_warnings.filter((w) => w >= q.lifetime);
  if (late.length)
    issues.push({
      key: 'queue.delay_warnings',
      line: lineOf(['queue', 'delay_warnings']),
      message: 'every warning must come before queue.lifetime',
    });
  return issues;
}

/** Every issue of settings data that would be written to file in dir (used before `config set` writes). */
export function settingsIssues(dir: string, file: string, data: Settings): ConfigIssue[] {
  const issues = validateSettings(data);
  if (issues.length) return issues;
  return fileIssues(normalise(dir, { file, exists: true, data, lineOf: () => undefined, syntax: [] }), () => undefined);
}
