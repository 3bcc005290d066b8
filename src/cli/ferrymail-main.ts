/**
 * The admin command `ferrymail`: daemon, status, online, config, queue, route, flush, auth. Built on
 * commander.
 *
 * Every subcommand takes --config-dir. Errors print one line and exit with the sysexits code of their
 * FerryError; usage errors exit 64. Secrets (auth hash) are read from standard input, never argv.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, loadConfig, parseSettingsFile, settingsLocation } from '../config/load.js';
import { loadRoutes } from '../config/routes.js';
import { routeProblem } from '../queue/wiring.js';
import { matchAddress } from '../route/glob.js';
import type { Config } from '../config/types.js';
import { validateSettings, getPath } from '../config/validate.js';
import { FIELDS } from '../config/schema.js';
import { callDaemon } from '../control/client.js';
import { EX } from '../domain/sysexits.js';
import { checkAddress } from '../domain/address.js';
import { FerryError } from '../errors.js';
import { layoutOf } from '../spool/layout.js';
import { openStore } from '../spool/store.js';
import { VERSION } from '../version.js';
import { fail } from './sendmail-main.js';
import { entryJson, formatList, formatMailq, formatShow, safe } from './queue-view.js';
import { waitFacts, waitNotes } from './queue-why.js';
import { changeIds } from './queue-ops.js';

type Opts = { configDir?: string; json?: boolean; logFormat?: 'text' | 'json' };

/** Loads the configuration named by the global option. */
function config(cmd: Command): Config {
  return loadConfig((cmd.optsWithGlobals() as Opts).configDir);
}

/** Writes text to stdout. */
function out(text: string): void {
  process.stdout.write(text);
}

/** Builds the command tree; each action resolves with an exit code. */
export function buildProgram(setCode: (n: number) => void): Command {
  const program = new Command('ferrymail')
    .description('offline-aware mail relay')
    .version(VERSION)
    .addOption(new Option('--config-dir <dir>', 'configuration directory (or FERRYMAIL_CONFIG_DIR)'))
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  const act =
    <A extends unknown[]>(fn: (...a: A) => Promise<number> | number) =>
    async (...a: A): Promise<void> =>
      setCode(await fn(...a));

  program
    .command('daemon')
    .description('run the relay in the foreground (for systemd); SIGTERM stops it cleanly')
    .addOption(new Option('--log-format <format>', 'log lines as text or json').choices(['text', 'json']))
    .action(act(async (_o: Opts, cmd: Command) => runDaemon(cmd)));

  program
    .command('reload')
    .description('make the running daemon read ferrymail.yaml again (as SIGHUP does)')
    .action(act(async (_o: Opts, cmd: Command) => reloadDaemon(cmd)));

  program
    .command('status')
    .description('is the daemon running, where it listens, what waits in the queue')
    .option('--json', 'machine-readable output')
    .action(act(async (_o: Opts, cmd: Command) => status(cmd)));

  program
    .command('online')
    .description('which connection are we on, and why (exit 0 online, 69 offline)')
    .option('--json', 'the state record, with the interface facts')
    .action(act(async (o: Opts, cmd: Command) => online(cmd, o)));

  const cfgCmd = program.command('config').description('check, read and change the configuration');
  cfgCmd
    .command('check')
    .description('validate everything and list every problem')
    .action(act((_o: Opts, cmd: Command) => configCheck(cmd)));
  cfgCmd
    .command('get <key>')
    .description('print the effective value of a key')
    .action(act((key: string, _o: Opts, cmd: Command) => configGet(cmd, key)));
  cfgCmd
    .command('set <key> <value> [more...]')
    .description('set keys in ferrymail.yaml, all or none (KEY VALUE [KEY VALUE]...); comments are kept')
    .action(
      act(async (key: string, value: string, more: string[], _o: Opts, cmd: Command) => {
        if (more.length % 2) throw new FerryError('usage', 'give keys and values in pairs: KEY VALUE [KEY VALUE]...');
        const pairs: [string, string][] = [[key, value]];
        for (let i = 0; i < more.length; i += 2) pairs.push([more[i]!, more[i + 1]!]);
        const { configSet } = await import('../config/store.js');
        configSet((cmd.optsWithGlobals() as Opts).configDir, pairs);
        // a running daemon takes the new settings at once
        const res = await callDaemon(layoutOf(config(cmd).spool).control, { cmd: 'reload' }).catch(() => null);
        if (res?.ok) out('the daemon has reloaded its configuration\n');
        else if (res) process.stderr.write(`ferrymail: the daemon did not reload: ${res.error}\n`);
        return EX.OK;
      }),
    );
  cfgCmd
    .command('path')
    .description('print the settings file and spool in use')
    .action(
      act((_o: Opts, cmd: Command) => {
        const cfg = config(cmd);
        out(`config ${cfg.file}${cfg.fromFile ? '' : ' (absent: embedded default)'}\nspool  ${cfg.spool}\n`);
        return EX.OK;
      }),
    );

  const q = program.command('queue').description('list and manage queued messages');
  q.command('list')
    .description("every message with each recipient's state")
    .option('--json', 'machine-readable output')
    .option('--mailq', 'the classic mailq shape')
    .action(act(async (o: Opts & { mailq?: boolean }, cmd: Command) => queueList(cmd, o)));
  q.command('show <id>')
    .description('one message: envelope and header')
    .option('--json', 'machine-readable output')
    .action(act(async (id: string, o: Opts, cmd: Command) => queueShow(cmd, id, o)));
  for (const [name, verb, what] of [
    ['rm', 'rm', 'remove messages'],
    ['hold', 'hold', 'keep messages from delivery'],
    ['release', 'release', 'release held messages'],
  ] as const) {
    q.command(`${name} <ids...>`)
      .description(what)
      .action(
        act(async (ids: string[], _o: Opts, cmd: Command) =>
          changeIds(config(cmd), verb, ids, `ferrymail queue ${name}`),
        ),
      );
  }

  const routeCmd = program.command('route').description('route selection');
  routeCmd
    .command('test <name>')
    .description(
      "connect to a route's server without sending mail: TLS, its certificate (subject, issuer, SHA-256 to paste as fingerprint), what it offers, a login check",
    )
    .option('--to <addr>', 'for an MX route: a recipient whose domain to look up')
    .option('--json', 'machine-readable output')
    .action(act(async (name: string, o: Opts & { to?: string }, cmd: Command) => routeTest(cmd, name, o)));
  routeCmd
    .command('explain [id]')
    .description(
      'per recipient: the routes that would carry it on a connection, and the rewritten sender and From; with a queue ID, for that message now',
    )
    .option('--from <addr>', 'envelope sender ("" or <> for the null sender)')
    .option('--to <addr...>', 'recipients')
    .option('--header-from <mailbox...>', 'From header mailboxes')
    .option('--connection <name>', 'the connection to assume (default: the one the host is on now)')
    .option('--json', 'machine-readable output')
    .action(
      act(
        async (
          id: string | undefined,
          o: Opts & { from?: string; to?: string[]; headerFrom?: string[]; connection?: string },
          cmd: Command,
        ) => (id === undefined ? routeExplain(cmd, o) : routeExplainQueued(cmd, id, o)),
      ),
    );

  program
    .command('flush')
    .description('run the queue now (through the daemon when it runs)')
    .option('--connection <name>', 'deliver as if on this connection')
    .option('--route <name>', 'try only this route in this run; other recipients stay as they are')
    .action(
      act(async (o: Opts & { connection?: string; route?: string }, cmd: Command) => {
        const { runFlush } = await import('./queue-ops.js');
        return runFlush(config(cmd), o.connection, o.route);
      }),
    );

  const auth = program.command('auth').description('SMTP AUTH users');
  auth
    .command('hash')
    .description('read a password on stdin, print the line for auth.users_file')
    .argument('<user>')
    .action(act(async (user: string) => authHash(user)));
  return program;
}

/** ferrymail daemon. */
async function runDaemon(cmd: Command): Promise<number> {
  const o = cmd.optsWithGlobals() as Opts;
  let cfg = config(cmd);
  if (o.logFormat) cfg = { ...cfg, log_format: o.logFormat };
  const { startDaemon } = await import('../daemon/daemon.js');
  const d = await startDaemon(cfg);
  const source = cfg.fromFile ? cfg.file : `embedded default (write ${cfg.file} to change it)`;
  d.log.log('info', 'ferrymail started', {
    version: VERSION,
    pid: process.pid,
    config: source,
    spool: cfg.spool,
    listen: d.door.addresses.join(','),
  });
  return new Promise((resolve) => {
    let stopping = false;
    const stop = (sig: string): void => {
      if (stopping) return;
      stopping = true;
      d.log.log('info', `received ${sig}`);
      d.stop().then(
        () => resolve(EX.OK),
        () => resolve(EX.SOFTWARE),
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // SIGHUP reloads the configuration, as systemd's ExecReload and every Unix daemon expect
    process.on('SIGHUP', () => {
      d.log.log('info', 'received SIGHUP');
      void d.reload();
    });
  });
}

/** ferrymail reload: asks the daemon to read its configuration again. */
async function reloadDaemon(cmd: Command): Promise<number> {
  const res = await callDaemon(layoutOf(config(cmd).spool).control, { cmd: 'reload' }, 30_000);
  if (!res) {
    process.stderr.write('ferrymail: no daemon runs on this spool; nothing to reload\n');
    return EX.UNAVAILABLE;
  }
  if (!res.ok) throw new FerryError('config', res.error);
  out('the daemon has reloaded its configuration\n');
  return EX.OK;
}

/** ferrymail status. */
async function status(cmd: Command): Promise<number> {
  const cfg = config(cmd);
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd: 'status' });
  const json = (cmd.opts() as Opts).json;
  if (!res) {
    const { entries } = await openStore(cfg.spool).list();
    const held = entries.filter((e) => e.place === 'hold').length;
    const { onlineView, describeState } = await import('../online/state.js');
    const state = await onlineView(cfg.online).state();
    if (json)
      out(
        `${JSON.stringify({ running: false, spool: cfg.spool, queued: entries.length - held, held, online: state })}\n`,
      );
    else
      out(
        `daemon: not running\nspool:  ${cfg.spool}\nqueue:  ${entries.length - held} queued, ${held} held\nonline: ${describeState(state)}\n`,
      );
    return EX.UNAVAILABLE;
  }
  if (!res.ok || !res.status) throw new FerryError('control', res.ok ? 'no status' : res.error);
  const s = res.status;
  if (json) out(`${JSON.stringify({ running: true, ...s })}\n`);
  else {
    out(
      `daemon: running, pid ${s.pid}, since ${s.started}, version ${s.version}\nconfig: ${s.fromFile ? s.configFile : 'embedded default'}\n`,
    );
    out(`listen: ${s.listening.join(' ')}\nspool:  ${s.spool}\nqueue:  ${s.queued} queued, ${s.held} held\n`);
    const { describeState } = await import('../online/state.js');
    out(`online: ${s.online ? describeState(s.online) : 'not yet known'}\n`);
    for (const f of s.inFlight ?? [])
      out(
        `in flight: ${f.id} by route ${f.route} since ${f.since}, ${f.bytes} bytes sent, to ${f.recipients.map((r) => `<${safe(r)}>`).join(' ')}\n`,
      );
    for (const d of s.routesDown ?? [])
      out(
        `route down: ${d.route} since ${d.since} ${d.until ? `until ${d.until}` : 'until its settings change or a manual flush'}: ${safe(d.reason)}\n`,
      );
  }
  return EX.OK;
}

/** ferrymail online: the state now, computed here from the configured sources, with its reason. */
async function online(cmd: Command, o: Opts): Promise<number> {
  const cfg = config(cmd);
  const { onlineView, describeState } = await import('../online/state.js');
  const { readInterfaces } = await import('../online/interfaces.js');
  const state = await onlineView(cfg.online).state();
  if (o.json) out(`${JSON.stringify({ ...state, interfaces: readInterfaces() }, null, 1)}\n`);
  else out(`${describeState(state)}\n`);
  return state.online ? EX.OK : EX.UNAVAILABLE;
}

/** ferrymail config check: every issue at once, with file, line and key. */
function configCheck(cmd: Command): number {
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
  for (const i of issues) process.stderr.write(`${file}${i.line ? `:${i.line}` : ''}: ${i.key}: ${i.message}\n`);
  const routes = routeCheck(path.join(path.dirname(file), 'routes'), cfg?.hostname ?? 'localhost');
  if (cfg) for (const note of rewriteNotes(cfg)) process.stderr.write(`${file}: note: ${note}\n`);
  if (issues.length || routes === null) return EX.CONFIG;
  out(`${parsed.exists ? file : 'embedded default'}: ok\n`);
  if (routes) out(`${routes} route file${routes === 1 ? '' : 's'}: ok\n`);
  return EX.OK;
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
function configGet(cmd: Command, key: string): number {
  const cfg = config(cmd);
  if (!FIELDS.some((f) => f.key === key || f.key.startsWith(`${key}.`)))
    throw new FerryError('usage', `unknown key ${key}`);
  const v = getPath(cfg, key);
  out(`${v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)}\n`);
  return EX.OK;
}

/** ferrymail queue list. */
async function queueList(cmd: Command, o: Opts & { mailq?: boolean }): Promise<number> {
  const cfg = config(cmd);
  const store = openStore(cfg.spool);
  const { entries, corrupt } = await store.list();
  for (const c of corrupt) process.stderr.write(`ferrymail: corrupt envelope ${c.id} moved to corrupt/: ${c.reason}\n`);
  const notes = entries.length ? await waitNotes(entries, await waitFacts(cfg), store) : new Map<string, string>();
  const now = Date.now();
  if (o.json)
    out(
      `${JSON.stringify(
        entries.map((e) => entryJson(e.envelope, e.place, now, notes)),
        null,
        1,
      )}\n`,
    );
  else out(o.mailq ? formatMailq(entries, notes) : formatList(entries, now, notes));
  return EX.OK;
}

/** ferrymail queue show ID. */
async function queueShow(cmd: Command, id: string, o: Opts): Promise<number> {
  const cfg = config(cmd);
  const store = openStore(cfg.spool);
  const entry = await store.get(id);
  const head = await store.readHead(id);
  const notes = await waitNotes([entry], await waitFacts(cfg), store);
  if (o.json)
    out(`${JSON.stringify({ ...entryJson(entry.envelope, entry.place, Date.now(), notes), header: head }, null, 1)}\n`);
  else out(formatShow(entry, head, Date.now(), notes));
  return EX.OK;
}

/** ferrymail route explain. */
async function routeExplain(
  cmd: Command,
  o: Opts & { from?: string; to?: string[]; headerFrom?: string[]; connection?: string },
): Promise<number> {
  if (o.from === undefined || !o.to) throw new FerryError('usage', 'give a queue ID, or --from and --to');
  const cfg = config(cmd);
  const { loadRoutes } = await import('../config/routes.js');
  const { explain, formatExplain } = await import('./route-explain.js');
  const sender = o.from === '<>' ? '' : o.from;
  for (const a of [...(sender ? [sender] : []), ...o.to]) {
    const c = checkAddress(a);
    if (!c.ok) throw new FerryError('usage', `bad address ${JSON.stringify(a)}: ${c.reason}`);
  }
  // without --connection, the connection this host is on now (as route explain ID does)
  const { onlineState } = await import('../queue/flush.js');
  const state = await onlineState(cfg, o.connection);
  // --header-from takes a header value as a message carries it ("Alice <alice@example.org>")
  const { headerFromAddresses } = await import('../route/header-rewrite.js');
  const from = (o.headerFrom ?? []).flatMap((v) => headerFromAddresses(`From: ${v}\r\n\r\n`));
  const result = explain(loadRoutes(cfg.dir), state, sender, o.to, from, o.headerFrom ?? []);
  out(o.json ? `${JSON.stringify({ state, recipients: result }, null, 1)}\n` : formatExplain(result, state));
  return EX.OK;
}

/** ferrymail route explain ID: what a run now (or on --connection) would do with a queued message. */
async function routeExplainQueued(
  cmd: Command,
  id: string,
  o: Opts & { from?: string; to?: string[]; connection?: string },
): Promise<number> {
  if (o.from !== undefined || o.to)
    throw new FerryError('usage', 'give either a queue ID or --from and --to, not both');
  const cfg = config(cmd);
  const { loadRoutes } = await import('../config/routes.js');
  const { onlineState } = await import('../queue/flush.js');
  const { explainQueued, formatExplain } = await import('./route-explain.js');
  const store = openStore(cfg.spool);
  const entry = await store.get(id);
  const head = await store.readHead(id);
  const state = await onlineState(cfg, o.connection);
  const result = explainQueued(loadRoutes(cfg.dir), state, entry.envelope, head);
  const held = entry.place === 'hold' ? 'the message is held: nothing is tried until ferrymail queue release\n' : '';
  if (o.json)
    out(
      JSON.stringify({ id, place: entry.place, sender: entry.envelope.sender, state, recipients: result }, null, 1) +
        '\n',
    );
  else out(`message ${id} from <${entry.envelope.sender}>\n${held}${formatExplain(result, state)}`);
  return EX.OK;
}

/** ferrymail route test NAME: what a route's server offers, as msmtp --serverinfo. */
async function routeTest(cmd: Command, name: string, o: Opts & { to?: string }): Promise<number> {
  const cfg = config(cmd);
  const { loadRoutes } = await import('../config/routes.js');
  const route = loadRoutes(cfg.dir).find((r) => r.name === name);
  if (!route) throw new FerryError('usage', `no route named ${JSON.stringify(name)}`);
  const { inspectRoute } = await import('../queue/wiring.js');
  let info: Awaited<ReturnType<typeof inspectRoute>>;
  try {
    info = await inspectRoute(route, cfg.hostname, o.to?.slice(o.to.lastIndexOf('@') + 1));
  } catch (err) {
    throw new FerryError('usage', (err as Error).message);
  }
  if (o.json) {
    out(`${JSON.stringify(info, null, 1)}\n`);
    return info.error || info.login?.startsWith('4') || info.cert?.trusted === false ? EX.UNAVAILABLE : EX.OK;
  }
  out(`route ${name}: ${info.relay}\n`);
  if (info.error) {
    out(`cannot open a session: ${safe(info.error)}\n`);
    return EX.UNAVAILABLE;
  }
  out(`tls: ${info.tls ? 'yes' : 'no'}\n`);
  if (info.cert) {
    const c = info.cert;
    out(`certificate: subject ${safe(c.subject)}, issued by ${safe(c.issuer)}, valid until ${c.validTo}\n`);
    out(`  sha256: ${c.sha256}   (fingerprint: ${c.sha256} in the route pins it)\n`);
    out(`  ${c.trusted ? 'trusted' : `NOT trusted: ${safe(c.why ?? '')}`}\n`);
  }
  out(`extensions: ${info.extensions.join(' ') || '(none)'}\n`);
  out(`auth: ${info.auth.join(' ') || '(none offered)'}\n`);
  if (info.login) out(`login as the route's user: ${safe(info.login)}\n`);
  return info.login && info.login !== 'ok' ? EX.UNAVAILABLE : info.cert && !info.cert.trusted ? EX.UNAVAILABLE : EX.OK;
}

/** ferrymail auth hash USER: reads the password from stdin. */
async function authHash(user: string): Promise<number> {
  if (!/^[^\s:]+$/.test(user)) throw new FerryError('usage', 'user names cannot hold spaces or colons');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const password = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (!password) throw new FerryError('usage', 'give the password on standard input');
  const { hashPassword } = await import('../receive/auth.js');
  out(`${user}:${await hashPassword(password)}\n`);
  return EX.OK;
}

/** Runs the admin command; resolves with the exit code. */
export async function ferrymailMain(argv: string[]): Promise<number> {
  let code: number = EX.OK;
  const program = buildProgram((n) => (code = n));
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EX.OK : EX.USAGE;
    return fail('ferrymail', err);
  }
}
