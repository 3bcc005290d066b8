/**
 * Route files: `<config-dir>/routes/*.yaml`, one route per file, taken in file-name order (name them
 * 10-home.yaml, 20-work.yaml to order them). Turns them into route/'s plain Route records.
 *
 * Files are the administrator's but still checked: every problem is reported with file, line and key, all
 * at once, as for ferrymail.yaml. The transport section is checked by transport-section.ts and carried as
 * it is for queue/wiring.ts. Throws ConfigError listing every issue.
 */
import fs from 'node:fs';
import path from 'node:path';
import { domainToASCII } from 'node:url';
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import {
  DKIM_ALGORITHMS,
  type DkimAlgorithm,
  type DkimSettings,
  type Route,
  type RewriteMaps,
} from '../route/types.js';
import { DEFAULT_SIGNED_HEADERS, keyFileProblem } from '../sign/dkim.js';
import { ConfigError } from './load.js';
import { checkTransport } from './transport-section.js';
import type { ConfigIssue } from './validate.js';

const LISTS = [
  'connections',
  'allowed_senders',
  'denied_senders',
  'allowed_recipients',
  'denied_recipients',
  'allowed_from',
  'denied_from',
  'allowed_users',
  'denied_users',
] as const;
const FLAGS = ['permanent', 'last_route', 'connect_error_fail', 'hide_local_received'] as const;
const MAPS = ['envelope_sender', 'from', 'sender', 'reply_to', 'mail_followup_to'] as const;
const KEYS = new Set<string>(['name', ...LISTS, ...FLAGS, 'rewrite', 'dkim', 'transport', 'uncertain', 'max_size']);
const DKIM_KEYS = new Set(['domain', 'selector', 'key_file', 'headers', 'algorithm']);
/** Dot-separated LDH labels (a DKIM domain or selector). */
const LABELS = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Reports a problem with a key (file-relative), at the line of the node at `at`. */
type AddIssue = (key: string, message: string, at?: (string | number)[]) => void;

/** A route's max_size: bytes, or a number with k, M or G (1024s). */
function sizeLimit(v: unknown, add: AddIssue): { maxSize?: number } {
  if (v === undefined) return {};
  const m = /^(\d+)\s*([kmg]?)i?b?$/i.exec(String(v).trim());
  const n = m ? Number(m[1]) * 1024 ** ' kmg'.indexOf((m[2] || ' ').toLowerCase()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    add('max_size', 'must be a size in bytes, or with k, M or G (as 512k or 5M)');
    return {};
  }
  return { maxSize: n };
}

/** Reads every route file of a configuration directory, in file-name order. */
export function loadRoutes(configDir: string): Route[] {
  const dir = path.join(configDir, 'routes');
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => /\.ya?ml$/.test(n))
      .sort();
  } catch {
    return [];
  }
  const issues: ConfigIssue[] = [];
  const routes = names.flatMap((n) => {
    const file = path.join(dir, n);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      issues.push({
        key: `${n}: (file)`,
        message: `cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      });
      return [];
    }
    return [parseRoute(file, text, issues)];
  });
  const seen = new Set<string>();
  for (const r of routes) {
    if (seen.has(r.name)) issues.push({ key: 'name', message: `route name ${r.name} is used twice` });
    seen.add(r.name);
  }
  if (issues.length) throw new ConfigError(dir, issues);
  return routes;
}

/** Parses one route file, adding its problems (prefixed with the file name) to issues. */
function parseRoute(file: string, text: string, issues: ConfigIssue[]): Route {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, uniqueKeys: true });
  const base = path.basename(file);
  const add: AddIssue = (key, message, at = [key]) => {
    const node = doc.getIn(at, true) as { range?: [number, number, number] } | undefined;
    const line = node?.range ? counter.linePos(node.range[0]).line : undefined;
    issues.push({ key: `${base}: ${key}`, line, message });
  };
  for (const e of doc.errors)
    issues.push({
      key: `${base}: (syntax)`,
      line: counter.linePos(e.pos[0]).line,
      message: e.message.split('\n')[0] ?? '',
    });
  const data = (doc.errors.length ? {} : doc.toJS()) as Record<string, unknown> | null;
  const d = data && typeof data === 'object' && !Array.isArray(data) ? data : {};
  for (const k of Object.keys(d)) if (!KEYS.has(k)) add(k, 'unknown key');
  const list = (k: (typeof LISTS)[number]): string[] => {
    const v = d[k] ?? [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
      add(k, 'must be a list of strings');
      return [];
    }
    return v as string[];
  };
  const flag = (k: (typeof FLAGS)[number]): boolean => {
    const v = d[k] ?? false;
    if (typeof v !== 'boolean') add(k, 'must be true or false');
    return v === true;
  };
  const name = typeof d.name === 'string' && d.name ? d.name : base.replace(/\.ya?ml$/, '');
  const route: Route = {
    name,
    connections: list('connections'),
    permanent: flag('permanent'),
    senders: { allow: list('allowed_senders'), deny: list('denied_senders') },
    recipients: { allow: list('allowed_recipients'), deny: list('denied_recipients') },
    fromHeader: { allow: list('allowed_from'), deny: list('denied_from') },
    users: { allow: list('allowed_users'), deny: list('denied_users') },
    rewrite: rewriteMaps(doc, d.rewrite, add),
    lastRoute: flag('last_route'),
    connectErrorFail: flag('connect_error_fail'),
    hideLocalReceived: flag('hide_local_received'),
    uncertain: uncertainPolicy(d.uncertain, add),
    ...sizeLimit(d.max_size, add),
    transport:
      d.transport && typeof d.transport === 'object' && !Array.isArray(d.transport)
        ? (d.transport as Record<string, unknown>)
        : {},
  };
  const dkim = d.dkim === undefined ? undefined : dkimSettings(doc, d.dkim, path.dirname(path.dirname(file)), add);
  if (dkim) route.dkim = dkim;
  checkTransport(d.transport, add);
  if (!route.permanent && route.connections.length === 0)
    add('connections', 'name the connections this route serves, or set permanent: true', []);
  return route;
}

/** Reads `uncertain: retry | retry-any | hold` (default retry). */
function uncertainPolicy(v: unknown, add: (k: string, m: string) => void): Route['uncertain'] {
  if (v === undefined || v === 'retry' || v === 'hold' || v === 'retry-any') return v ?? 'retry';
  add('uncertain', 'must be retry, retry-any or hold');
  return 'retry';
}

/** Reads the rewrite section: each map keeps the order of its keys (the first match wins). */
function rewriteMaps(doc: Document, raw: unknown, add: AddIssue): RewriteMaps {
  const out: RewriteMaps = { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] };
  const field = {
    envelope_sender: 'envelopeSender',
    from: 'from',
    sender: 'sender',
    reply_to: 'replyTo',
    mail_followup_to: 'mailFollowupTo',
  } as const;
  if (raw === undefined) return out;
  const node = doc.getIn(['rewrite'], true);
  if (!isMap(node)) {
    add('rewrite', 'must be a mapping of envelope_sender, from, sender, reply_to, mail_followup_to');
    return out;
  }
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!(MAPS as readonly string[]).includes(k)) {
      add(`rewrite.${k}`, 'unknown map', ['rewrite', k]);
      continue;
    }
    const inner = doc.getIn(['rewrite', k], true);
    if (!isMap(inner) || isSeq(inner) || !Object.values(v as object).every((x) => typeof x === 'string')) {
      add(`rewrite.${k}`, 'must map address globs to addresses', ['rewrite', k]);
      continue;
    }
    out[field[k as (typeof MAPS)[number]]] = Object.entries(v as Record<string, string>);
  }
  return out;
}

/**
 * Reads the dkim section: domain and selector as DNS names, the key file (relative to the configuration
 * directory) present and readable by its owner only, the header fields to sign (From among them), the
 * algorithm. The key itself is read at each delivery, where a broken one defers that route's mail.
 */
function dkimSettings(doc: Document, raw: unknown, configDir: string, add: AddIssue): DkimSettings | undefined {
  if (!isMap(doc.getIn(['dkim'], true))) {
    add('dkim', 'must be a mapping of domain, selector, key_file (and optionally headers, algorithm)');
    return undefined;
  }
  const d = raw as Record<string, unknown>;
  const problems = new Set<string>();
  const bad = (k: string, m: string): void => {
    problems.add(k);
    add(`dkim.${k}`, m, d[k] === undefined ? ['dkim'] : ['dkim', k]);
  };
  for (const k of Object.keys(d)) if (!DKIM_KEYS.has(k)) bad(k, 'unknown key');
  const name = (k: 'domain' | 'selector'): string => {
    const v = d[k];
    const ascii = typeof v === 'string' ? domainToASCII(v.replace(/\.$/, '')) : '';
    if (typeof v !== 'string' || !LABELS.test(ascii))
      bad(k, typeof v === 'string' ? `${JSON.stringify(v)} is not a DNS name` : 'is required (a DNS name)');
    return ascii.toLowerCase();
  };
  const domain = name('domain');
  const selector = name('selector');
  let keyFile = '';
  if (typeof d.key_file !== 'string' || !d.key_file) bad('key_file', 'is required (the private key file)');
  else {
    keyFile = path.resolve(configDir, d.key_file);
    const problem = keyFileProblem(keyFile);
    if (problem) bad('key_file', problem.replace(/^key_file /, ''));
  }
  let headers = DEFAULT_SIGNED_HEADERS;
  if (d.headers !== undefined) {
    const v = d.headers;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && /^[\x21-\x39\x3b-\x7e]+$/.test(x)))
      bad('headers', 'must be a list of header field names');
    else if (!v.some((x) => x.toLowerCase() === 'from'))
      bad('headers', 'must include From (RFC 6376 requires it signed)');
    else headers = [...new Set(v.map((x: string) => x.toLowerCase()))];
  }
  let algorithm: DkimAlgorithm | undefined;
  if (d.algorithm !== undefined) {
    if (!(DKIM_ALGORITHMS as readonly unknown[]).includes(d.algorithm))
      bad('algorithm', `must be one of ${DKIM_ALGORITHMS.join(', ')}`);
    else algorithm = d.algorithm as DkimAlgorithm;
  }
  if (problems.size) return undefined;
  return algorithm ? { domain, selector, keyFile, headers, algorithm } : { domain, selector, keyFile, headers };
}
