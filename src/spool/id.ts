/**
 * Queue ids: 16 characters of Crockford base32, time first, so that ids sort by arrival.
 *
 * 10 characters of milliseconds since the epoch, then 6 of randomness that increase within one
 * millisecond in one process (as ULIDs do). Unique across processes and restarts without coordination;
 * the spool's writer creates a message's files exclusively and draws again on the astronomically unlikely
 * clash. Random bytes are drawn from the system a kilobyte at a time. Cannot fail.
 */
import { randomUInt } from '../random.js';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const RANDOM_SPACE = 32 ** 6;

let lastTime = -1;
let lastRandom = 0;

/** Encodes a non-negative integer as base32 of a fixed width. */
function encode(value: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    out = ALPHABET[value % 32] + out;
    value = Math.floor(value / 32);
  }
  return out;
}

/** A fresh random value below RANDOM_SPACE, leaving room to count up. */
function freshRandom(): number {
  return randomUInt(4) % (RANDOM_SPACE / 2);
}

/** Returns a new queue id. */
export function newId(now: number = Date.now()): string {
  if (now <= lastTime) {
    now = lastTime;
    lastRandom += 1 + randomUInt(1);
    if (lastRandom >= RANDOM_SPACE) {
      now = lastTime + 1;
      lastRandom = freshRandom();
    }
  } else {
    lastRandom = freshRandom();
  }
  lastTime = now;
  return encode(now, 10) + encode(lastRandom, 6);
}

/** True when s has the shape of a queue id (guards paths built from user input). */
export function isId(s: string): boolean {
  return /^[0-9A-HJKMNP-TV-Z]{16}$/.test(s);
}

/** The arrival time encoded in an id. */
export function idTime(id: string): number {
  let t = 0;
  for (const ch of id.slice(0, 10)) t = t * 32 + ALPHABET.indexOf(ch);
  return t;
}
