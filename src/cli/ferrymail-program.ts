/**
 * The admin command `ferrymail`'s command tree: daemon, status, online, config, queue, route, flush,
 * auth. Built on commander; the daemon's own plain command line skips it (ferrymail-main.ts).
 *
 * Every subcommand takes --config-dir. Errors print one line and exit with the sysexits code of their
 * FerryError; usage errors exit 64. Secrets (auth hash) are read from standard input, never argv.
 */
import { Command, CommanderError, Option } from 'commander';
import { callDaemon } from '../control/client.js';
import { EX } from '../domain/sysexits.js';
import { FerryError } from '../errors.js';
import { layoutOf } from '../spool/layout.js';
import { openStore, queueCounts } from '../spool/store.js';
import { VERSION } from '../version.js';
import { safe } from './queue-view.js';

import { config, out, type Opts } from './cli-common.js';
import { runDaemon } from './daemon-cmd.js';
import { fail } from './fail.js';

/** Builds the command tree; each action resolves with an exit code. */
export function buildProgram(setCode: (n: number) => void): Command {
  const program = new Command('ferrymail')
    .description('offline-aware mail relay')
    .version(VERSION)
    .addOption(new Option('--config-dir <dir>', 'configuration directory (or FERRYMAIL_CONFIG_DIR)'))
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      // usage errors in the one form of every other error (docs/cli.md): `ferrymail: message`
      outputError: (s, write) => write(s.replace(/^error: /, 'ferrymail: ')),
    });
  const act =
    <A extends unknown[]>(fn: (...a: A) => Promise<number> | number) =>
    async (...a: A): Promise<void> =>
      setCode(await fn(...a));

  program
    .command('daemon')
    .description('run the relay in the foreground (for systemd); SIGTERM stops it cleanly')
    .addOption(new Option('--log-format <format>', 'log lines as text or json').choices(['text', 'json']))
    .action(
      act(async (_o: Opts, cmd: Command) => {
        const o = cmd.optsWithGlobals() as Opts;
        return runDaemon({ configDir: o.configDir, logFormat: o.logFormat });
      }),
    );

  program
    .command('reload')
    .description('make the running daemon read ferrymail.yaml again (as SIGHUP does)')
    .action(act(async (_o: Opts, cmd: Command) => reloadDaemon(cmd)));

  program
    .command('status')
    .description('is the daemon running, where it listens, what waits in the queue')
    .option('--json', 'machine-readable output')
    .option('--short', 'one line, for a prompt or a status bar')
    .action(act(async (_o: Opts, cmd: Command) => status(cmd)));

  program
    .command('watch')
    .description('what the daemon does, one line per event as it happens (connection, queued, sent, deferred, bounced)')
    .option('--json', 'one JSON object per line, for a status bar')
    .option('--retry', 'wait for a daemon that does not run (yet), and follow it again after a restart')
    .option('--no-colour', 'no colour even on a terminal (NO_COLOR in the environment does the same)')
    .action(
      act(async (o: Opts & { retry?: boolean; colour?: boolean }, cmd: Command) => {
        const { watchCommand } = await import('./watch-cmd.js');
        const colour = o.colour !== false && !!process.stdout.isTTY && !process.env.NO_COLOR;
        return watchCommand(await config(cmd), { json: o.json, retry: o.retry, colour }, out);
      }),
    );

  program
    .command('online')
    .description('which connection are we on, and why (exit 0 online, 69 offline)')
    .option('--json', 'the state record, with the interface facts')
    .action(act(async (o: Opts, cmd: Command) => online(cmd, o)));

  const cfgCmd = program.command('config').description('check, read and change the configuration');
  cfgCmd
    .command('check')
    .description('validate everything and list every problem')
    .action(act(async (_o: Opts, cmd: Command) => (await import('./config-cmds.js')).configCheck(cmd)));
  cfgCmd
    .command('get <key>')
    .description('print the effective value of a key')
    .action(act(async (key: string, _o: Opts, cmd: Command) => (await import('./config-cmds.js')).configGet(cmd, key)));
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
        const res = await callDaemon(layoutOf((await config(cmd)).spool).control, { cmd: 'reload' }).catch(() => null);
        if (res?.ok) out('the daemon has reloaded its configuration\n');
        else if (res) process.stderr.write(`ferrymail: the daemon did not reload: ${res.error}\n`);
        return EX.OK;
      }),
    );
  cfgCmd
    .command('path')
    .description('print the settings file and spool in use')
    .action(
      act(async (_o: Opts, cmd: Command) => {
        const cfg = await config(cmd);
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
        act(async (ids: string[], _o: Opts, cmd: Command) => {
          const { changeIds } = await import('./queue-ops.js');
          return changeIds(await config(cmd), verb, ids, `ferrymail queue ${name}`);
        }),
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
    .action(
      act(async (name: string, o: Opts & { to?: string }, cmd: Command) =>
        (await import('./route-cmds.js')).routeTest(cmd, name, o),
      ),
    );
  routeCmd
    .command('explain [id]')
    .description(
      'per recipient: the routes that would carry it on a connection, and the rewritten sender and From; with a queue ID, for that message now',
    )
    .option('--from <addr>', 'envelope sender ("" or <> for the null sender)')
    .option('--to <addr...>', 'recipients')
    .option('--header-from <mailbox...>', 'From header mailboxes')
    .option('--connection <name>', 'the connection to assume (default: the one the host is on now)')
    .option('--user <login>', 'who hands it in (the SMTP AUTH login or local account), for allowed_users')
    .option('--json', 'machine-readable output')
    .action(
      act(
        async (
          id: string | undefined,
          o: Opts & { from?: string; to?: string[]; headerFrom?: string[]; connection?: string; user?: string },
          cmd: Command,
        ) =>
          import('./route-cmds.js').then((m) =>
            id === undefined ? m.routeExplain(cmd, o) : m.routeExplainQueued(cmd, id, o),
          ),
      ),
    );

  const aliases = program.command('aliases').description("this host's aliases (local.aliases)");
  aliases
    .command('check')
    .description('read the aliases file as the daemon does and say what is wrong in it, by line (also: newaliases)')
    .option('--json', 'machine-readable output')
    .action(
      act(async (o: Opts, cmd: Command) => {
        const { checkAliases, printAliasCheck } = await import('./aliases-cmds.js');
        return printAliasCheck(checkAliases(await config(cmd)), out, o.json);
      }),
    );
  aliases
    .command('explain <address>')
    .description('what a local address is delivered to: every alias, include file and .forward on the way')
    .option('--json', 'machine-readable output')
    .action(
      act(async (address: string, o: Opts, cmd: Command) => {
        const { explainAlias } = await import('./aliases-cmds.js');
        return explainAlias(await config(cmd), address, out, o.json);
      }),
    );

  const hooks = program
    .command('hooks')
    .description("the hooks at the SMTP stages (hooks:, docs/hooks.md), and the network tools' hooks (docs/laptop.md)");
  for (const op of ['print', 'install'] as const)
    hooks
      .command(`${op} ${op === 'print' ? '<tool>' : '[tool...]'}`)
      .description(
        op === 'print'
          ? 'print the hook a network tool runs (networkmanager, networkd, ifupdown, ppp, launchd)'
          : 'install the hooks of the network tools named, or of those found on this system',
      )
      .option('--root <dir>', 'install below this directory instead of /')
      .option('--force', 'replace a file that ferrymail did not write')
      .action(
        act(async (tools: string | string[], o: Opts & { root?: string; force?: boolean }, cmd: Command) => {
          const { netHooks } = await import('./system-cmds.js');
          return netHooks(await config(cmd, { full: true }), op, ([] as string[]).concat(tools ?? []), o, out);
        }),
      );
  program
    .command('recheck')
    .description('ask the daemon to look at the network again now (what the network hooks run)')
    .option('--why <text>', 'what changed, for the log')
    .option('--quiet', 'say nothing, and exit 0 when no daemon runs')
    .action(
      act(async (o: Opts & { why?: string; quiet?: boolean }, cmd: Command) => {
        const { recheck } = await import('./system-cmds.js');
        return recheck(await config(cmd), o.why ?? '', !!o.quiet, out);
      }),
    );
  program
    .command('doctor')
    .description('check the whole setup: configuration, spool, daemon, network, routes’ servers, service, hooks')
    .option('--json', 'machine-readable output')
    .action(
      act(async (o: Opts, cmd: Command) => {
        const { doctor } = await import('./doctor.js');
        return doctor(await config(cmd, { full: true }), !!o.json, out);
      }),
    );
  program
    .command('completion [shell]')
    .description('print the shell completion for bash or zsh (source it from .bashrc or .zshrc)')
    .option('--list <kind>', 'print the values the completion offers: ids, routes, connections, keys, tools')
    .action(
      act(async (shell: string | undefined, o: Opts & { list?: string }, cmd: Command) => {
        const c = await import('./completion.js');
        if (o.list) return c.listValues(await config(cmd), o.list, out);
        if (shell !== 'bash' && shell !== 'zsh') throw new FerryError('usage', 'name the shell: bash or zsh');
        out(shell === 'bash' ? c.bashScript(program) : c.zshScript(program));
        return EX.OK;
      }),
    );
  const serviceCmd = program.command('service').description('the systemd unit (docs/laptop.md)');
  for (const op of ['print', 'install'] as const)
    serviceCmd
      .command(op)
      .description(op === 'print' ? 'print the unit for this installation' : 'write the unit and have systemd read it')
      .option('--user', "a user unit (the user's own relay) instead of the system unit")
      .option('--root <dir>', 'install below this directory instead of /')
      .option('--force', 'replace a file that ferrymail did not write')
      .action(
        act(async (o: Opts & { user?: boolean; root?: string; force?: boolean }, cmd: Command) => {
          const { service } = await import('./system-cmds.js');
          return service(await config(cmd, { full: true }), op, o, out);
        }),
      );
  hooks
    .command('list')
    .description('what runs at each stage, in order, with its timeout and on_error, loaded as the daemon loads it')
    .option('--json', 'machine-readable output')
    .action(
      act(async (o: Opts, cmd: Command) => {
        const { listHooks } = await import('./hooks-cmds.js');
        return listHooks(await config(cmd), out, o.json);
      }),
    );

  program
    .command('flush')
    .description('run the queue now (through the daemon when it runs)')
    .option('--connection <name>', 'deliver as if on this connection')
    .option('--route <name>', 'try only this route in this run; other recipients stay as they are')
    .action(
      act(async (o: Opts & { connection?: string; route?: string }, cmd: Command) => {
        const { runFlush } = await import('./queue-ops.js');
        return runFlush(await config(cmd), o.connection, o.route);
      }),
    );

  const auth = program.command('auth').description('SMTP AUTH users');
  auth
    .command('hash')
    .description('read a password on stdin, print the line for auth.users_file')
    .argument('<user>')
    .action(act(async (user: string) => authHash(user)));
  for (const [op, what] of [
    ['add', 'add a user to auth.users_file; the password is read on stdin (asked without echo on a terminal)'],
    ['passwd', "change a user's password (read on stdin)"],
    ['rm', 'remove a user from auth.users_file'],
  ] as const)
    auth
      .command(op)
      .description(what)
      .argument('<user>')
      .action(
        act(async (user: string, _o: Opts, cmd: Command) => {
          const { changeUser } = await import('./auth-cmds.js');
          return changeUser(await config(cmd, { full: true }), op, user, out);
        }),
      );
  auth
    .command('list')
    .description('the users, and which are suspended since when and why')
    .option('--json', 'one JSON array')
    .action(
      act(async (o: Opts & { json?: boolean }, cmd: Command) => {
        const { listUsers } = await import('./auth-cmds.js');
        return listUsers(await config(cmd, { full: true }), !!o.json, out);
      }),
    );
  for (const [op, what] of [
    ['suspend', 'refuse the mail of a user from now on (submission.suspend_after does this by itself)'],
    ['release', 'let a suspended user send mail again'],
  ] as const)
    auth
      .command(op)
      .description(what)
      .argument('<user>')
      .action(
        act(async (user: string, _o: Opts, cmd: Command) => {
          const { setSuspended } = await import('./auth-cmds.js');
          return setSuspended(await config(cmd, { full: true }), op, user, out);
        }),
      );
  return program;
}

/** ferrymail reload: asks the daemon to read its configuration again. */
async function reloadDaemon(cmd: Command): Promise<number> {
  const res = await callDaemon(layoutOf((await config(cmd)).spool).control, { cmd: 'reload' }, 30_000);
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
  const cfg = await config(cmd);
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd: 'status' });
  const json = (cmd.opts() as Opts).json;
  const short = (cmd.opts() as { short?: boolean }).short;
  if (!res) {
    // counts from the names alone: no envelope is read
    const { queued, held } = await queueCounts(layoutOf(cfg.spool));
    const { onlineView, describeState } = await import('../online/state.js');
    const state = await onlineView(cfg.online).state();
    if (short) {
      const { shortStatus } = await import('./watch-cmd.js');
      out(`${shortStatus(false, state, queued, held)}\n`);
      return EX.UNAVAILABLE;
    }
    if (json) out(`${JSON.stringify({ running: false, spool: cfg.spool, queued, held, online: state })}\n`);
    else
      out(
        `daemon: not running\nspool:  ${cfg.spool}\nqueue:  ${queued} queued, ${held} held\nonline: ${describeState(state)}\n`,
      );
    return EX.UNAVAILABLE;
  }
  if (!res.ok || !res.status) throw new FerryError('control', res.ok ? 'no status' : res.error);
  const s = res.status;
  // the daemon runs, but on a spool it refuses now: said in every form, exit 78
  const refused = s.spoolRefused ? EX.CONFIG : EX.OK;
  if (short) {
    const { shortStatus } = await import('./watch-cmd.js');
    out(`${shortStatus(true, s.online, s.queued, s.held)}\n`);
  } else if (json) out(`${JSON.stringify({ running: true, ...s })}\n`);
  else {
    out(
      `daemon: running, pid ${s.pid}, since ${s.started}, version ${s.version}\nconfig: ${s.fromFile ? s.configFile : 'embedded default'}\n`,
    );
    out(`listen: ${s.listening.join(' ')}\nspool:  ${s.spool}\nqueue:  ${s.queued} queued, ${s.held} held\n`);
    if (s.spoolRefused)
      out(`spool refused: ${safe(s.spoolRefused)}; no queue run or change is made until it is mended\n`);
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
  return refused;
}

/** ferrymail online: the state now, computed here from the configured sources, with its reason. */
async function online(cmd: Command, o: Opts): Promise<number> {
  const cfg = await config(cmd);
  const { onlineView, describeState } = await import('../online/state.js');
  const { readInterfaces } = await import('../online/interfaces.js');
  const state = await onlineView(cfg.online).state();
  if (o.json) {
    // the system's own view (the default interface, Wi-Fi, power), beside the facts the rules read
    const { systemFacts } = await import('./doctor.js');
    out(
      `${JSON.stringify({ ...state, interfaces: readInterfaces(), system: (await systemFacts()) ?? null }, null, 1)}\n`,
    );
  } else out(`${describeState(state)}\n`);
  return state.online ? EX.OK : EX.UNAVAILABLE;
}

/** ferrymail queue list. */
async function queueList(cmd: Command, o: Opts & { mailq?: boolean }): Promise<number> {
  const cfg = await config(cmd);
  const { printQueue } = await import('./queue-listing.js');
  await printQueue(cfg, openStore(cfg.spool), o.json ? 'json' : o.mailq ? 'mailq' : 'list', out, (c) =>
    process.stderr.write(`ferrymail: corrupt envelope ${c.id} moved to corrupt/: ${c.reason}\n`),
  );
  return EX.OK;
}

/** ferrymail queue show ID. */
async function queueShow(cmd: Command, id: string, o: Opts): Promise<number> {
  const cfg = await config(cmd);
  const store = openStore(cfg.spool);
  const entry = await store.get(id);
  const head = await store.readHead(entry.envelope);
  const { waitFacts, waitNotes } = await import('./queue-why.js');
  const { entryJson, formatShow } = await import('./queue-view.js');
  const notes = await waitNotes([entry], await waitFacts(cfg), store);
  if (o.json)
    out(`${JSON.stringify({ ...entryJson(entry.envelope, entry.place, Date.now(), notes), header: head }, null, 1)}\n`);
  else out(formatShow(entry, head, Date.now(), notes));
  return EX.OK;
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

/** Runs the admin command through commander; resolves with the exit code. */
export async function runProgram(argv: string[]): Promise<number> {
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
