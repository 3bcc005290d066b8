/**
 * The one error class of ferrymail.
 *
 * Every failure that reaches a user carries a code from a closed union, a one-line readable message and
 * optionally the underlying cause. Entry points map the code to a sysexits value (bin/; qmail-inject's 100
 * and 111 for that name) or to an SMTP reply (receive/). Messages never contain secrets: callers pass
 * names and paths, never credentials.
 */
import type { Reply } from './domain/outcome.js';
import { EX, type ExitCode } from './domain/sysexits.js';

/** The closed set of error codes; docs/errors.md explains each and what to do about it. */
export type FerryErrorCode =
  | 'usage' // bad command line
  | 'config' // configuration file invalid or unreadable
  | 'data' // message content refused (bad headers, bare line ends, too big)
  | 'no-recipients' // nothing to deliver to
  | 'spool-full' // the spool's file system has no room
  | 'spool-io' // the spool could not be written or read
  | 'spool-permission' // the spool is not writable by this user
  | 'not-found' // a queue id that does not exist
  | 'locked' // another process works on this entry
  | 'control' // the daemon's control socket misbehaved
  | 'not-allowed' // the user may not do this (an envelope sender that is not theirs)
  | 'internal';

/** An error with a code, shown to users as one line. */
export class FerryError extends Error {
  readonly code: FerryErrorCode;
  /** The SMTP reply to give when this error ends an SMTP command (receive/ picks a default otherwise). */
  readonly reply?: Reply;
  constructor(code: FerryErrorCode, message: string, options?: { cause?: unknown; reply?: Reply }) {
    super(message, options);
    this.name = 'FerryError';
    this.code = code;
    if (options?.reply) this.reply = options.reply;
  }
}

/** A message refused for its content, with the SMTP reply that says why. */
export function dataError(code: number, enhanced: string, text: string): FerryError {
  return new FerryError('data', text, { reply: { code, enhanced, text } });
}

/**
 * The reply of an error that refuses a message for what it holds (a FerryError with a 5xx reply, such as a
 * message stream that meets a NUL byte): no retry can change it. Undefined for any other error. Looks at
 * the class and the reply only, since a library may rewrite `code` (nodemailer's ESTREAM).
 */
export function contentRefusal(err: unknown): Reply | undefined {
  return err instanceof FerryError && err.reply && err.reply.code >= 500 ? err.reply : undefined;
}

/** Wraps a file system error from the spool into a FerryError with the right code. */
export function spoolError(err: unknown, what: string): FerryError {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FerryError('spool-full', `spool is full: cannot ${what}`, { cause: err });
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new FerryError(
      'spool-permission',
      `no access to the spool: cannot ${what} (${code}); it belongs to another user?`,
      { cause: err },
    );
  }
  return new FerryError('spool-io', `spool error: cannot ${what} (${code ?? String(err)})`, { cause: err });
}

/** True when err is a FerryError with one of the given codes. */
export function isFerryError(err: unknown, ...codes: FerryErrorCode[]): err is FerryError {
  return err instanceof FerryError && (codes.length === 0 || codes.includes(err.code));
}

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
    case 'not-allowed':
      return EX.NOPERM;
    case 'internal':
      return EX.SOFTWARE;
  }
}

/**
 * Maps an error code to qmail-inject's exit status: 100 for a permanent error (the command line, the
 * message or its addresses are wrong and trying again cannot help), 111 for a temporary one (the spool,
 * the configuration or the system may let a later try succeed).
 */
export function qmailExitCodeFor(code: FerryErrorCode): 100 | 111 {
  switch (code) {
    case 'usage':
    case 'data':
    case 'no-recipients':
    case 'not-allowed':
    case 'not-found':
      return 100;
    case 'config':
    case 'spool-full':
    case 'spool-io':
    case 'spool-permission':
    case 'locked':
    case 'control':
    case 'internal':
      return 111;
  }
}
