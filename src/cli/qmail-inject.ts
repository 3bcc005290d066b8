/**
 * The qmail-inject personality of the sendmail command, as qmail-inject(8) documents it: its flags
 * (-a, -A, -h, -H, -n, -N, -fsender, read as getopt does), its environment (QMAILINJECT letters, the From
 * and envelope sender parts from QMAILUSER, QMAILNAME, QMAILHOST, QMAILSUSER, QMAILSHOST and their
 * fallbacks, QMAILMFTFILE), its exit codes (100 permanent, 111 temporary) and its `qmail-inject: fatal:`
 * lines, and -n's printing of the message instead of queueing it.
 *
 * The message itself takes the sendmail command's submission path (receive/local.ts) with the qmail
 * rules as an option of the Submission. argv and the environment are untrusted: parsing is pure and
 * bad input is a FerryError usage (exit 100). Reading QMAILMFTFILE fails with FerryError config (111);
 * printing fails as writing standard output does.
 */
import fs from 'node:fs';
import type { Writable } from 'node:stream';
import type { Envelope } from '../domain/envelope.js';
import { FerryError, isFerryError, qmailExitCodeFor } from '../errors.js';
import type { QmailRules } from '../receive/qmail-rules.js';
import { newId } from '../spool/id.js';
import { layoutOf } from '../spool/layout.js';
import { LazySink, type MessageWriter, type SpoolWriter } from '../spool/writer.js';
import { usageError, type SendmailRequest, type Submission } from './sendmail-args.js';

/** What the environment and the clock give the parser. */
export interface QmailContext {
  env: NodeJS.ProcessEnv;
  /** The login name of the user running the command (when no variable names one). */
  login: string;
  now: Date;
  pid: number;
}

/** A submission request of qmail-inject, with the mailing list file to read (QMAILMFTFILE). */
export type QmailRequest = Extract<SendmailRequest, { mode: 'submit' }> & { listsFile?: string };

/** The first of the variables that is set and not empty. */
function firstOf(env: NodeJS.ProcessEnv, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}

/** What the environment asks for: the rules (all but returnPath, which -f decides too), the full name
 * and QMAILINJECT=s (do not look at an incoming Return-Path). */
export interface QmailEnvironment extends Omit<QmailRules, 'returnPath'> {
  fullName?: string;
  ignoreReturnPath: boolean;
}

/** Reads the variables qmail-inject(8) documents; a variable set to "" counts as unset. */
export function qmailEnvironment(ctx: QmailContext): QmailEnvironment {
  const { env } = ctx;
  const letters = env.QMAILINJECT ?? '';
  const host = firstOf(env, 'QMAILHOST', 'MAILHOST');
  const user = firstOf(env, 'QMAILUSER', 'MAILUSER', 'USER', 'LOGNAME') ?? ctx.login;
  const shost = firstOf(env, 'QMAILSHOST') ?? host;
  let suser = firstOf(env, 'QMAILSUSER') ?? user;
  // per-message VERP: the time in seconds and the process id, as qmail-inject appends them
  if (letters.includes('m')) suser += `-${Math.floor(ctx.now.getTime() / 1000)}.${ctx.pid}`;
  return {
    from: host ? `${user}@${host}` : user,
    sender: shost ? `${suser}@${shost}` : suser,
    comment: letters.includes('c'),
    deleteFrom: letters.includes('f'),
    deleteMessageId: letters.includes('i'),
    ignoreReturnPath: letters.includes('s'),
    fullName: firstOf(env, 'QMAILNAME', 'MAILNAME', 'NAME'),
  };
}

/**
 * Parses qmail-inject's argv (without node and the script). Options end at "--" or at the first word that
 * does not start with "-"; every word after them is a recipient.
 */
export function parseQmailInjectArgs(args: string[], ctx: QmailContext): QmailRequest {
  let strategy: 'default' | 'args' | 'header' | 'both' = 'default';
  let print = false;
  let sender: string | undefined;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    for (let j = 1; j < a.length; j++) {
      const ch = a[j]!;
      if (ch === 'a') strategy = 'args';
      else if (ch === 'A') strategy = 'default';
      else if (ch === 'h') strategy = 'header';
      else if (ch === 'H') strategy = 'both';
      else if (ch === 'n') print = true;
      else if (ch === 'N') print = false;
      else if (ch === 'f') {
        let v = a.slice(j + 1);
        if (v === '') {
          const next = args[++i];
          if (next === undefined) throw usageError('option -f needs a value');
          v = next;
        }
        sender = v === '<>' ? '' : v.replace(/^<(.*)>$/, '$1');
        break;
      } else throw usageError(`unknown option -${ch} (qmail-inject takes -a -A -h -H -n -N -f)`);
    }
  }
  const words = args.slice(i);
  if (strategy === 'default') strategy = words.length ? 'args' : 'header';
  const e = qmailEnvironment(ctx);
  const submit: Submission = {
    sender,
    fullName: e.fullName,
    // -h: the header alone, the arguments are not read at all
    recipients: strategy === 'header' ? [] : words,
    extract: strategy !== 'args',
    dotEnds: false, // qmail-inject reads to the end of its input
    deliveryMode: 'background',
    qmail: {
      from: e.from,
      sender: e.sender,
      comment: e.comment,
      deleteFrom: e.deleteFrom,
      deleteMessageId: e.deleteMessageId,
      returnPath: sender === undefined && !e.ignoreReturnPath,
    },
  };
  if (!submit.extract && submit.recipients.length === 0) throw usageError('-a: no recipient addresses given');
  const listsFile = firstOf(ctx.env, 'QMAILMFTFILE');
  return { mode: 'submit', submit, print, ...(listsFile ? { listsFile } : {}) };
}

/** Reads QMAILMFTFILE: one mailing list address a line; a missing file is no list. */
export function readLists(file: string): string[] | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new FerryError('config', `unable to read QMAILMFTFILE ${file} (${code ?? String(err)})`, { cause: err });
  }
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** Prints one `qmail-inject: fatal:` line for an error and maps it to 100 or 111. */
export function qmailFail(err: unknown, stderr: Writable = process.stderr): number {
  if (isFerryError(err)) {
    stderr.write(`qmail-inject: fatal: ${err.message}\n`);
    return qmailExitCodeFor(err.code);
  }
  stderr.write(`qmail-inject: fatal: internal error: ${(err as Error)?.message ?? String(err)}\n`);
  return 111;
}

/**
 * A writer for -n: the message, as it would be queued, goes to `out` with a Return-Path line naming its
 * envelope sender on top and LF line ends; nothing is written to the spool.
 */
export function printWriter(root: string, out: Writable): SpoolWriter {
  return {
    layout: layoutOf(root),
    begin: async (): Promise<MessageWriter> => {
      const id = newId();
      const chunks: Buffer[] = [];
      let bytes = 0;
      const append = (bufs: Buffer[]): undefined => {
        for (const b of bufs) {
          chunks.push(b);
          bytes += b.length;
        }
        return undefined;
      };
      const sink = new LazySink(append);
      const commit = async (partial: Omit<Envelope, 'id' | 'size'>): Promise<Envelope> => {
        await sink.written();
        const text = `Return-Path: <${partial.sender}>\r\n${Buffer.concat(chunks).toString('latin1')}`;
        const lf = Buffer.from(text.replace(/\r\n/g, '\n'), 'latin1');
        await new Promise<void>((res, rej) => out.write(lf, (err) => (err ? rej(err) : res())));
        return { ...partial, id, size: bytes } as Envelope;
      };
      return {
        id,
        append,
        get stream() {
          return sink.stream;
        },
        bytesWritten: () => bytes,
        commit,
        abort: async () => sink.destroy(),
      };
    },
  };
}
