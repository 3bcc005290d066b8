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
import type { Envelope } from '../domain/envelope.js';
import { dataError } from '../errors.js';
import { fieldValue, type HeaderField } from '../scan/headers.js';
import type { HeldMessage } from './intake.js';
import {
  type HeaderChanges,
  type Hooks,
  type HookWarn,
  type Notes,
  runStage,
  type SessionFacts,
  verdictReply,
} from './stages.js';

/** Runs the data_end hooks over a held message; applies their changes, or throws their refusal. */
export async function dataEnd(
  hooks: NonNullable<Hooks['data_end']>,
  facts: SessionFacts,
  env: Envelope,
  held: HeldMessage,
  warn: HookWarn,
): Promise<void> {
  const notes: Notes = {};
  const changes: HeaderChanges[] = [];
  const message = {
    id: env.id,
    size: env.size,
    headers: held.fields.map((f) => ({ name: f.name, value: fieldValue(f) })),
    read: () => held.read(),
    notes,
  };
  const v = await runStage(
    hooks,
    facts,
    { stage: 'data_end', verb: 'DATA', arg: '', message },
    undefined,
    warn,
    (ok) => ok.headers && changes.push(ok.headers),
  );
  if (v.action !== 'continue' && v.action !== 'accept') {
    const r = verdictReply(v);
    throw dataError(r.code, r.enhanced, r.text);
  }
  if (Object.keys(notes).length) env.notes = { ...env.notes, ...notes };
  if (changes.length) await held.rewriteHead(Buffer.from(applyChanges(held.fields, changes), 'latin1'));
}

/** The header section after the changes, in order: each hook's removals, changes, additions at the end,
 * then the fields it puts at the top. */
export function applyChanges(fields: HeaderField[], all: HeaderChanges[]): string {
  let out = fields.map((f) => ({ lower: f.lower, raw: f.raw }));
  for (const c of all) {
    const gone = new Set((c.remove ?? []).map((n) => n.toLowerCase()));
    out = out.filter((f) => !gone.has(f.lower));
    for (const ch of c.change ?? []) {
      const lower = ch.name.toLowerCase();
      const at = out.map((f, i) => (f.lower === lower ? i : -1)).filter((i) => i >= 0)[(ch.index ?? 1) - 1];
      const raw = `${ch.name}: ${ch.value}\r\n`;
      // a change of a field that is not there adds it, as a milter's change does
      if (at === undefined) out.push({ lower, raw });
      else out[at] = { lower, raw };
    }
    for (const a of c.add ?? []) out.push({ lower: a.name.toLowerCase(), raw: `${a.name}: ${a.value}\r\n` });
    const top = (c.prepend ?? []).map((a) => ({ lower: a.name.toLowerCase(), raw: `${a.name}: ${a.value}\r\n` }));
    out = [...top, ...out];
  }
  return out.map((f) => f.raw).join('');
}
