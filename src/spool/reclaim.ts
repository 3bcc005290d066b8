/**
 * Memory reclaim for large messages moving through the process: a message arrives or leaves as many
 * socket and file buffers that V8 frees only after tens of megabytes have piled up. A daemon may install
 * a collector; it runs after every RECLAIM_EVERY bytes noted by the intake (receive/) and by the
 * outgoing message stream (queue/).
 *
 * Trusts its callers' byte counts. A collector that throws is dropped, never passed on.
 */

const RECLAIM_EVERY = 4 * 1024 * 1024;
let reclaim: (() => void) | null = null;
let since = 0;

/** Installs the collector (null: none). */
export function setReclaim(fn: (() => void) | null): void {
  reclaim = fn;
}

/** Notes bytes taken in or sent out; runs the collector once enough have passed. */
export function noteBytes(n: number): void {
  since += n;
  if (!reclaim || since < RECLAIM_EVERY) return;
  since = 0;
  try {
    reclaim();
  } catch {
    reclaim = null;
  }
}
