/**
 * Delivery to a command: an alias's or .forward's |command, or the host's delivery agent (local.mda:
 * procmail, maildrop). The command runs as the user this process already is (the agent dropped root),
 * by argv and never through a shell, in the user's home directory, with the environment Postfix's
 * local(8) gives (HOME, USER, LOGNAME, SHELL, PATH, SENDER, RECIPIENT, ORIGINAL_RECIPIENT, LOCAL,
 * DOMAIN, EXTENSION) and the message, with its From_ line, on standard input. Its exit code is read
 * through the sysexits table (75: try again); a signal or a timeout is temporary too.
 *
 * Trusts the argv it is given (the administrator's, or the user's own .forward). Never throws.
 */
import fs from 'node:fs';
import { runCommand } from '../../proc/run.js';
import { outcomeOfExit } from '../pipe.js';
import type { LocalResult } from './results.js';

/** Who the delivery is for. */
export interface CommandContext {
  sender: string;
  recipient: string;
  orig?: string;
  extension?: string;
  user: string;
  home: string;
  shell: string;
}

/** The ${...} names a local.mda argv may use. */
export const MDA_VARIABLES = ['user', 'extension', 'recipient', 'sender', 'home', 'local_part', 'domain'] as const;

/** Fills the variables into an argv template. */
export function fillArgv(argv: readonly string[], c: CommandContext): string[] {
  const at = c.recipient.lastIndexOf('@');
  const vars: Record<string, string> = {
    user: c.user,
    extension: c.extension ?? '',
    recipient: c.recipient,
    sender: c.sender,
    home: c.home,
    local_part: at > 0 ? c.recipient.slice(0, at) : c.recipient,
    domain: at > 0 ? c.recipient.slice(at + 1) : '',
  };
  return argv.map((w) => w.replace(/\$\{([a-z_]+)\}/g, (m, k: string) => vars[k] ?? m));
}

/** Runs the command with the message on its input. */
export async function deliverCommand(
  argv: string[],
  data: Buffer,
  c: CommandContext,
  timeoutMs: number,
): Promise<LocalResult> {
  const at = c.recipient.lastIndexOf('@');
  const env: NodeJS.ProcessEnv = {
    HOME: c.home,
    USER: c.user,
    LOGNAME: c.user,
    SHELL: c.shell || '/bin/sh',
    PATH: '/usr/local/bin:/usr/bin:/bin',
    SENDER: c.sender,
    RECIPIENT: c.recipient,
    ORIGINAL_RECIPIENT: c.orig ?? c.recipient,
    LOCAL: at > 0 ? c.recipient.slice(0, at) : c.recipient,
    DOMAIN: at > 0 ? c.recipient.slice(at + 1) : '',
    EXTENSION: c.extension ?? '',
  };
  const r = await runCommand(argv, {
    env,
    cwd: c.home && fs.statSync(c.home, { throwIfNoEntry: false })?.isDirectory() ? c.home : '/',
    timeoutMs,
    stdin: data,
    maxOut: 2000,
    capture: { stdout: false },
  });
  const name = argv[0];
  if (r.error) return { outcome: 'tempfail', reply: `451 4.3.0 ${name} cannot be run (${r.error})` };
  if (r.timedOut)
    return { outcome: 'tempfail', reply: `451 4.3.0 ${name} did not finish in ${Math.round(timeoutMs / 1000)} s` };
  if (r.signal) return { outcome: 'tempfail', reply: `451 4.3.0 ${name} was killed by ${r.signal}` };
  const { outcome, status } = outcomeOfExit(r.code);
  const said = r.stderr
    .split('\n')
    .find((l) => l.trim())
    ?.trim()
    .slice(0, 200);
  if (outcome === 'ok') return { outcome, reply: `250 2.0.0 delivered to command ${name}` };
  return { outcome, reply: `${status} ${name} exited ${r.code}${said ? `: ${said}` : ''}` };
}
