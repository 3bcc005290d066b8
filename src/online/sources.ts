/**
 * Where "which connection are we on?" comes from: a state file whose first line names the connection,
 * and a command in masqmail's online_query contract (exit 0 and a first line naming the connection means
 * online). online/ knows nothing of mail.
 *
 * The command is an argv array run without a shell, with stdin from /dev/null, a clean environment
 * apart from PATH and HOME, and a timeout that kills it; its output is untrusted and only its first line
 * is read (at most 256 bytes of it). Never throws: every failure is "offline" with the reason.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { OnlineState } from '../domain/online.js';

const NAME = /^[A-Za-z0-9._@+-]{1,64}$/;

/** Turns a first line into a state; a name outside [A-Za-z0-9._@+-] (or longer than 64) is refused. */
function fromLine(line: string, source: string): OnlineState {
  const name = line.trim();
  if (name === '') return { online: false, why: `${source}: no connection named` };
  if (!NAME.test(name)) return { online: false, why: `${source}: connection name ${JSON.stringify(name.slice(0, 64))} is not usable` };
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
export function runQuery(argv: readonly string[], timeoutMs = 5000): Promise<OnlineState> {
  const label = `command ${argv[0] ?? '?'}`;
  return new Promise((resolve) => {
    if (argv.length === 0) return resolve({ online: false, why: 'no command configured' });
    let out = '';
    let settled = false;
    const done = (s: OnlineState): void => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(s);
      }
    };
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/' },
      detached: true,
    });
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      done({ online: false, why: `${label} timed out after ${timeoutMs} ms` });
    }, timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      if (out.length < 256) out += d.slice(0, 256 - out.length);
    });
    child.on('error', (err: NodeJS.ErrnoException) => done({ online: false, why: `${label}: ${err.code ?? err.message}` }));
    child.on('close', (code) => {
      if (code !== 0) return done({ online: false, why: `${label} exited ${code ?? 'on a signal'}` });
      done(fromLine(out.split('\n')[0] ?? '', label));
    });
  });
}
