/**
 * The SMTP stages and their hooks: connect, helo, mail, rcpt, data, other commands, unknown commands.
 *
 * A hook sees plain facts about the session and returns a verdict from a closed set. Hooks of a stage
 * run in order; the first verdict that is not "continue" decides. A hook that throws or does not answer
 * within its timeout yields a temporary failure (451 4.3.0 / 4.4.5), never a silent pass.
 */
import type { Reply } from '../domain/outcome.js';

/** The stages hooks can attach to. */
export type Stage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data' | 'other' | 'unknown';

/** What a hook decides. */
export type Verdict =
  | { action: 'continue' }
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
}

/** What a hook is told about the command at hand. */
export interface StageInput {
  stage: Stage;
  /** The command verb (EHLO, MAIL, NOOP, ...) or "" for connect. */
  verb: string;
  /** The command's argument text, or the address for mail and rcpt. */
  arg: string;
}

/** A hook: async or not. */
export type Hook = (s: SessionFacts, input: StageInput) => Verdict | Promise<Verdict>;

/** Hooks by stage. */
export type Hooks = Partial<Record<Stage, Hook[]>>;

export const CONTINUE: Verdict = { action: 'continue' };

/** Builds a reject verdict. */
export function reject(code: number, enhanced: string, text: string): Verdict {
  return { action: 'reject', reply: { code, enhanced, text } };
}

/** Races a hook against its timeout. */
function withTimeout(p: Promise<Verdict>, ms: number): Promise<Verdict> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Verdict>((resolve) => {
    timer = setTimeout(() => resolve(reject(451, '4.4.5', 'Policy check timed out, try again later')), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Runs the hooks of a stage in order; the first verdict other than continue wins. */
export async function runStage(
  hooks: Hook[] | undefined,
  s: SessionFacts,
  input: StageInput,
  timeoutMs = 30_000,
): Promise<Verdict> {
  for (const hook of hooks ?? []) {
    let v: Verdict;
    try {
      v = await withTimeout(Promise.resolve(hook(s, input)), timeoutMs);
    } catch {
      v = reject(451, '4.3.0', 'Internal policy error, try again later');
    }
    if (v.action !== 'continue') return v;
  }
  return CONTINUE;
}

/** Formats a reply's text the way the wire carries it after the code. */
export function replyText(r: Reply): string {
  return `${r.enhanced} ${r.text}`;
}
