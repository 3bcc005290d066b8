/**
 * `ferrymail config check` and `config get`: every problem of the settings file and the route files at
 * once, with file, line and key, and what only shows at delivery time (secret, CA and key files, pipe
 * variables, a password command this host lacks, maps that can never match this host's senders).
 *
 * Trusts nothing it reads; prints each problem as one line on standard error; the exit code says whether
 * any was found (78).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ConfigError, loadConfig, parseSettingsFile, settingsLocation } from '../config/load.js';
import { loadRoutes } from '../config/routes.js';
import { routeProblem } from '../queue/wiring.js';
import { matchAddress } from '../route/glob.js';
import type { Config } from '../config/types.js';
import { validateSettings, getPath } from '../config/validate.js';
import { FIELDS } from '../config/schema.js';
import { EX } from '../domain/sysexits.js';
import { checkAliases } from './aliases-cmds.js';
import { FerryError } from '../errors.js';

import { config, out, type Opts } from './cli-common.js';

/** ferrymail config check: every issue at once, with file, line and key. */
export function configCheck(cmd: Command): number {
  const { file } = settingsLocation((cmd.optsWithGlobals() as Opts).configDir);
  const parsed = parseSettingsFile(file);
  const issues = [...parsed.syntax, ...validateSettings(parsed.data, parsed.lineOf)];
  let cfg: Config | undefined;
  if (issues.length === 0) {
    try {
      cfg = loadConfig((cmd.optsWithGlobals() as Opts).configDir);
    } catch (err) {
      if (err instanceof FerryError && 'issues' in err)
        issues.push(...(err as unknown as { issues: typeof issues }).issues);
      else throw err;
    }
  }
  // what only shows when it is used: the notice mailbox's folder
  if (cfg?.queue.notice_mailbox && !fs.existsSync(path.dirname(cfg.queue.notice_mailbox))) {
    issues.push({
      key: 'queue.notice_mailbox',
      line: parsed.lineOf(['queue', 'notice_mailbox']),
      message: `the folder ${path.dirname(cfg.queue.notice_mailbox)} does not exist: notices delivered locally would fail`,
    });
  }
  if (cfg) issues.push(...localIssues(cfg, parsed.lineOf));
  for (const i of issues) process.stderr.write(`${file}${i.line ? `:${i.line}` : ''}: ${i.key}: ${i.message}\n`);
  const routes = routeCheck(path.join(path.dirname(file), 'routes'), cfg?.hostname ?? 'localhost');
  if (cfg)
    for (const note of [...rewriteNotes(cfg), ...localNotes(cfg)]) process.stderr.write(`${file}: note: ${note}\n`);
  if (issues.length || routes === null) return EX.CONFIG;
  out(`${parsed.exists ? file : 'embedded default'}: ok\n`);
  if (routes) out(`${routes} route file${routes === 1 ? '' : 's'}: ok\n`);
  return EX.OK;
}

/** What is wrong with local delivery that only shows when mail arrives: the mailbox kind without its
 * setting, and the aliases file's problems (as `ferrymail aliases check` reports them). */
function localIssues(
  cfg: Config,
  lineOf: (p: string[]) => number | undefined,
): Array<{ key: string; line?: number; message: string }> {
  const l = cfg.local;
  const at = (k: string): number | undefined => lineOf(['local', k]);
  const issues: Array<{ key: string; line?: number; message: string }> = [];
  if (l.mailbox === 'mda' && !l.mda.length)
    issues.push({ key: 'local.mda', line: at('mailbox'), message: 'local.mailbox is mda but no local.mda is set' });
  if (l.mailbox === 'lmtp' && !l.lmtp)
    issues.push({ key: 'local.lmtp', line: at('mailbox'), message: 'local.mailbox is lmtp but no local.lmtp is set' });
  if (l.deliver_in_dialogue.length && l.mailbox !== 'lmtp')
    issues.push({
      key: 'local.deliver_in_dialogue',
      line: at('deliver_in_dialogue'),
      message: `local.deliver_in_dialogue asks an LMTP server, but local.mailbox is ${l.mailbox}: it has no effect`,
    });
  for (const p of checkAliases(cfg).problems) issues.push({ key: 'local.aliases', line: at('aliases'), message: p });
  return issues;
}

/** Local delivery that would fail as the user who asks: mbox files in a folder it cannot write. */
function localNotes(cfg: Config): string[] {
  if (process.geteuid?.() === 0 || cfg.local.mailbox !== 'mbox') return [];
  try {
    fs.accessSync(cfg.local.mail_dir, fs.constants.W_OK);
    return [];
  } catch {
    return [
      `${cfg.local.mail_dir} cannot be written by uid ${process.geteuid?.()}: a daemon run by this user delivers only into mbox files that exist there already (run it as root, or set local.mailbox: maildir)`,
    ];
  }
}

/**
 * Routes whose address maps can never match this host's own mail: local senders are USER@HOSTNAME (or
 * at a local domain), and a map whose patterns all name another domain rewrites nothing of it (the
 * examples use laptop.local; with the system's own name as hostname, nothing would change and a
 * smarthost that checks senders refuses them).
 */
function rewriteNotes(cfg: Config): string[] {
  const domains = [cfg.hostname, ...cfg.local_domains];
  const notes: string[] = [];
  let routes: ReturnType<typeof loadRoutes> = [];
  try {
    routes = loadRoutes(cfg.dir);
  } catch {
    return notes; // the route files' own problems are reported above
  }
  for (const r of routes) {
    const patterns = [...r.rewrite.envelopeSender, ...r.rewrite.from].map(([p]) => p).filter((p) => p.includes('@'));
    if (!patterns.length) continue;
    const hits = patterns.some((p) =>
      domains.some((d) => matchAddress(p, `user@${d}`) || matchAddress(p, `root@${d}`)),
    );
    if (!hits) {
      notes.push(
        `route ${r.name} rewrites ${patterns.join(', ')}, but this host's mail is sent as USER@${cfg.hostname}: nothing of it would be rewritten (set hostname, or change the maps)`,
      );
    }
  }
  return notes;
}

/** Checks the route files, then what each route needs at delivery time (secret and CA files, pipe
 * variables, DKIM keys); prints each problem as routes/FILE:LINE: key: message or routes: route NAME:
 * problem. Returns how many routes are fine, or null when something is wrong. */
function routeCheck(dir: string, hostname: string): number | null {
  try {
    const routes = loadRoutes(path.dirname(dir));
    const problems = routes.map((r) => routeProblem(r, hostname)).filter((p): p is string => p !== undefined);
    for (const p of problems) process.stderr.write(`${dir}: ${p}\n`);
    return problems.length ? null : routes.length;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const i of err.issues) {
      const [base, ...rest] = i.key.split(': ');
      const key = rest.length ? rest.join(': ') : base;
      const where = rest.length ? path.join(dir, base!) : dir;
      process.stderr.write(`${where}${i.line ? `:${i.line}` : ''}: ${key}: ${i.message}\n`);
    }
    return null;
  }
}

/** ferrymail config get KEY: the effective value (defaults included). */
export async function configGet(cmd: Command, key: string): Promise<number> {
  const cfg = await config(cmd);
  if (!FIELDS.some((f) => f.key === key || f.key.startsWith(`${key}.`)))
    throw new FerryError('usage', `unknown key ${key}`);
  const v = getPath(cfg, key);
  out(`${v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)}\n`);
  return EX.OK;
}
