/**
 * The sendmail command line, parsed by hand: commander cannot read sendmail's flags (attached values,
 * "-qo NAME", "-oi", "-B8BITMIME", legacy flags that must be accepted and ignored).
 *
 * Also picks the personality from the name the command was called by (sendmail, mailq, runq, mailrm,
 * newaliases, qmail-inject; qmail-inject's own flags are read by qmail-inject.ts). Input is untrusted
 * argv. Pure; bad input yields a UsageError with one readable line.
 */
import { FerryError } from '../errors.js';
import { ENVID_MAX, parseEnvid, type NotifyKeyword } from '../domain/envelope.js';
import type { Submission } from '../receive/local.js';

export type { Submission };

/** What the command was asked to do. */
export type SendmailRequest =
  | { mode: 'submit'; submit: Submission; configPath?: string; print?: boolean }
  | { mode: 'smtp-stdio'; configPath?: string }
  | { mode: 'list'; configPath?: string }
  | { mode: 'version'; configPath?: string }
  | { mode: 'run'; connection?: string; configPath?: string }
  | { mode: 'remove'; ids: string[]; configPath?: string }
  | { mode: 'newaliases'; configPath?: string };

/** A command line that cannot be understood. */
export function usageError(text: string): FerryError {
  return new FerryError('usage', text);
}

/** Flags that take a value (attached or as the next word) and are ignored. */
const IGNORED_WITH_VALUE = new Set(['h', 'L', 'X', 'O', 'B']);
/** Flags without a value that are ignored. */
const IGNORED_PLAIN = new Set(['m', 'v', 'n', 'U', 'G', 'd', 'x', 'A']);

/** The names the command answers to. */
export type Personality = 'sendmail' | 'mailq' | 'runq' | 'mailrm' | 'newaliases' | 'qmail-inject';

/** Personality from the invoked name. */
export function personality(argv0: string): Personality {
  const base = argv0.split('/').pop() ?? '';
  const name = base.replace(/\.(js|mjs|cjs)$/, '');
  if (name === 'mailq' || name === 'runq' || name === 'mailrm' || name === 'newaliases' || name === 'qmail-inject')
    return name;
  return 'sendmail';
}

/** Parses a -N value. */
function parseNotify(v: string): NotifyKeyword[] {
  const parts = v
    .toUpperCase()
    .split(',')
    .map((s) => s.trim());
  const ok = ['NEVER', 'SUCCESS', 'FAILURE', 'DELAY'];
  if (!parts.every((p) => ok.includes(p)) || (parts.includes('NEVER') && parts.length > 1)) {
    throw usageError(`-N takes never, or any of success,failure,delay (got ${JSON.stringify(v)})`);
  }
  return parts as NotifyKeyword[];
}

/** Argument cursor: the value of a flag, attached ("-fme") or the next word ("-f me"). */
class Cursor {
  i = 0;
  constructor(readonly args: string[]) {}
  value(flag: string, attached: string): string {
    if (attached !== '') return attached;
    const next = this.args[++this.i];
    if (next === undefined) throw usageError(`option -${flag} needs a value`);
    return next;
  }
}

/** Parses sendmail argv (without node and the script) for a personality. */
export function parseSendmailArgs(
  args: string[],
  who: Exclude<Personality, 'qmail-inject'> = 'sendmail',
): SendmailRequest {
  const s: Submission = { recipients: [], extract: false, dotEnds: true, deliveryMode: 'background' };
  let mode: SendmailRequest['mode'] = (
    { sendmail: 'submit', mailq: 'list', runq: 'run', mailrm: 'remove', newaliases: 'newaliases' } as const
  )[who];
  let configPath: string | undefined;
  let connection: string | undefined;
  const ids: string[] = [];
  const c = new Cursor(args);
  const rest: string[] = [];
  for (; c.i < args.length; c.i++) {
    const a = args[c.i]!;
    if (a === '--') {
      rest.push(...args.slice(c.i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      rest.push(a);
      continue;
    }
    const flag = a[1]!;
    const tail = a.slice(2);
    switch (flag) {
      case 't':
      case 'i':
        for (const ch of flag + tail) {
          if (ch === 't') s.extract = true;
          else if (ch === 'i') s.dotEnds = false;
          else throw usageError(`unknown option ${a}`);
        }
        break;
      case 'f':
      case 'r': {
        const v = c.value(flag, tail);
        s.sender = v === '<>' ? '' : v.replace(/^<(.*)>$/, '$1');
        break;
      }
      case 'F':
        s.fullName = c.value(flag, tail);
        break;
      case 'N':
        s.notify = parseNotify(c.value(flag, tail));
        break;
      case 'R': {
        const v = c.value(flag, tail).toUpperCase();
        if (v !== 'FULL' && v !== 'HDRS') throw usageError(`-R takes full or hdrs (got ${JSON.stringify(v)})`);
        s.ret = v;
        break;
      }
      case 'V': {
        // RFC 3461 xtext, as an SMTP client sends ENVID; it goes into notices, so nothing else is taken
        const v = c.value(flag, tail);
        const e = parseEnvid(v);
        if (!e.ok)
          throw usageError(
            `-V takes an ENVID of at most ${ENVID_MAX} characters in xtext; ${JSON.stringify(v.slice(0, 40))} is ${e.reason}`,
          );
        s.envid = e.value;
        break;
      }
      case 'C':
        configPath = c.value(flag, tail);
        break;
      case 'o':
        if (tail === 'i') s.dotEnds = false;
        else if (tail.startsWith('d')) s.deliveryMode = deliveryMode(tail.slice(1));
        else if (tail === '') c.value(flag, ''); // "-o x value" style: the option name follows
        break; // every other -oX is a legacy option: accepted and ignored
      case 'b':
        mode = bMode(tail);
        break;
      case 'q':
        ({ mode, connection } = qMode(tail, c));
        break;
      case 'I':
        mode = 'newaliases'; // sendmail -I is newaliases
        break;
      case 'M':
        if (tail !== 'rm') throw usageError(`unknown option ${a}`);
        mode = 'remove';
        break;
      default:
        if (IGNORED_WITH_VALUE.has(flag)) c.value(flag, tail);
        else if (!IGNORED_PLAIN.has(flag)) throw usageError(`unknown option ${a} (see docs/sendmail.md)`);
    }
  }
  return finish(mode, s, rest, ids, configPath, connection);
}

/** Builds the request once all flags are read. */
function finish(
  mode: SendmailRequest['mode'],
  s: Submission,
  rest: string[],
  ids: string[],
  configPath?: string,
  connection?: string,
): SendmailRequest {
  switch (mode) {
    case 'submit':
      s.recipients = rest;
      if (!s.extract && s.recipients.length === 0)
        throw usageError('no recipients given (name them, or use -t to read them from the header)');
      return { mode, submit: s, configPath };
    case 'remove':
      ids.push(...rest);
      if (ids.length === 0) throw usageError('name the queue ids to remove');
      return { mode, ids, configPath };
    case 'run':
      return { mode, connection, configPath };
    default:
      return { mode, configPath } as SendmailRequest;
  }
}

/** The -od delivery modes. */
function deliveryMode(v: string): Submission['deliveryMode'] {
  if (v === 'q' || v === 'd') return 'queue';
  if (v === 'i') return 'interactive';
  if (v === 'b' || v === '') return 'background';
  throw usageError(`unknown delivery mode -od${v}`);
}

/** The -b modes. */
function bMode(v: string): SendmailRequest['mode'] {
  switch (v) {
    case 'm':
      return 'submit';
    case 's':
      return 'smtp-stdio';
    case 'p':
      return 'list';
    case 'V':
      return 'version';
    case 'i':
      return 'newaliases';
    case 'd':
    case 'D':
      throw usageError('-bd: run "ferrymail daemon" to start the daemon');
    default:
      throw usageError(`unsupported mode -b${v}`);
  }
}

/** The -q forms: -q, -q30m (one run now), -qo NAME / -qoNAME (run as if on connection NAME). */
function qMode(tail: string, c: Cursor): { mode: 'run'; connection?: string } {
  if (tail === '' || /^\d+[smhdw]?$/.test(tail)) return { mode: 'run' };
  if (tail.startsWith('o')) {
    const name = tail.slice(1) || c.args[c.i + 1];
    if (!tail.slice(1)) {
      if (name === undefined || name.startsWith('-')) return { mode: 'run' };
      c.i++;
    }
    return { mode: 'run', connection: name };
  }
  throw usageError(`unsupported queue option -q${tail}`);
}
