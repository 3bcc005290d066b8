/**
 * The outcome of one local delivery, and how file system errors become one: a full disk or quota is
 * temporary (452 4.2.2, the mailbox may have room later), everything else a temporary system error
 * (451 4.3.0), since the owner or the administrator can fix it and nothing is gained by bouncing.
 *
 * Plain data; never throws.
 */
import type { Outcome } from '../../domain/outcome.js';

/** One delivery's outcome and its one-line reply with an enhanced status code. */
export interface LocalResult {
  outcome: Outcome;
  reply: string;
}

/** A file system error as a result. */
export function fsFailure(err: unknown, what: string): LocalResult {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT')
    return { outcome: 'tempfail', reply: `452 4.2.2 ${what}: mailbox full (${code})` };
  if (code === 'ELOOP')
    return { outcome: 'tempfail', reply: `451 4.3.0 ${what}: it is a symbolic link, which is never followed (ELOOP)` };
  return { outcome: 'tempfail', reply: `451 4.3.0 ${what} (${code ?? String(err)})` };
}
