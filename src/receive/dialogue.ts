/**
 * Delivery inside the SMTP dialogue (local.deliver_in_dialogue): a transaction whose recipients all
 * reach one local mailbox is handed to the local LMTP server once the whole message is in the spool's
 * temporary file, and the server's verdict becomes the reply to DATA: 250 once the server has it, its
 * own 4xx or 5xx when it refuses (over quota, no such mailbox), so the sender learns the verdict while
 * it still holds the message. Nothing is queued for such a message then, and no notice is ever made.
 *
 * When the server cannot be reached, or the connection breaks after the whole message went out (it
 * may have been delivered), the message is committed and queued as any other, with a log line saying
 * why: the sender is never told less than the truth, and nothing is lost.
 *
 * Trusts the verdict of the server and the envelope the door built. Never throws: a failing delivery
 * function counts as a server that could not be reached.
 */
import type { Config } from '../config/types.js';
import type { Envelope } from '../domain/envelope.js';
import type { HeldMessage } from './intake.js';
import type { DialogueVerdict, DoorDeps } from './smtp.js';
import { smtpError } from './smtp-envelope.js';

/** One transaction's delivery in the dialogue: the step before the commit, and the verdict it reached. */
export interface DialogueStep {
  /** intake's last word: false when the server took or refused the message (nothing to commit). */
  beforeCommit(env: Envelope, held: HeldMessage): Promise<boolean>;
  /** The server's verdict, once beforeCommit returned false. */
  verdict(): DialogueVerdict | undefined;
}

/** The step for a transaction whose recipients reach the mailbox of user. */
export function dialogueStep(cfg: Config, deps: DoorDeps, user: string, session: string): DialogueStep {
  let verdict: DialogueVerdict | undefined;
  const log = deps.log;
  return {
    verdict: () => verdict,
    async beforeCommit(env, held) {
      const r = env.recipients[0];
      // the expansion at DATA may differ from the one at RCPT (the aliases changed in between): queued then
      if (!deps.dialogue || env.recipients.length !== 1 || r?.local?.kind !== 'mailbox' || r.local.user !== user)
        return true;
      const v = await deps
        .dialogue(cfg, {
          id: env.id,
          sender: env.sender,
          recipient: r,
          size: env.size,
          body: env.body,
          smtputf8: env.smtputf8,
          read: () => held.read(),
        })
        .catch((err: Error) => {
          log.log('warn', `${env.id} the mailbox server was not asked: ${err.message}`, { session });
          return undefined;
        });
      if (!v || v.outcome === 'uncertain') {
        const why = v
          ? `its connection broke after the message went out (${v.reply}); it may have it, and the queue delivers it again`
          : 'it could not be reached; the message is queued';
        log.log('warn', `${env.id} delivery in the dialogue to ${user}'s mailbox did not finish: ${why}`, { session });
        return true;
      }
      verdict = v;
      const fields = {
        from: `<${env.sender}>`,
        to: `<${r.address}>`,
        orig: r.orig ? `<${r.orig}>` : undefined,
        route: 'local',
        relay: v.relay,
        status: v.reply,
        in: 'dialogue',
        peer: env.origin.peer ? `[${env.origin.peer}]` : undefined,
        size: env.size,
      };
      log.log(v.outcome === 'ok' ? 'delivered' : v.outcome === 'tempfail' ? 'deferred' : 'failed', env.id, fields);
      return false;
    },
  };
}

/** The reply to DATA for a verdict: the server's own, its class kept whatever the server's text says. */
export function dialogueReply(v: DialogueVerdict, id: string): string | Error {
  if (v.outcome === 'ok') return `2.0.0 Ok: ${id} delivered to the mailbox`;
  const m = /^([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?(.*)$/.exec(v.reply);
  const permanent = v.outcome === 'permfail';
  const code = m && m[1]![0] === (permanent ? '5' : '4') ? Number(m[1]) : permanent ? 550 : 451;
  const enhanced = m?.[2] && m[2][0] === String(code)[0] ? m[2] : permanent ? '5.0.0' : '4.0.0';
  return smtpError(code, enhanced, `${(m?.[3] ?? v.reply).trim() || 'refused by the mailbox server'}`);
}
