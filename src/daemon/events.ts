/**
 * The daemon's feed of what happens, for `ferrymail watch`: the online state as it changes (and why), each
 * message queued, each delivery attempt and each recipient's outcome (delivered, deferred with the reply,
 * bounced, uncertain). Subscribers get the events as they happen; none is kept for later.
 *
 * A subscriber that cannot keep up (its socket's buffer past a limit) is dropped, so that a stuck status
 * bar never grows the daemon's memory. Publishing never throws and never waits.
 */
import type { QueueEvent } from '../queue/observe.js';

/** One event as watch prints it. */
export type FeedEvent =
  | { at: string; kind: 'online'; online: boolean; connection?: string; why?: string }
  | { at: string; kind: 'queued'; id: string; sender: string; recipients: string[]; size: number; door: string }
  | ({ at: string } & QueueEvent);

/** A subscriber: takes one event; false when it is gone. */
export type Subscriber = (e: FeedEvent) => boolean;

/** The feed. */
export class EventFeed {
  private readonly subs = new Set<Subscriber>();

  /** Adds a subscriber; returns the function that removes it. */
  subscribe(s: Subscriber): () => void {
    this.subs.add(s);
    return () => this.subs.delete(s);
  }

  get size(): number {
    return this.subs.size;
  }

  /** Gives an event (its time added) to every subscriber; drops those that are gone. */
  publish(e: DistributiveOmit<FeedEvent, 'at'>): void {
    if (!this.subs.size) return;
    const full = { at: new Date().toISOString(), ...e } as FeedEvent;
    for (const s of this.subs) {
      let ok = false;
      try {
        ok = s(full);
      } catch {
        ok = false;
      }
      if (!ok) this.subs.delete(s);
    }
  }
}

/** Omit over each member of a union. */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
