/**
 * The sysexits(3) table; errors.ts maps error codes onto it.
 *
 * Pure data; trusts nothing and cannot fail. One table serves the sendmail command's exit codes, the pipe
 * transport's reading of a child's exit code and the error-to-exit mapping of every bin/ entry point.
 */

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
