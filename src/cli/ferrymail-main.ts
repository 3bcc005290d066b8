/**
 * The admin command `ferrymail`. The daemon's own plain command line starts the relay directly, so the
 * resident process loads no command-line parser; every other command line goes to the commander tree
 * in ferrymail-program.ts, loaded only then.
 *
 * Errors print one line and exit with the sysexits code of their FerryError; usage errors exit 64.
 */
import { daemonArgs, runDaemon } from './daemon-cmd.js';
import { fail } from './fail.js';

/** Runs the admin command; resolves with the exit code. */
export async function ferrymailMain(argv: string[]): Promise<number> {
  const daemon = daemonArgs(argv);
  if (!daemon) return (await import('./ferrymail-program.js')).runProgram(argv);
  try {
    return await runDaemon(daemon);
  } catch (err) {
    return fail('ferrymail', err);
  }
}
