/**
 * Standard input read with blocking calls, for the sendmail command's one message. process.stdin would
 * load node:net for a pipe (or the file streams for a file) and node:stream, some 4 ms of the command's
 * start, to serve an event loop that has nothing else to do meanwhile.
 *
 * Trusts nothing it reads (the intake's steps police it). Each chunk is a buffer of its own. A descriptor
 * left non-blocking by another process sharing it (EAGAIN) is waited on in short sleeps, and a read cut
 * by a signal is made again; any other error of read(2) is thrown.
 */
import fs from 'node:fs';
import type { BlockingSource } from '../receive/intake.js';

/** Bytes asked of one read: what a pipe holds. */
const CHUNK = 64 * 1024;

/** How long to sleep before reading a non-blocking descriptor again, in milliseconds. */
const RETRY_MS = 5;

/** A blocking source over a file descriptor (standard input unless told). */
export function blockingInput(fd = 0): BlockingSource {
  let ended = false;
  let nap: Int32Array | undefined;
  return {
    readSync(): Buffer | null {
      if (ended) return null;
      const buf = Buffer.allocUnsafe(CHUNK);
      for (;;) {
        let n: number;
        try {
          n = fs.readSync(fd, buf, 0, CHUNK, null);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EINTR') continue;
          if (code !== 'EAGAIN') throw err;
          nap ??= new Int32Array(new SharedArrayBuffer(4));
          Atomics.wait(nap, 0, 0, RETRY_MS);
          continue;
        }
        if (n === 0) {
          ended = true;
          return null;
        }
        return buf.subarray(0, n);
      }
    },
  };
}
