/**
 * Local recipients as the doors and the queue take them: the SMTP door asks at RCPT whether a local
 * recipient exists (refusing an unknown one with 550 5.1.1 in the dialogue), and every door expands the
 * recipients of a message into the targets they are delivered to before the message is committed, each
 * target its own recipient with its own state (so that a retry never repeats a target that already has
 * the message). A recipient whose expansion failed for good at a door that cannot refuse (the sendmail
 * command) is kept with that failure, to be bounced; one whose expansion failed for now is kept as it
 * is and expanded again by the queue run (expandDue).
 *
 * Trusts the configuration; the expansion checks the files it reads (host.ts). Never throws.
 */
import type { Config } from '../config/types.js';
import { domainOf } from '../domain/address.js';
import { newRecipient, type Recipient } from '../domain/envelope.js';
import { targetKey, type Expansion } from './expand.js';
import { expandLocal, isLocalAddress } from './host.js';

/** A refusal at RCPT: code, enhanced code and text. */
export interface RcptRefusal {
  code: number;
  enhanced: string;
  text: string;
}

/** Splits a reply such as "550 5.1.1 <x>: text" into its parts. */
function refusalOf(reply: string): RcptRefusal {
  const m = /^(\d{3}) (\d\.\d{1,3}\.\d{1,3}) (.*)$/.exec(reply);
  return m ? { code: Number(m[1]), enhanced: m[2]!, text: m[3]! } : { code: 451, enhanced: '4.3.0', text: reply };
}

/** The refusal of a local recipient at RCPT, or undefined when it may be taken (or is not local). */
export async function checkRecipientHere(cfg: Config, address: string): Promise<RcptRefusal | undefined> {
  if (!isLocalAddress(cfg, address)) return undefined;
  const r = await expandLocal(cfg, address);
  return r.ok ? undefined : refusalOf(r.reply);
}

/**
 * The user whose mailbox a recipient is delivered to inside the SMTP dialogue (local.deliver_in_dialogue
 * with local.mailbox lmtp): its domain is listed and it expands to that one mailbox alone. Undefined for
 * every other recipient, which is queued as usual.
 */
export async function dialogueUser(cfg: Config, address: string): Promise<string | undefined> {
  const l = cfg.local;
  if (l.mailbox !== 'lmtp' || !l.lmtp || !l.deliver_in_dialogue.length || !isLocalAddress(cfg, address))
    return undefined;
  if (!l.deliver_in_dialogue.includes('*') && !l.deliver_in_dialogue.includes(domainOf(address))) return undefined;
  const ex = await expandLocal(cfg, address);
  const t = ex.ok && ex.targets.length === 1 ? ex.targets[0]!.local : undefined;
  return t?.kind === 'mailbox' ? t.user : undefined;
}

/** The recipients that become of one recipient by an expansion. */
function targetsOf(r: Recipient, ex: Extract<Expansion, { ok: true }>): Recipient[] {
  return ex.targets.map((t) => {
    const same = t.address.toLowerCase() === r.address.toLowerCase();
    return newRecipient(t.address, {
      ...(r.notify ? { notify: r.notify } : {}),
      ...(r.orcpt ? { orcpt: r.orcpt } : {}),
      ...(same ? {} : { orig: r.orig ?? r.address }),
      ...(t.local ? { local: t.local } : {}),
    });
  });
}

/** Expands the local recipients of a message about to be committed; the rest pass as they are. */
export async function expandRecipients(cfg: Config, recipients: Recipient[]): Promise<Recipient[]> {
  const out = new Map<string, Recipient>();
  const add = (r: Recipient): void => {
    const k = targetKey(r);
    if (!out.has(k)) out.set(k, r);
  };
  for (const r of recipients) {
    if (r.local || !isLocalAddress(cfg, r.address)) {
      add(r);
      continue;
    }
    const ex = await expandLocal(cfg, r.address);
    if (ex.ok) for (const t of targetsOf(r, ex)) add(t);
    // a permanent failure is bounced from the queue; a temporary one is expanded again at delivery
    else if (/^5/.test(ex.reply)) add({ ...r, local: { kind: 'refused', reply: ex.reply } });
    else add(r);
  }
  return [...out.values()];
}

/** What the queue does with a local recipient that was not expanded yet: its targets, or the reply it
 * fails with (now or for good). */
export async function expandDue(
  cfg: Config,
  r: Recipient,
): Promise<{ targets: Recipient[] } | { reply: string; permanent: boolean }> {
  const ex = await expandLocal(cfg, r.address);
  if (!ex.ok) return { reply: ex.reply, permanent: /^5/.test(ex.reply) };
  return { targets: targetsOf(r, ex) };
}
