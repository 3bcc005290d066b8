/**
 * Connection slots and idle sessions of one transport: at most `max` sessions exist at once (open,
 * opening or idle); a delivery takes an idle session for its server when there is one, else a slot to
 * open a new one, else waits. A session given back still usable waits idle for a few seconds (not
 * keeping the process alive), then closes; one the server ends while idle is forgotten.
 *
 * When a server refuses one more session while others to it are in use (it limits connections per
 * client), the caller gives its slot up for good with shrink() and waits for a session in use instead:
 * the pool learns the server's limit, as Postfix's concurrency feedback does.
 *
 * Trusts its callers to give back every slot they take. Cannot fail; close() ends the idle sessions
 * (and resolves when they are gone) and makes every session given back afterwards close at once.
 */

/** What the pool needs of a session. */
export interface Pooled {
  readonly key: string;
  usable(): boolean;
  park(onGone: () => void): void;
  unpark(): void;
  close(): Promise<void>;
}

/** See the module header. */
export class Pool<S extends Pooled> {
  private idle: { session: S; timer: NodeJS.Timeout }[] = [];
  /** Slots held by deliveries and idle sessions. */
  private held = 0;
  private waiting: (() => void)[] = [];
  private closed = false;
  /** Sessions handed out and not yet given back (taken idle, or reported with inUse()). */
  private busy = new Set<S>();
  /** Sessions being opened, by server key (reported with opening()). */
  private pending = new Map<string, number>();

  constructor(
    private max: number,
    private readonly idleMs: number,
  ) {}

  /** An idle session to one of keys, or undefined with a slot to open a new one. */
  async take(keys: string[]): Promise<S | undefined> {
    for (;;) {
      const i = this.idle.findIndex((x) => keys.includes(x.session.key));
      if (i >= 0) {
        const s = this.unidle(i);
        this.busy.add(s);
        return s;
      }
      if (this.held < this.max) {
        this.held++;
        return undefined;
      }
      // all slots busy or idle elsewhere: an idle session to another server gives up its slot
      if (this.idle.length) {
        void this.unidle(0).close();
        return undefined;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  /** The caller starts (+1) or stops (-1) opening a session to one of keys in its slot. */
  opening(keys: string[], delta: 1 | -1): void {
    for (const k of keys) this.pending.set(k, (this.pending.get(k) ?? 0) + delta);
  }

  /** The caller closed the session it held; its slot stays with the caller. */
  discard(session: S): void {
    this.busy.delete(session);
    void session.close();
  }

  /** A session the caller opened in its slot is now in use. */
  inUse(session: S): void {
    this.busy.add(session);
  }

  /** Gives a slot back, with the session it now holds (kept idle when still usable). */
  give(session: S | undefined): void {
    if (session) this.busy.delete(session);
    if (session?.usable() && !this.closed) {
      const timer = setTimeout(() => this.drop(session), this.idleMs);
      timer.unref();
      this.idle.push({ session, timer });
      session.park(() => this.drop(session));
    } else {
      void session?.close();
      this.held--;
    }
    this.waiting.shift()?.();
  }

  /**
   * The caller's new session to one of keys was turned away: when another session to these servers is
   * in use, being opened or waiting idle, one slot fewer from now on and the caller's slot is given up (it then takes
   * again, getting or waiting for one of them); false when there is none to wait for (sessions to other
   * servers do not count: with MX delivery one pool serves many).
   */
  shrink(keys: string[]): boolean {
    const here = (s: S): boolean => keys.includes(s.key);
    const others =
      this.idle.some((x) => here(x.session)) ||
      [...this.busy].some(here) ||
      keys.some((k) => (this.pending.get(k) ?? 0) > 0);
    if (!others) return false;
    this.max = Math.max(1, this.max - 1);
    this.held--;
    return true;
  }

  /** Closes every idle session (resolves when they are gone); sessions in use close when given back. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.idle].map((x) => this.drop(x.session)));
  }

  /** Takes an idle session out of the idle list (its slot goes with it). */
  private unidle(i: number): S {
    const [x] = this.idle.splice(i, 1);
    clearTimeout(x!.timer);
    x!.session.unpark();
    return x!.session;
  }

  /** Ends an idle session and frees its slot. */
  private drop(session: S): Promise<void> {
    const i = this.idle.findIndex((x) => x.session === session);
    if (i < 0) return Promise.resolve();
    const gone = this.unidle(i).close();
    this.held--;
    this.waiting.shift()?.();
    return gone;
  }
}
