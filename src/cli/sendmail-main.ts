/**
 * The sendmail personality (also mailq, runq, mailrm, newaliases, and qmail-inject with qmail's flags,
 * environment and exit codes: qmail-inject.ts): parse argv, load the configuration, do one thing, exit
 * with a sysexits code and at most one readable line on stderr.
 *
 * This path runs for every message a local program sends, so it loads as little as it can: the SMTP
 * server is imported only for -bs. It works without a daemon (it writes the spool itself, safely) and
 * tells a running daemon about the new message afterwards.
 */
import { loadConfigQuick } from '../config/snapshot.js';
import type { Config } from '../config/types.js';
import { kickDaemon } from '../control/client.js';
import { EX } from '../domain/sysexits.js';
import { FerryError, spoolError } from '../errors.js';
import fs from 'node:fs';
import { submitLocal, currentUser } from '../receive/local.js';
import { openDropWriter } from '../spool/drop.js';
import { checkDropFolder } from '../spool/safety.js';
import { openSpoolWriter } from '../spool/writer.js';
import { VERSION } from '../version.js';
import { fail } from './fail.js';
import { blockingInput } from './stdin.js';
import { parseQmailInjectArgs, printWriter, qmailFail, readLists } from './qmail-inject.js';
import { parseSendmailArgs, personality, type Personality, type SendmailRequest } from './sendmail-args.js';

/** Runs the command; resolves with the exit code. */
export async function sendmailMain(argv: string[], argv0: string): Promise<number> {
  const who = personality(argv0);
  if (who === 'qmail-inject') return qmailInject(argv);
  try {
    const req = parseSendmailArgs(argv, who);
    if (req.mode === 'version') {
      process.stdout.write(`ferrymail ${VERSION} (sendmail interface)\n`);
      return EX.OK;
    }
    const cfg = await loadConfigQuick(req.configPath);
    return await run(req, cfg, who);
  } catch (err) {
    return fail(who, err);
  }
}

/** qmail-inject: its flags and environment, then the same submission; exits 0, 100 or 111. */
async function qmailInject(argv: string[]): Promise<number> {
  try {
    const req = parseQmailInjectArgs(argv, {
      env: process.env,
      login: currentUser().name,
      now: new Date(),
      pid: process.pid,
    });
    if (req.listsFile && req.submit.qmail) req.submit.qmail.lists = readLists(req.listsFile);
    const cfg = await loadConfigQuick();
    return await submit(req, cfg, 'qmail-inject');
  } catch (err) {
    return qmailFail(err);
  }
}

/** Takes one message from standard input: printed (qmail-inject -n), into another user's spool's drop
 * folder, or into the spool. */
async function submit(
  req: Extract<SendmailRequest, { mode: 'submit' }>,
  cfg: Config,
  who: Personality,
): Promise<number> {
  if (req.print) {
    // the Received line records the queueing, which does not happen
    await submitLocal(cfg, printWriter(cfg.spool, process.stdout), req.submit, blockingInput(), { received: false });
    return EX.OK;
  }
  const drop = dropFor(cfg);
  if (drop) {
    // another user's spool (the system relay): leave the message in its drop folder for the daemon
    let named = req.submit.sender !== undefined;
    await submitLocal(
      cfg,
      openDropWriter(cfg.spool, { defaultSender: () => !named, mode: drop.mode }),
      req.submit,
      blockingInput(),
      { ownerUid: drop.owner, received: false, senderNamed: (n) => (named = n) },
    );
    return EX.OK;
  }
  // one message and no one else to serve: the commit's fsyncs are made directly (spool/writer.ts)
  const spool = openSpoolWriter(cfg.spool, { direct: true });
  const env = await submitLocal(cfg, spool, req.submit, blockingInput());
  if (req.submit.deliveryMode !== 'queue' && !(await kickDaemon(spool.layout.control, env.id))) {
    // queued, but nothing will send it: say so (still exit 0, the message is safe)
    // written directly: process.stderr would load node:net for a pipe to say one line. A reader of
    // standard error that went away (EPIPE) changes nothing: the message is queued, and a failure's exit
    // code would have the caller send it again
    try {
      fs.writeSync(
        2,
        `${who === 'qmail-inject' ? 'qmail-inject: warning' : 'sendmail'}: queued as ${env.id}, but no ferrymail daemon serves ${cfg.spool}: it waits until one runs there, or 'ferrymail flush' (see docs/sendmail.md)\n`,
      );
    } catch {
      // nowhere left to say it
    }
  }
  return EX.OK;
}

/** Does what the request asks. */
async function run(req: SendmailRequest, cfg: Config, who: Personality): Promise<number> {
  switch (req.mode) {
    case 'submit':
      return submit(req, cfg, who);
    case 'list': {
      const { printQueue } = await import('./queue-listing.js');
      const { openStore } = await import('../spool/store.js');
      await printQueue(
        cfg,
        openStore(cfg.spool),
        'mailq',
        (t) => process.stdout.write(t),
        (c) => process.stderr.write(`mailq: corrupt envelope ${c.id} moved to corrupt/: ${c.reason}\n`),
      );
      return EX.OK;
    }
    // the queue tools, the store and its locks are loaded for these modes only: a submission never
    // reads the queue
    case 'remove':
      return (await import('./queue-ops.js')).removeIds(cfg, req.ids, 'mailrm');
    case 'run':
      return (await import('./queue-ops.js')).runFlush(cfg, req.connection);
    case 'newaliases': {
      // ferrymail reads the aliases file itself when it changes: there is no database to rebuild, but what
      // newaliases is run for is a check of the file
      const { checkAliases, printAliasCheck } = await import('./aliases-cmds.js');
      return printAliasCheck(checkAliases(cfg), (t) => process.stdout.write(`newaliases: ${t}`));
    }
    case 'smtp-stdio':
      return smtpOnStdio(cfg);
    default:
      throw new FerryError('usage', 'unsupported mode');
  }
}

/** True when this process may create files in the spool. */
function spoolWritable(root: string): boolean {
  try {
    fs.accessSync(root, fs.constants.W_OK | fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * When the spool exists but is another user's (the system relay's, or for root the spool of a user's own
 * daemon), its drop folder, checked to be one to hand a message to: the spool's owner and the mode a drop
 * file needs so that the daemon can read it. Null when this user writes the spool itself.
 */
function dropFor(cfg: Config): { owner: number; mode: number } | null {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(cfg.spool, { throwIfNoEntry: false });
  } catch (err) {
    // a spool path through a file (ENOTDIR) or a folder this user may not search
    throw spoolError(err, `look at the spool ${cfg.spool}`);
  }
  // root's mail for a spool of a user's daemon goes through that spool's drop folder too
  if (!st || (spoolWritable(cfg.spool) && st.uid === process.geteuid?.())) return null;
  const settingsOwner = fs.statSync(cfg.file, { throwIfNoEntry: false })?.uid;
  checkDropFolder(cfg.spool, settingsOwner === undefined ? [] : [settingsOwner]);
  const owner = st.uid;
  // root reads any file; another daemon user needs read access to a file only its name protects
  return { owner, mode: owner === 0 ? 0o600 : 0o644 };
}

/** sendmail -bs: one SMTP session on standard input and output. */
async function smtpOnStdio(cfg: Config): Promise<number> {
  const { startSmtpDoor } = await import('../receive/smtp.js');
  const { Duplex } = await import('node:stream');
  const { nullLogger } = await import('../log/logger.js');
  const drop = dropFor(cfg);
  const spool = drop
    ? openDropWriter(cfg.spool, { defaultSender: false, mode: drop.mode })
    : openSpoolWriter(cfg.spool);
  const user = currentUser();
  const kicks: Promise<boolean>[] = [];
  const onMessage = drop
    ? undefined
    : (env: { id: string }) => void kicks.push(kickDaemon(spool.layout.control, env.id));
  const door = await startSmtpDoor(
    cfg,
    {
      spool,
      log: nullLogger,
      onMessage,
      local: { ownerUid: drop?.owner ?? process.geteuid?.() ?? -1, received: !drop },
    },
    { listen: false },
  );
  // a local program may end its lines with LF alone; SMTP needs CRLF (and DATA ends only on CRLF.CRLF)
  const { SessionLineEnds } = await import('../scan/session-lines.js');
  const input = process.stdin.pipe(new SessionLineEnds());
  const stream = Duplex.from({ readable: input, writable: process.stdout }) as import('node:stream').Duplex & {
    setTimeout?: unknown;
    readyState?: string;
  };
  stream.setTimeout = () => stream;
  // smtp-server writes a reply only while its socket's readyState is 'open'; a plain duplex has none
  stream.readyState = 'open';
  return new Promise((resolve) => {
    // the caller exits as soon as this resolves: let the daemon hear of every message first
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      // a message the input cut off must be cleaned up before exit, and is worth saying so (75)
      void door.idle().then(async ({ cut }) => {
        await Promise.all(kicks);
        if (cut) process.stderr.write('sendmail: the input ended in the middle of a message; it was not queued\n');
        resolve(cut ? EX.TEMPFAIL : EX.OK);
      });
    };
    stream.on('close', finish);
    stream.on('end', () => setImmediate(finish));
    process.stdout.on('error', () => resolve(EX.IOERR));
    door.serveStream(stream, user);
  });
}
