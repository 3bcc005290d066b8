/**
 * The sysexits(3) table and its mapping to and from ferrymail's outcome vocabulary.
 *
 * Pure data; trusts nothing and cannot fail. One table serves the sendmail command's exit codes, the pipe
 * transport's reading of a child's exit code and the error-to-exit mapping of every bin/ entry point.
 */
import type { FerryErrorCode } from '../errors.js';

/** sysexits.h values. */
export const EX = {
  OK: 0,
  USAGE: 64,
  DATAERR: 65,
  NOINPUT: 66,
  NOUSER: 67,
  NOHOST: 68,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  OSERR: 71,
  OSFILE: 72,
  CANTCREAT: 73,
  IOERR: 74,
  TEMPFAIL: 75,
  PROTOCOL: 76,
  NOPERM: 77,
  CONFIG: 78,
} as const;

export type ExitCode = (typeof EX)[keyof typeof EX];

/** Maps an error code to the exit status a command returns for it. */
export function exitCodeFor(code: FerryErrorCode): ExitCode {
  switch (code) {
    case 'usage':
      return EX.USAGE;
    case 'config':
      return EX.CONFIG;
    case 'data':
    case 'no-recipients':
      return EX.DATAERR;
    case 'spool-full':
      return EX.TEMPFAIL;
    case 'spool-permission':
      return EX.CANTCREAT;
    case 'spool-io':
      return EX.IOERR;
    case 'not-found':
      return EX.NOINPUT;
    case 'locked':
      return EX.TEMPFAIL;
    case 'control':
      return EX.UNAVAILABLE;
    case 'internal':
      return EX.SOFTWARE;
  }
}
