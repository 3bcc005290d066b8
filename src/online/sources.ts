/**
 * Where "which connection are we on?" comes from: a state file whose first line names the connection,
 * and a command in masqmail's online_query contract (exit 0 and a first line naming the connection means
 * online). online/ knows nothing of mail.
 *
 * The command is an argv array run without a shell, with stdin from /dev/null, a clean environment
 * apart from PATH and HOME, and a timeout that kills it; its output is untrusted and only its first line
 * is read (at most 256 bytes of it). Never throws: every failure is "offline" with the reason.
 */
import fs from 'node:fs';
import type { OnlineState } from '../domain/online.js';
import { runCommand } from '../proc/run.js';

const NAME = /^[A-Za-z0-9._@+-]{1,64}$/;

/** Turns a first line into a state; a name outside [A-Za-z0-9._@+-] (or longer than 64) is refused. */
function fromLine(line: string, source: string): OnlineState {
  const name = line.trim();
  if (name === '') return { online: false, why: `${source}: no connection named` };
  if (!NAME.test(name))
    return { online: false, why: `${source}: connection name ${JSON.stringify(name.slice(0, 64))} is not usable` };
  return { online: true, connection: name, why: source };
}

/** Reads the state file: missing or empty means offline. */
export function readStateFile(file: string): OnlineState {
  return stateFileAnswer(file) ?? { online: false, why: `state file ${file} missing` };
}

/** The state file's answer, or null when there is no such file (no answer: the next source decides). */
export function stateFileAnswer(file: string): OnlineState | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8').slice(0, 4096);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? null : { online: false, why: `state file ${file}: ${code}` };
  }
  return fromLine(text.split('\n')[0] ?? '', `state file ${file}`);
}

/** Runs the query command; online when it exits 0 with a connection name on its first line. */
export async function runQuery(argv: readonly string[], timeoutMs = 5000): Promise<OnlineState> {
  const label = `command ${argv[0] ?? '?'}`;
  if (argv.length === 0) return { online: false, why: 'no command configured' };
  const r = await runCommand(argv, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/' },
    timeoutMs,
    maxOut: 256,
    capture: { stderr: false },
  });
  if (r.timedOut) return { online: false, why: `${label} timed out after ${timeoutMs} ms` };
  if (r.error) return { online: false, why: `${label}: ${r.error}` };
  if (r.code !== 0) return { online: false, why: `${label} exited ${r.code ?? 'on a signal'}` };
  return fromLine(r.stdout.split('\n')[0] ?? '', label);
}
