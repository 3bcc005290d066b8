/**
 * What the queue tells observers (the hooks of the delivering, delivered, deferred and bounced stages):
 * one event per recipient outcome, and one before each delivery attempt through a route. Observers only
 * look: nothing they do or return changes a delivery, and the queue never waits for them.
 *
 * Plain types; cannot fail.
 */

/** One thing that happened to a message in the queue. */
export interface QueueEvent {
  kind: 'delivering' | 'delivered' | 'deferred' | 'bounced' | 'uncertain';
  id: string;
  sender: string;
  /** The recipients it concerns (one, for an outcome). */
  recipients: string[];
  route?: string;
  relay?: string;
  /** The reply that decided it ("250 2.0.0 ...", "451 4.4.1 ..."). */
  reply?: string;
  /** Attempts so far, for an outcome. */
  attempts?: number;
}

/** Where events go. */
export type Observe = (e: QueueEvent) => void;
