/**
 * The types a hook module is written against, exported by the package as `ferrymail/hooks`:
 *
 *   import type { HookFactory } from 'ferrymail/hooks';
 *   const factory: HookFactory = (options, api) => ({
 *     rcpt: (session, input) =>
 *       input.arg.endsWith('@spam.example')
 *         ? { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'Not here' } }
 *         : { action: 'continue' },
 *   });
 *   export default factory;
 *
 * Types only; docs/hooks.md describes every stage, its facts and the verdicts.
 */
import type { SessionFacts, Stage, StageInput, Verdict } from './stages.js';

export type { Hook, SessionFacts, Stage, StageInput, Verdict } from './stages.js';
export type { Reply } from '../domain/outcome.js';

/** What the daemon gives a hook module besides its options. */
export interface HookApi {
  /** Writes a line to the daemon's log (as a warning, with the hook's text). */
  log(text: string): void;
  /** The host name the daemon answers with. */
  hostname: string;
  /** The DNS servers of the configuration (dns.servers; empty: the system's). */
  dnsServers?: string[];
}

/** A message just committed to the queue (the queued stage). */
export interface QueuedEvent {
  kind: 'queued';
  id: string;
  sender: string;
  recipients: string[];
  size: number;
  /** The door it came by: smtp, lmtp, sendmail, sendmail-bs. */
  door: string;
  notes: Record<string, string>;
}

/** A delivery about to be tried by a route, or one recipient's outcome (the delivery stages). */
export interface DeliveryEvent {
  kind: 'delivering' | 'delivered' | 'deferred' | 'bounced';
  id: string;
  sender: string;
  recipients: string[];
  route?: string;
  relay?: string;
  reply?: string;
  attempts?: number;
}

/** The stages after the commit: observers only (what they return is not used, and nothing waits). */
export interface ObserverHandlers {
  queued?(e: QueuedEvent): unknown;
  delivering?(e: DeliveryEvent): unknown;
  delivered?(e: DeliveryEvent): unknown;
  deferred?(e: DeliveryEvent): unknown;
  bounced?(e: DeliveryEvent): unknown;
}

/** The observer stages. */
export type ObserverStage = keyof ObserverHandlers;

/** A module's handlers: one function per stage it serves. */
export type HookHandlers = Partial<
  Record<Stage, (session: SessionFacts, input: StageInput) => Verdict | Promise<Verdict>>
> &
  ObserverHandlers;

/** A hook module's default export. */
export type HookFactory = (options: Record<string, unknown>, api: HookApi) => HookHandlers | Promise<HookHandlers>;
