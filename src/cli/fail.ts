/**
 * The one line a command prints for an error, and its exit code: a FerryError's own message and sysexits
 * code, anything else an internal error (70). Kept apart from the commands so that the sendmail command
 * loads no more than it needs. Cannot fail.
 */
import { EX } from '../domain/sysexits.js';
import { exitCodeFor, isFerryError } from '../errors.js';

/** Prints one line for an error and maps it to an exit code. */
export function fail(who: string, err: unknown): number {
  if (isFerryError(err)) {
    process.stderr.write(`${who}: ${err.message}\n`);
    return exitCodeFor(err.code);
  }
  process.stderr.write(`${who}: internal error: ${(err as Error)?.message ?? String(err)}\n`);
  return EX.SOFTWARE;
}
