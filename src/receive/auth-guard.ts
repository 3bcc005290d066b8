/**
 * Failed SMTP AUTH attempts, counted per client and per user name across sessions: how long to wait
 * before answering a failure, and when to refuse further attempts without checking a password.
 *
 * Addresses come from the socket; user names come from the client and are only used as map keys (cut
 * to 256 characters). A client is counted by clientNetwork() (an IPv6 client by its /64). Each failure
 * counts for auth.failure_window. Once auth.max_failures failures of one client or one name lie within
 * the window, that client or name is locked for one window from the failure that reached the limit;
 * attempts refused while locked are not counted. Attempts whose password is still being checked count
 * as failures-to-be, so that parallel sessions cannot get more checks than the limit. A success resets
 * the client's count, not the name's. Memory is bounded: at most maxEntries clients and maxEntries
 * names, idle entries first and then the least recently changed are dropped. Pure apart from the
 * injected clock; never throws.
 */
import { clientNetwork } from '../domain/ip.js';

/** The delay before the first failure is answered; it doubles with each recent failure. */
export const FIRST_DELAY_MS = 500;
/** The longest delay before a failure is answered. */
export const MAX_DELAY_MS = 4000;
/** Longest user name kept as a key; longer names are counted by their first this many characters. */
const NAME_KEY_LENGTH = 256;

/** What the guard is built with. */
export interface GuardOptions {
  /** auth.max_failures */
  maxFailures: number;
  /** auth.failure_window in milliseconds. */
  windowMs: number;
  /** Clients, and names, remembered at most (each). */
  maxEntries?: number;
  now?: () => number;
}

/** What a lock is on. */
export type LockKind = 'address' | 'user';

/** begin()'s answer: go ahead with the password check, or refuse (the lock and until when it holds). */
export type Admission = { ok: true } | { ok: false; by: LockKind; until: number };

/** settle()'s answer for a failure: how long to wait before answering, and the locks that start now. */
export interface Failure {
  delayMs: number;
  locks: { by: LockKind; until: number }[];
}

/** One client's or one name's recent history. */
interface Entry {
  /** Times of the most recent failures (at most maxFailures), oldest first. */
  failures: number[];
  lockedUntil: number;
  /** Password checks under way. */
  pending: number;
}

/** Counts failed AUTH attempts; see the module header. */
export class AuthGuard {
  private readonly clients = new Map<string, Entry>();
  private readonly names = new Map<string, Entry>();
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(private readonly opts: GuardOptions) {
    this.maxEntries = opts.maxEntries ?? 4096;
    this.now = opts.now ?? Date.now;
  }

  /** Before a password check: refuses a locked client or name; otherwise counts the check as under way. */
  begin(peer: string, user: string): Admission {
    const now = this.now();
    const pairs: [LockKind, Entry][] = [
      ['address', this.entry(this.clients, clientNetwork(peer))],
      ['user', this.entry(this.names, nameKey(user))],
    ];
    for (const [by, e] of pairs) {
      this.prune(e, now);
      if (e.lockedUntil > now) return { ok: false, by, until: e.lockedUntil };
    }
    for (const [by, e] of pairs) {
      // checks under way count, so that parallel sessions get no more than maxFailures in all
      if (e.failures.length + e.pending >= this.opts.maxFailures) return { ok: false, by, until: now };
    }
    for (const [, e] of pairs) e.pending++;
    return { ok: true };
  }

  /** After a password check that begin() let through: records its outcome; for a failure, what follows. */
  settle(peer: string, user: string, ok: boolean): Failure | null {
    const now = this.now();
    const client = this.entry(this.clients, clientNetwork(peer));
    const name = this.entry(this.names, nameKey(user));
    const pairs: [LockKind, Entry][] = [
      ['address', client],
      ['user', name],
    ];
    for (const [, e] of pairs) e.pending = Math.max(0, e.pending - 1);
    if (ok) {
      client.failures = [];
      client.lockedUntil = 0;
      this.forgetIdle(clientNetwork(peer), nameKey(user), now);
      return null;
    }
    const locks: Failure['locks'] = [];
    for (const [by, e] of pairs) {
      this.prune(e, now);
      e.failures.push(now);
      if (e.failures.length > this.opts.maxFailures) e.failures.shift();
      if (e.failures.length >= this.opts.maxFailures && e.lockedUntil <= now) {
        e.lockedUntil = now + this.opts.windowMs;
        locks.push({ by, until: e.lockedUntil });
      }
    }
    this.touch(this.clients, clientNetwork(peer), client);
    this.touch(this.names, nameKey(user), name);
    return { delayMs: failureDelay(Math.max(client.failures.length, name.failures.length)), locks };
  }

  /** After a check that could not be made (the check command failed): counts it neither way. */
  cancel(peer: string, user: string): void {
    for (const e of [this.entry(this.clients, clientNetwork(peer)), this.entry(this.names, nameKey(user))])
      e.pending = Math.max(0, e.pending - 1);
  }

  /** How many clients and names are remembered (for tests). */
  get size(): { clients: number; names: number } {
    return { clients: this.clients.size, names: this.names.size };
  }

  /** The entry of a key, made (and room made for it) when missing. */
  private entry(map: Map<string, Entry>, key: string): Entry {
    let e = map.get(key);
    if (!e) {
      if (map.size >= this.maxEntries) this.makeRoom(map);
      e = { failures: [], lockedUntil: 0, pending: 0 };
      map.set(key, e);
    }
    return e;
  }

  /** Moves an entry to the end of its map's order (the most recently changed). */
  private touch(map: Map<string, Entry>, key: string, e: Entry): void {
    map.delete(key);
    map.set(key, e);
  }

  /** Drops failures older than the window. */
  private prune(e: Entry, now: number): void {
    while (e.failures.length && e.failures[0]! <= now - this.opts.windowMs) e.failures.shift();
  }

  /** True when an entry holds nothing that still matters. */
  private idle(e: Entry, now: number): boolean {
    this.prune(e, now);
    return !e.failures.length && e.lockedUntil <= now && e.pending === 0;
  }

  /** Removes the entries of a client and a name that hold nothing any more. */
  private forgetIdle(client: string, name: string, now: number): void {
    const c = this.clients.get(client);
    if (c && this.idle(c, now)) this.clients.delete(client);
    const n = this.names.get(name);
    if (n && this.idle(n, now)) this.names.delete(name);
  }

  /** A full map: drops idle entries, or else the least recently changed one. */
  private makeRoom(map: Map<string, Entry>): void {
    const now = this.now();
    for (const [k, e] of map) if (this.idle(e, now)) map.delete(k);
    if (map.size >= this.maxEntries) map.delete(map.keys().next().value!);
  }
}

/** The wait before answering a failure, given the recent failures of its client or name (this one included). */
export function failureDelay(recent: number): number {
  return Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.max(0, recent - 1));
}

/** The key a user name is counted under. */
function nameKey(user: string): string {
  return user.length > NAME_KEY_LENGTH ? user.slice(0, NAME_KEY_LENGTH) : user;
}
