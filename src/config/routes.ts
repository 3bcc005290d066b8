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
import { isMap, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { Route, RewriteMaps } from '../route/types.js';
import { ConfigError } from './load.js';
import { checkTransport } from './transport-section.js';
import type { ConfigIssue } from './validate.js';

const LISTS = ['connections', 'allowed_senders', 'denied_senders', 'allowed_recipients', 'denied_recipients', 'allowed_from', 'denied_from'] as const;
const FLAGS = ['permanent', 'last_route', 'connect_error_fail'] as const;
const MAPS = ['envelope_sender', 'from', 'sender', 'reply_to', 'mail_followup_to'] as const;
const KEYS = new Set<string>(['name', ...LISTS, ...FLAGS, 'rewrite', 'transport', 'uncertain']);

/** Reads every route file of a configuration directory, in file-name order. */
export function loadRoutes(configDir: string): Route[] {
  const dir = path.join(configDir, 'routes');
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort();
  } catch {
    return [];
  }
  const issues: ConfigIssue[] = [];
  const routes = names.map((n) => parseRoute(path.join(dir, n), issues));
  const seen = new Set<string>();
  for (const r of routes) {
    if (seen.has(r.name)) issues.push({ key: 'name', message: `route name ${r.name} is used twice` });
    seen.add(r.name);
  }
  if (issues.length) throw new ConfigError(dir, issues);
  return routes;
}

/** Parses one route file, adding its problems (prefixed with the file name) to issues. */
function parseRoute(file: string, issues: ConfigIssue[]): Route {
  const counter = new LineCounter();
  const doc = parseDocument(fs.readFileSync(file, 'utf8'), { lineCounter: counter, uniqueKeys: true });
  const base = path.basename(file);
  const add = (key: string, message: string, at: (string | number)[] = [key]): void => {
    const node = doc.getIn(at, true) as { range?: [number, number, number] } | undefined;
    const line = node?.range ? counter.linePos(node.range[0]).line : undefined;
    issues.push({ key: `${base}: ${key}`, line, message });
  };
  for (const e of doc.errors) issues.push({ key: `${base}: (syntax)`, line: counter.linePos(e.pos[0]).line, message: e.message.split('\n')[0] ?? '' });
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
    rewrite: rewriteMaps(doc, d.rewrite, add),
    lastRoute: flag('last_route'),
    connectErrorFail: flag('connect_error_fail'),
    uncertain: uncertainPolicy(d.uncertain, add),
    transport: d.transport && typeof d.transport === 'object' && !Array.isArray(d.transport) ? (d.transport as Record<string, unknown>) : {},
  };
  checkTransport(d.transport, add);
  if (!route.permanent && route.connections.length === 0) add('connections', 'name the connections this route serves, or set permanent: true', []);
  return route;
}

/** Reads `uncertain: retry | hold` (default retry). */
function uncertainPolicy(v: unknown, add: (k: string, m: string) => void): Route['uncertain'] {
  if (v === undefined || v === 'retry' || v === 'hold') return v ?? 'retry';
  add('uncertain', 'must be retry or hold');
  return 'retry';
}

/** Reads the rewrite section: each map keeps the order of its keys (the first match wins). */
function rewriteMaps(doc: Document, raw: unknown, add: (k: string, m: string, at?: (string | number)[]) => void): RewriteMaps {
  const out: RewriteMaps = { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] };
  const field = { envelope_sender: 'envelopeSender', from: 'from', sender: 'sender', reply_to: 'replyTo', mail_followup_to: 'mailFollowupTo' } as const;
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
