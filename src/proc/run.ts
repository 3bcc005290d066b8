/**
 * Runs a command that the configuration names (an argv list, never a shell), the one way every stage
 * needs it: in its own process group, with the environment given (callers pass a clean one), standard
 * input from a string or nothing, standard output and error kept up to a cap, and a timeout that kills
 * the whole group and answers at once, whatever the command does with signals.
 *
 * Trusts nothing the command prints beyond keeping it (capped). Never throws and never rejects: every
 * way the command can end is in the result.
 */
import { spawn } from 'node:child_process';

/** How to run it. */
export interface RunOptions {
  env: NodeJS.ProcessEnv;
  timeoutMs: number;
  /** The working directory (default: this process's). */
  cwd?: string;
  /** Written to the command's standard input, which then ends; without it, the input is /dev/null. */
  stdin?: string | Buffer;
  /** Characters of output kept from each stream (default 64 KiB). */
  maxOut?: number;
  /** How the output is decoded (default utf8). */
  encoding?: BufferEncoding;
  /** Which output the caller reads (default both); the other goes to /dev/null, so that a background
   * child left holding it cannot keep the command from ending. */
  capture?: { stdout?: boolean; stderr?: boolean };
}

/** How it ended. */
export interface RunResult {
  /** The exit code, or null when a signal ended it or it never started. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Why it could not be started (ENOENT, EACCES, ...). */
  error?: string;
}

/** Runs argv; see the module header. */
export function runCommand(argv: readonly string[], o: RunOptions): Promise<RunResult> {
  const max = o.maxOut ?? 65_536;
  return new Promise((resolve) => {
    const r: RunResult = { code: null, signal: null, stdout: '', stderr: '', timedOut: false };
    if (!argv.length) return resolve({ ...r, error: 'no command' });
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const want = { stdout: o.capture?.stdout ?? true, stderr: o.capture?.stderr ?? true };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(argv[0]!, argv.slice(1), {
        stdio: [
          o.stdin === undefined ? 'ignore' : 'pipe',
          want.stdout ? 'pipe' : 'ignore',
          want.stderr ? 'pipe' : 'ignore',
        ],
        env: o.env,
        cwd: o.cwd,
        detached: true,
      });
    } catch (e) {
      return resolve({ ...r, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message });
    }
    // first of all: a spawn that fails (no such program, no descriptors left) reports here, never uncaught
    child.once('error', (e: NodeJS.ErrnoException) => {
      r.error = e.code ?? e.message;
      done();
    });
    timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone, or never started */
      }
      r.timedOut = true;
      done();
    }, o.timeoutMs);
    for (const [stream, key] of [
      [child.stdout, 'stdout'],
      [child.stderr, 'stderr'],
    ] as const) {
      if (!stream) continue;
      stream.setEncoding(o.encoding ?? 'utf8');
      stream.on('data', (d: string) => {
        if (r[key].length < max) r[key] += d.slice(0, max - r[key].length);
      });
    }
    if (o.stdin !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined); // a command that does not read its input is not an error
      child.stdin.end(o.stdin);
    }
    child.once('close', (code, signal) => {
      r.code = code;
      r.signal = signal;
      done();
    });
  });
}
