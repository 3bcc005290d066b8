/**
 * Standard input read with blocking calls, for the sendmail command's one message. process.stdin would
 * load node:net for a pipe (or the file streams for a file) and node:stream, some 4 ms of the command's
 * start, to serve an event loop that has nothing else to do meanwhile.
 *
 * Trusts nothing it reads (the intake's steps police it). Each chunk is a copy of its own, sized to what
 * was read: a step may hold chunks (a long line, a header section), and a slice of a read buffer would
 * keep all of it alive. A descriptor left non-blocking by another process sharing it (EAGAIN) is waited
 * on in short sleeps, and a read cut by a signal is made again; any other error of read(2) is thrown as
 * a FerryError (spool-io: exit 74).
 */
import fs from 'node:fs';
import { FerryError } from '../errors.js';
import type { BlockingSource } from '../receive/intake.js';

/** Bytes asked of one read: what a pipe holds. */
const CHUNK = 64 * 1024;

/** How long to sleep before reading a non-blocking descriptor again, in milliseconds. */
const RETRY_MS = 5;

/** A blocking source over a file descriptor (standard input unless told). */
export function blockingInput(fd = 0): BlockingSource {
  let ended = false;
  let nap: Int32Array | undefined;
  let buf: Buffer | undefined;
  return {
    readSync(): Buffer | null {
      if (ended) return null;
      buf ??= Buffer.allocUnsafe(CHUNK);
      for (;;) {
        let n: number;
        try {
          n = fs.readSync(fd, buf, 0, CHUNK, null);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EINTR') continue;
          if (code !== 'EAGAIN')
            throw new FerryError('spool-io', `cannot read the message from standard input: ${code ?? err}`, {
              cause: err,
            });
          nap ??= new Int32Array(new SharedArrayBuffer(4));
          Atomics.wait(nap, 0, 0, RETRY_MS);
          continue;
        }
        if (n === 0) {
          ended = true;
          return null;
        }
        return Buffer.from(buf.subarray(0, n));
      }
    },
  };
}
