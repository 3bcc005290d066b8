/**
 * The SMTP stages and their hooks: connect, helo, mail, relay (a recipient the relay policy refuses), rcpt,
 * data, data end, other commands, unknown commands, close.
 *
 * A hook sees plain facts about the session and returns a verdict from a closed set: continue (the next
 * hook decides), accept (the stage passes; its later hooks are skipped), defer (4xx), reject (5xx) or
 * disconnect (421 and the session ends), each with its own reply. Hooks of a stage run in order; the
 * first verdict that is not "continue" decides. A hook that throws, answers something that is no
 * verdict, or does not answer within its timeout yields a temporary failure (451 4.3.0 / 4.4.5) with a
 * log line, never a silent pass, unless that hook was configured with on_error: accept.
 */
import type { Reply } from '../domain/outcome.js';

/** The stages hooks can attach to. */
export type Stage =
  | 'connect'
  | 'helo'
  | 'mail'
  | 'relay'
  | 'rcpt'
  | 'data'
  | 'data_end'
  | 'other'
  | 'unknown'
  | 'close';

/** Changes a data_end hook makes to the header: fields added at the end of the header, the value of the
 * index-th field of a name changed (1 = the first, the default), every field of a name removed. */
export interface HeaderChanges {
  /** Fields put at the very top of the header (above the door's Received line), as Postfix's PREPEND. */
  prepend?: Array<{ name: string; value: string }>;
  add?: Array<{ name: string; value: string }>;
  /** Fields put before the field at index (0: the top, where the door's Received line is). */
  insert?: Array<{ index: number; name: string; value: string }>;
  /** An empty value removes that field. */
  change?: Array<{ name: string; value: string; index?: number }>;
  remove?: string[];
}

/** Changes a data_end hook makes to the envelope: a new sender, recipients added and removed. */
export interface EnvelopeChanges {
  sender?: string;
  add?: string[];
  remove?: string[];
}

/** What a data_end verdict may do to the message besides its header. */
export interface MessageChanges {
  envelope?: EnvelopeChanges;
  /** The new body, replacing the old one whole (bytes after the blank line). */
  body?: Uint8Array;
  /** Keep the message on hold (ferrymail queue release) with this reason, instead of queuing it. */
  quarantine?: string;
}

/** A deferral that applies only when the stage would otherwise pass (permit) or be refused for good
 * (reject): Postfix's DEFER_IF_PERMIT and DEFER_IF_REJECT. */
export interface SoftDefer {
  when: 'permit' | 'reject';
  reply: Reply;
}

/** Notes a data_end hook sets: later hooks see them, the envelope keeps them, the log shows them. */
export type Notes = Record<string, string>;

/** What data_end hooks see of the message: it is whole in the spool, not yet accepted. */
export interface MessageFacts {
  id: string;
  size: number;
  /** The header fields as they stand (the door's Received line first), unfolded values. */
  headers: Array<{ name: string; value: string }>;
  /** The whole message as written, header and body, as a stream of bytes. */
  read(): AsyncIterable<Uint8Array>;
  /** Notes of the hooks before. */
  notes: Notes;
}

/** What a hook decides. */
export type Verdict =
  | ({
      action: 'continue';
      headers?: HeaderChanges;
      notes?: Notes;
      policy?: string;
      softDefer?: SoftDefer;
    } & MessageChanges)
  | ({ action: 'accept'; headers?: HeaderChanges; notes?: Notes; policy?: string } & MessageChanges)
  | { action: 'discard' }
  | { action: 'defer'; reply: Reply }
  | { action: 'reject'; reply: Reply }
  | { action: 'disconnect'; reply: Reply };

/** Facts about the session a hook may look at. */
export interface SessionFacts {
  id: string;
  peer: string;
  peerPort: number;
  /** Loopback or local_nets. */
  trusted: boolean;
  secure: boolean;
  user?: string;
  helo?: string;
  sender?: string;
  recipients: string[];
  /** The policy class rcpt hooks gave the transaction's recipients (every one has the same). */
  policy?: string;
}

/** What a hook is told about the command at hand. */
export interface StageInput {
  stage: Stage;
  /** The command verb (EHLO, MAIL, NOOP, ...) or "" for connect. */
  verb: string;
  /** The command's argument text, or the address for mail and rcpt. */
  arg: string;
  /** At data_end: the message. */
  message?: MessageFacts;
}

/** A hook: async or not. */
export type Hook = (s: SessionFacts, input: StageInput) => Verdict | Promise<Verdict>;

/** A hook as the configuration names it: its name for the log, its time limit, and what its failure means. */
export interface HookEntry {
  name: string;
  run: Hook;
  timeoutMs: number;
  /** tempfail: a throw or timeout defers (the default); accept: it counts as continue. */
  onError: 'tempfail' | 'accept';
}

/** Hooks by stage. */
export type Hooks = Partial<Record<Stage, Array<Hook | HookEntry>>>;

/** Where a stage's failures are told: a hook that threw, timed out or answered nonsense. */
export type HookWarn = (text: string, fields: Record<string, string | number | undefined>) => void;

export const CONTINUE: Verdict = Object.freeze({ action: 'continue' });

/** Builds a reject verdict. */
export function reject(code: number, enhanced: string, text: string): Verdict {
  return { action: 'reject', reply: { code, enhanced, text } };
}

/** Builds a defer verdict (a 4xx reply). */
export function defer(code: number, enhanced: string, text: string): Verdict {
  return { action: 'defer', reply: { code, enhanced, text } };
}

/** A hook's failure: why, and the verdict it stands for. */
class HookFailure extends Error {
  constructor(
    message: string,
    readonly verdict: Verdict,
  ) {
    super(message);
  }
}

/** Races a hook against its timeout. */
function withTimeout(p: Promise<Verdict>, ms: number): Promise<Verdict> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Verdict>((_resolve, rejectWith) => {
    timer = setTimeout(
      () =>
        rejectWith(
          new HookFailure(`no answer within ${ms} ms`, defer(451, '4.4.5', 'Policy check timed out, try again later')),
        ),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Whether a hook's answer is a promise (or any thenable). */
function isThenable(v: unknown): v is PromiseLike<Verdict> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

/** The verdict a hook returned, checked: anything else is the hook's failure. */
function checked(v: unknown): Verdict {
  const r = v as { action?: unknown; reply?: { code?: unknown; enhanced?: unknown; text?: unknown } } | null;
  const action = r?.action;
  // the common answer, nothing more in it
  if (action === 'continue' && Object.keys(r as object).length === 1) return CONTINUE;
  if (action === 'continue' || action === 'accept') return { action, ...changesOf(v), ...messageChangesOf(v) };
  if (action === 'discard') return { action };
  if (action !== 'defer' && action !== 'reject' && action !== 'disconnect')
    throw new Error(`answered ${JSON.stringify(v)?.slice(0, 80)}, not a verdict`);
  const code = Number(r?.reply?.code);
  const first = action === 'reject' ? 5 : 4;
  const enhanced = typeof r?.reply?.enhanced === 'string' ? r.reply.enhanced : '';
  const text = typeof r?.reply?.text === 'string' ? r.reply.text.replace(/[\r\n]+/g, ' ') : '';
  // a reply of the wrong class (a 250 to reject, a 5xx to defer) is the hook's mistake, not the client's
  if (!Number.isInteger(code) || Math.floor(code / 100) !== first || (action === 'disconnect' && code !== 421))
    throw new Error(`answered ${action} with the reply code ${String(r?.reply?.code)}`);
  if (!new RegExp(`^${first}\\.\\d{1,3}\\.\\d{1,3}$`).test(enhanced))
    throw new Error(`answered ${action} with the enhanced code ${JSON.stringify(enhanced)}`);
  return { action, reply: { code, enhanced, text: text || (first === 5 ? 'Refused by policy' : 'Try again later') } };
}

/** A field name as RFC 5322 allows it. */
const FIELD_NAME = /^[!-9;-~]{1,76}$/;
/** A note's name. */
const NOTE_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** A field value a hook gives: printable text, folded (CRLF and a space or tab) where it is long, no line
 * over 998 characters (a note or reason: one line). */
function fieldText(v: unknown, what: string, folded = false): string {
  const lines = typeof v === 'string' ? (folded ? v.split(/\r\n(?=[ \t])/) : [v]) : [];
  if (
    typeof v !== 'string' ||
    v.length > 65_536 ||
    lines.some((l) => l.length > 998 || /[\x00-\x08\x0a-\x1f\x7f]/.test(l))
  )
    throw new Error(`gave ${what} that is not ${folded ? 'a header field value' : 'one line of text'}`);
  return v;
}

/** The header changes, notes and policy class of a continue or accept verdict, checked. */
function changesOf(v: unknown): { headers?: HeaderChanges; notes?: Notes; policy?: string; softDefer?: SoftDefer } {
  const r = v as { headers?: HeaderChanges; notes?: Notes; policy?: unknown };
  const out: { headers?: HeaderChanges; notes?: Notes; policy?: string; softDefer?: SoftDefer } = {};
  const soft = (v as { softDefer?: { when?: unknown; reply?: unknown } }).softDefer;
  if (soft !== undefined) {
    const checkedReply = checked({ action: 'defer', reply: soft?.reply });
    if ((soft?.when !== 'permit' && soft?.when !== 'reject') || checkedReply.action !== 'defer')
      throw new Error('gave a softDefer that is not { when: permit|reject, reply: 4xx }');
    out.softDefer = { when: soft.when, reply: checkedReply.reply };
  }
  if (r.policy !== undefined) {
    if (typeof r.policy !== 'string' || !NOTE_NAME.test(r.policy))
      throw new Error(`gave the policy ${JSON.stringify(r.policy)} (letters, digits, _ . - only)`);
    out.policy = r.policy;
  }
  if (r.headers !== undefined) {
    const h = r.headers;
    const name = (n: unknown): string => {
      if (typeof n !== 'string' || !FIELD_NAME.test(n)) throw new Error(`gave the field name ${JSON.stringify(n)}`);
      return n;
    };
    const list = <T>(x: T[] | undefined, what: string): T[] => {
      if (x === undefined) return [];
      if (!Array.isArray(x)) throw new Error(`gave headers.${what} that is not a list`);
      return x;
    };
    out.headers = {
      insert: list(h.insert, 'insert').map((a) => {
        if (!Number.isInteger(a?.index) || a.index < 0) throw new Error('gave an insert with a bad index');
        return { index: a.index, name: name(a?.name), value: fieldText(a?.value, 'a value', true) };
      }),
      prepend: list(h.prepend, 'prepend').map((a) => ({
        name: name(a?.name),
        value: fieldText(a?.value, 'a value', true),
      })),
      add: list(h.add, 'add').map((a) => ({ name: name(a?.name), value: fieldText(a?.value, 'a value', true) })),
      change: list(h.change, 'change').map((c) => {
        const index = c?.index ?? 1;
        if (!Number.isInteger(index) || index < 1) throw new Error('gave a change with a bad index');
        return { name: name(c?.name), value: fieldText(c?.value, 'a value', true), index };
      }),
      remove: list(h.remove, 'remove').map(name),
    };
  }
  if (r.notes !== undefined) {
    if (!r.notes || typeof r.notes !== 'object' || Array.isArray(r.notes))
      throw new Error('gave notes that are no mapping');
    out.notes = {};
    for (const [k, val] of Object.entries(r.notes)) {
      if (!NOTE_NAME.test(k)) throw new Error(`gave the note name ${JSON.stringify(k)}`);
      out.notes[k] = fieldText(val, `the note ${k}`);
    }
  }
  return out;
}

/** An address a hook gives: no spaces, brackets or control characters (the empty sender is allowed). */
function addressText(v: unknown, empty: boolean): string {
  if (typeof v !== 'string' || (!empty && !v) || v.length > 320 || /[\s<>\x00-\x1f\x7f]/.test(v))
    throw new Error(`gave the address ${JSON.stringify(v)?.slice(0, 80)}`);
  return v;
}

/** The envelope changes, body and quarantine of a verdict, checked. */
function messageChangesOf(v: unknown): MessageChanges {
  const r = v as { envelope?: EnvelopeChanges; body?: unknown; quarantine?: unknown };
  const out: MessageChanges = {};
  if (r.envelope !== undefined) {
    const e = r.envelope;
    const list = (x: unknown, what: string): string[] => {
      if (x === undefined) return [];
      if (!Array.isArray(x)) throw new Error(`gave envelope.${what} that is not a list`);
      return x.map((a) => addressText(a, false));
    };
    out.envelope = {
      ...(e.sender !== undefined ? { sender: addressText(e.sender, true) } : {}),
      add: list(e.add, 'add'),
      remove: list(e.remove, 'remove'),
    };
  }
  if (r.body !== undefined) {
    if (!(r.body instanceof Uint8Array)) throw new Error('gave a body that is not bytes');
    out.body = r.body;
  }
  if (r.quarantine !== undefined) out.quarantine = fieldText(r.quarantine, 'a quarantine reason') || 'quarantined';
  return out;
}

/** A hook in its configured form (a bare function: the defaults). */
function entryOf(h: Hook | HookEntry, timeoutMs: number): HookEntry {
  return typeof h === 'function' ? { name: h.name || 'hook', run: h, timeoutMs, onError: 'tempfail' } : h;
}

/** Runs the hooks of a stage in order; the first verdict other than continue wins. */
export async function runStage(
  hooks: Array<Hook | HookEntry> | undefined,
  s: SessionFacts,
  input: StageInput,
  timeoutMs = 30_000,
  warn?: HookWarn,
  collect?: (v: Extract<Verdict, { action: 'continue' | 'accept' }>) => void,
): Promise<Verdict> {
  let ifPermit: Reply | undefined;
  let ifReject: Reply | undefined;
  /** The stage's end: a soft deferral turns a pass (or a refusal for good) into a deferral. */
  const end = (v: Verdict): Verdict => {
    if ((v.action === 'continue' || v.action === 'accept' || v.action === 'discard') && ifPermit)
      return { action: 'defer', reply: ifPermit };
    if (v.action === 'reject' && ifReject) return { action: 'defer', reply: ifReject };
    return v;
  };
  for (const h of hooks ?? []) {
    const e = entryOf(h, timeoutMs);
    let v: Verdict;
    try {
      // a hook that answers at once (most in-process ones) needs no timer
      const got = e.run(s, input);
      v = checked(isThenable(got) ? await withTimeout(Promise.resolve(got), e.timeoutMs) : got);
    } catch (err) {
      const failed =
        err instanceof HookFailure ? err.verdict : defer(451, '4.3.0', 'Internal policy error, try again later');
      warn?.(
        `hook ${e.name} failed at ${input.stage}: ${(err as Error).message}; ${e.onError === 'accept' ? 'passed (on_error: accept)' : 'deferred'}`,
        {
          session: s.id,
          peer: s.peer,
        },
      );
      v = e.onError === 'accept' ? CONTINUE : failed;
    }
    if (v.action === 'continue' || v.action === 'accept') {
      collect?.(v);
      // later hooks see the notes of those before them
      if (v.notes && input.message) Object.assign(input.message.notes, v.notes);
    }
    if (v.action === 'continue' && v.softDefer) {
      if (v.softDefer.when === 'permit') ifPermit ??= v.softDefer.reply;
      else ifReject ??= v.softDefer.reply;
    }
    if (v.action !== 'continue') return end(v);
  }
  return end(CONTINUE);
}

/** The reply a refusing verdict sends: a disconnect always with 421. */
export function verdictReply(
  v: Exclude<Verdict, { action: 'continue' } | { action: 'accept' } | { action: 'discard' }>,
): Reply {
  return v.action === 'disconnect' ? { ...v.reply, code: 421 } : v.reply;
}

/** Formats a reply's text the way the wire carries it after the code. */
export function replyText(r: Reply): string {
  return `${r.enhanced} ${r.text}`;
}
