/**
 * The transport contract: deliver one request, return one outcome per recipient. Transports know nothing
 * of spools or routes; every implementation is held to the same contract tests.
 *
 * Plain types; cannot fail.
 */
import type { Readable } from 'node:stream';
import type { LocalTarget, NotifyKeyword } from '../domain/envelope.js';
import type { Outcome } from '../domain/outcome.js';

/** One delivery attempt of one message to some recipients. */
export interface DeliveryRequest {
  id: string;
  sender: string;
  recipients: {
    address: string;
    notify?: NotifyKeyword[];
    orcpt?: string;
    /** Local recipients: how to deliver them, the recipient the sender gave, and the attempts so far. */
    local?: LocalTarget;
    orig?: string;
    attempts?: number;
  }[];
  /** A fresh stream of the message as it should leave (rewritten headers included), for the recipients
   * this copy goes to (default: all). The stream may hold back its end until the queue has noted the
   * hand-over durably (spool/inflight.ts), and fails instead of ending when it cannot: a transport never
   * finishes a message whose stream failed. A transport that will record() the delivery before it
   * writes anything asks for the message with `recorded` set: no hand-over note is made then. */
  message: (recipients?: string[], opts?: { recorded?: boolean }) => Readable;
  /** Records durably, before a delivery can no longer be taken back, what a later run needs to find out
   * whether it happened (the local transport's mailbox and offset); the message's own hand-over note is
   * then not needed for that recipient. Rejects when it cannot be recorded: nothing may be written then. */
  record?: (address: string, detail: Record<string, unknown>) => Promise<void>;
  size: number;
  smtputf8?: boolean;
  body?: '7BIT' | '8BITMIME';
  envid?: string;
  ret?: 'FULL' | 'HDRS';
}

/** What happened to one recipient. */
export interface RecipientResult {
  address: string;
  outcome: Outcome;
  /** One line: the server's reply or our own, with an enhanced status code ("451 4.4.1 ..."). */
  reply: string;
}

/** Why a route cannot deliver at all now: its server could not be reached before any transaction
 * (refused, unreachable, silent, greeting or TLS failure), or it refused the login. */
export interface RouteDown {
  reason: string;
  /** The server refused the route's credentials: trying again will not help until they change. */
  auth?: boolean;
}

/** What happened to the whole attempt. */
export interface DeliveryResult {
  results: RecipientResult[];
  /** Which server was talked to ("host:port"), for logs. */
  relay: string;
  /** Set when the route's one server cannot be reached (or refused the login): the rest of its mail
   * would fail the same way, so the queue stops trying it for a while. */
  down?: RouteDown;
}

/** Something that can deliver; deliver() may be called again before an earlier call has finished. */
export interface Transport {
  deliver(req: DeliveryRequest): Promise<DeliveryResult>;
  /** Ends what the transport keeps open between deliveries (idle connections); never rejects. */
  close?(): Promise<void>;
  /** Ends everything at once: sessions and commands under way are cut (their recipients tempfail, or
   * uncertain when the whole message had gone out), later deliveries tempfail with `why`. */
  abort?(why: string): void;
}
