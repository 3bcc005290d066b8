/**
 * `ferrymail route explain`: what route selection would do with a message on a connection, per recipient:
 * the routes in the order they would be tried, the first one's rewritten envelope sender and From, or
 * the reason the recipient would wait. For a queued message (`route explain ID`): the same for each of its
 * recipients still open, from the message's own sender and From header, with the header fields the route
 * would rewrite, and for the others their state.
 *
 * Pure; input addresses come from the command line and are checked by the caller, a queued message's
 * header section is untrusted text (shown with control characters replaced).
 */
import type { Envelope } from '../domain/envelope.js';
import { fieldValue, parseHeaderBlock } from '../domain/header.js';
import type { OnlineState } from '../domain/online.js';
import { headerFromAddresses, rewriteHeaderSection } from '../route/header-rewrite.js';
import { rewriteAddress, rewriteMailbox } from '../route/rewrite.js';
import { plan } from '../route/select.js';
import type { Route } from '../route/types.js';
import { safe } from './queue-view.js';
import { awaitsAttempt } from '../domain/outcome.js';

/** The explanation for one recipient. */
export interface Explanation {
  recipient: string;
  routes?: string[];
  envelope_sender?: string;
  header_from?: string[];
  defer?: string;
  /** For a queued message: the recipient's state, and what else the queue knows about it. */
  state?: string;
  last_error?: string;
  next_attempt?: string;
  /** The header fields the first route would change, as they would leave. */
  headers?: string[];
  /** This host's own recipient: delivered by the built-in route local, on any connection and offline. */
  local?: boolean;
}

/** Whether an address is this host's own (delivered by the local route). */
export type IsLocal = (address: string) => boolean;

/** The explanation of a local recipient. */
function localOne(recipient: string): Explanation {
  return { recipient, routes: ['local'], local: true };
}

/** The header fields a route's maps would change, as "Name: value" lines. */
export function rewrittenHeaders(head: string, route: Route): string[] {
  const before = parseHeaderBlock(head).fields;
  const after = parseHeaderBlock(rewriteHeaderSection(head, route.rewrite)).fields;
  return after.filter((f, i) => f.raw !== before[i]?.raw).map((f) => `${f.name}: ${safe(fieldValue(f))}`);
}

/** Explains, for a queued message, what a run in this state would do with each recipient. */
export function explainQueued(
  routes: Route[],
  state: OnlineState,
  env: Envelope,
  head: string,
  isLocal: IsLocal = () => false,
): Explanation[] {
  const here = (r: Envelope['recipients'][number]): boolean => r.local !== undefined || isLocal(r.address);
  const open = env.recipients.filter((r) => awaitsAttempt(r.state) && !here(r));
  const planned = new Map(
    explain(
      routes,
      state,
      env.sender,
      open.map((r) => r.address),
      headerFromAddresses(head),
      undefined,
      isLocal,
      env.origin.user,
    ).map((e) => [e.recipient, e]),
  );
  return env.recipients.map((r) => {
    const facts = { state: r.state, last_error: r.lastError, next_attempt: r.nextAttempt };
    if (awaitsAttempt(r.state) && here(r)) return { ...localOne(r.address), ...facts };
    const e = planned.get(r.address);
    if (!e)
      return {
        recipient: r.address,
        ...facts,
        defer:
          r.state === 'uncertain'
            ? 'held: delivery uncertain; ferrymail queue release tries it again'
            : `nothing to do: ${r.state}${r.route ? ` by ${r.route}` : ''}`,
      };
    const first = e.routes && routes.find((x) => x.name === e.routes![0]);
    return { ...e, ...facts, ...(first ? { headers: rewrittenHeaders(head, first) } : {}) };
  });
}

/** Explains route selection for one message: headerFrom are the From addresses the filters see, shown
 * the From mailboxes as they would leave (the addresses themselves when not given). */
export function explain(
  routes: Route[],
  state: OnlineState,
  sender: string,
  recipients: string[],
  headerFrom: string[],
  shown: string[] = headerFrom,
  isLocal: IsLocal = () => false,
  user?: string,
): Explanation[] {
  const remote = recipients.filter((r) => !isLocal(r));
  const planned = new Map(plan(routes, state, sender, remote, headerFrom, user).map((p) => [p.recipient, p]));
  return recipients.map((rcpt) => {
    const p = planned.get(rcpt);
    if (!p) return localOne(rcpt);
    if (!('routes' in p)) return { recipient: p.recipient, defer: p.defer };
    const first = p.routes[0]!;
    return {
      recipient: p.recipient,
      routes: p.routes.map((r) => r.name),
      envelope_sender: rewriteAddress(first.rewrite.envelopeSender, sender),
      header_from: shown.map((f) => rewriteMailbox(first.rewrite.from, f)),
    };
  });
}

/** Renders explanations as text, one block per recipient. */
export function formatExplain(list: Explanation[], state: OnlineState): string {
  const lines = [state.online ? `connection: ${state.connection}` : `offline${state.why ? ` (${state.why})` : ''}`];
  for (const e of list) {
    const state = e.state ? ` (${e.state})` : '';
    if (e.local)
      lines.push(
        `<${safe(e.recipient)}>${state}: here, by the route local (on any connection and offline); \`ferrymail aliases explain\` shows whom it reaches`,
      );
    else if (e.defer)
      lines.push(
        `<${safe(e.recipient)}>${state}: ${e.state && !/^(queued|deferred)$/.test(e.state) ? '' : 'waits: '}${safe(e.defer)}`,
      );
    else {
      lines.push(`<${safe(e.recipient)}>${state}: via ${e.routes!.join(', then ')}`);
      lines.push(`  envelope sender <${safe(e.envelope_sender ?? '')}>`);
      if (e.headers) for (const h of e.headers) lines.push(`  ${h}`);
      else for (const f of e.header_from ?? []) lines.push(`  From: ${safe(f)}`);
    }
    if (e.last_error && /^(queued|deferred)$/.test(e.state ?? '')) lines.push(`  last error: ${safe(e.last_error)}`);
    if (e.next_attempt && /^(queued|deferred)$/.test(e.state ?? '')) lines.push(`  next attempt: ${e.next_attempt}`);
  }
  return `${lines.join('\n')}\n`;
}
