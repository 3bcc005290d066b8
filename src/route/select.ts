/**
 * Route selection, pure: which routes may carry which recipients, in which order, right now.
 *
 * Permanent routes come first, then the routes of the current connection, each in file order. A route
 * takes a recipient when its sender, recipient, From-header and user filters allow it (deny beats allow);
 * the user is who handed the message in (the SMTP AUTH login, the local account of the sendmail command).
 * Offline, or no route that takes a recipient, is a deferral with a reason. Chosen at every attempt from
 * the current state, never frozen at enqueue. Inputs are validated data; never throws.
 */
import type { OnlineState } from '../domain/online.js';
import type { AddressFilter, Route } from './types.js';
import { matchAny } from './glob.js';

export type { OnlineState };

/** The per-recipient outcome of planning. */
export type RecipientPlan = { recipient: string; routes: Route[] } | { recipient: string; defer: string };

/** True when the filter lets address through. */
export function passes(filter: AddressFilter, address: string): boolean {
  if (matchAny(filter.deny, address)) return false;
  return filter.allow.length === 0 || matchAny(filter.allow, address);
}

/** The routes to try on a connection, in order: permanent first, then the connection's own. */
export function candidates(routes: readonly Route[], state: OnlineState): Route[] {
  const permanent = routes.filter((r) => r.permanent);
  if (!state.online || !state.connection) return permanent;
  return [...permanent, ...routes.filter((r) => !r.permanent && r.connections.includes(state.connection!))];
}

/** True when the route takes this recipient of this message. */
export function accepts(
  route: Route,
  sender: string,
  recipient: string,
  headerFrom: string[],
  user?: string,
  size?: number,
): boolean {
  if (!passes(route.senders, sender) || !passes(route.recipients, recipient)) return false;
  if (route.maxSize !== undefined && size !== undefined && size > route.maxSize) return false;
  if (route.users && !passes(route.users, user ?? '')) return false;
  if (route.fromHeader.allow.length === 0 && route.fromHeader.deny.length === 0) return true;
  return headerFrom.length > 0 && headerFrom.every((f) => passes(route.fromHeader, f));
}

/** Plans every recipient still to be delivered. */
export function plan(
  routes: readonly Route[],
  state: OnlineState,
  sender: string,
  recipients: string[],
  headerFrom: string[],
  user?: string,
  size?: number,
): RecipientPlan[] {
  const list = candidates(routes, state);
  return recipients.map((recipient) => {
    const usable = list.filter((r) => accepts(r, sender, recipient, headerFrom, user, size));
    if (usable.length) return { recipient, routes: usable };
    if (!state.online) return { recipient, defer: `offline${state.why ? ` (${state.why})` : ''}` };
    if (size !== undefined && list.some((r) => accepts(r, sender, recipient, headerFrom, user)))
      return {
        recipient,
        defer: `${size} bytes is more than the max_size of the routes on connection ${state.connection ?? '?'}: it waits for another connection`,
      };
    return { recipient, defer: `no route accepts this recipient on connection ${state.connection ?? '?'}` };
  });
}

/**
 * Which routes remain after one was tried: a temporary failure passes the recipient on to the next
 * route unless this one is marked last_route; success and permanent failure end the list.
 */
export function fallThrough(
  tried: Route,
  outcome: 'ok' | 'tempfail' | 'permfail' | 'uncertain',
  rest: Route[],
): Route[] {
  if (outcome !== 'tempfail' || tried.lastRoute) return [];
  return rest;
}
