/**
 * The data_end stage: once the whole message is in the spool's temporary file and before anyone is
 * told it is accepted, its hooks see the header fields, the size and the whole message, and decide.
 * Their header changes are applied to the file (the header rewritten, the body copied after it) and
 * their notes kept in the envelope and shown in the log; a refusal refuses the message with the
 * hook's own reply, and nothing of it is kept.
 *
 * Trusts the verdicts as stages.ts checked them. Throws a FerryError (data) carrying the reply of a
 * refusal; spool trouble while rewriting is a FerryError (spool-*), answered 451 by the door.
 */
import type { Config } from '../config/types.js';
import { type Envelope, newRecipient } from '../domain/envelope.js';
import { expandRecipients } from '../local/recipients.js';
import { normalAddress } from './smtp-envelope.js';
import { dataError } from '../errors.js';
import { fieldValue, type HeaderField } from '../scan/headers.js';
import type { HeldMessage } from './intake.js';
import {
  type EnvelopeChanges,
  type HeaderChanges,
  type MessageChanges,
  type Hooks,
  type HookWarn,
  type Notes,
  runStage,
  type SessionFacts,
  verdictReply,
} from './stages.js';

/** What became of a message at data_end when it was not refused. */
export interface DataEndOutcome {
  /** Dropped as if accepted (a hook discarded it, or removed every recipient). */
  discard?: string;
  /** Kept on hold, with this reason. */
  hold?: string;
}

/** Runs the data_end hooks over a held message; applies their changes, or throws their refusal. */
export async function dataEnd(
  cfg: Config,
  hooks: NonNullable<Hooks['data_end']>,
  facts: SessionFacts,
  env: Envelope,
  held: HeldMessage,
  warn: HookWarn,
): Promise<DataEndOutcome> {
  const notes: Notes = {};
  const changes: HeaderChanges[] = [];
  const fields = await held.fields();
  const more: MessageChanges[] = [];
  const message = {
    id: env.id,
    size: env.size,
    headers: fields.map((f) => ({ name: f.name, value: fieldValue(f) })),
    read: () => held.read(),
    notes,
  };
  const v = await runStage(
    hooks,
    facts,
    { stage: 'data_end', verb: 'DATA', arg: '', message },
    undefined,
    warn,
    (ok) => {
      if (ok.headers) changes.push(ok.headers);
      more.push(ok);
    },
  );
  if (v.action === 'discard') return { discard: 'a hook discarded it' };
  if (v.action !== 'continue' && v.action !== 'accept') {
    const r = verdictReply(v);
    throw dataError(r.code, r.enhanced, r.text);
  }
  if (Object.keys(notes).length) env.notes = { ...env.notes, ...notes };
  for (const m of more) if (m.envelope) await changeEnvelope(cfg, env, m.envelope);
  if (!env.recipients.length) return { discard: 'a hook removed every recipient' };
  const body = more.reduce<Uint8Array | undefined>((b, m) => m.body ?? b, undefined);
  if (changes.length || body)
    await held.rewriteHead(
      Buffer.from(applyChanges(fields, changes), 'latin1'),
      body ? Buffer.from(body.buffer, body.byteOffset, body.byteLength) : undefined,
    );
  const hold = more.find((m) => m.quarantine)?.quarantine;
  return hold ? { hold } : {};
}

/** Applies a hook's envelope changes: the new sender, recipients removed (with the targets they became),
 * recipients added (a local one expanded, as at RCPT). */
async function changeEnvelope(cfg: Config, env: Envelope, e: EnvelopeChanges): Promise<void> {
  if (e.sender !== undefined) env.sender = e.sender === '' ? '' : normalAddress(e.sender, cfg.hostname);
  const gone = new Set((e.remove ?? []).map((a) => normalAddress(a, cfg.hostname).toLowerCase()));
  env.recipients = env.recipients.filter(
    (r) => !gone.has(r.address.toLowerCase()) && !(r.orig && gone.has(r.orig.toLowerCase())),
  );
  const have = new Set(env.recipients.map((r) => r.address.toLowerCase()));
  const added = (e.add ?? [])
    .map((a) => normalAddress(a, cfg.hostname))
    .filter((a) => !have.has(a.toLowerCase()))
    .map((a) => newRecipient(a));
  if (added.length) env.recipients = [...env.recipients, ...(await expandRecipients(cfg, added))];
}

/** The header section after the changes, in order: each hook's removals, changes, insertions, additions
 * at the end, then the fields it puts at the top. */
export function applyChanges(fields: HeaderField[], all: HeaderChanges[]): string {
  let out = fields.map((f) => ({ lower: f.lower, raw: f.raw }));
  const field = (name: string, value: string): { lower: string; raw: string } => ({
    lower: name.toLowerCase(),
    raw: `${name}: ${value}\r\n`,
  });
  for (const c of all) {
    const gone = new Set((c.remove ?? []).map((n) => n.toLowerCase()));
    out = out.filter((f) => !gone.has(f.lower));
    for (const ch of c.change ?? []) {
      const lower = ch.name.toLowerCase();
      const at = out.map((f, i) => (f.lower === lower ? i : -1)).filter((i) => i >= 0)[(ch.index ?? 1) - 1];
      // an empty value removes the field; a change of a field that is not there adds it (as a milter's)
      if (at === undefined) {
        if (ch.value !== '') out.push(field(ch.name, ch.value));
      } else if (ch.value === '') out.splice(at, 1);
      else out[at] = field(ch.name, ch.value);
    }
    for (const ins of c.insert ?? []) out.splice(Math.min(ins.index, out.length), 0, field(ins.name, ins.value));
    for (const a of c.add ?? []) out.push(field(a.name, a.value));
    out = [...(c.prepend ?? []).map((a) => field(a.name, a.value)), ...out];
  }
  return out.map((f) => f.raw).join('');
}
