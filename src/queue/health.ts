/**
 * Which routes are down, as Postfix's "delivery temporarily suspended": a route whose one server could
 * not be reached (refused, unreachable, silent, greeting or TLS failure before any transaction) is down
 * for the rest of the run and a hold-down after it; one whose server refused the login is down until
 * its settings change. Its mail is then deferred at once, or passed to the next route where fall-through
 * allows, instead of paying a connect timeout per message.
 *
 * Kept in the process's memory per spool (the daemon's runs share it; a manual flush starts afresh, as
 * it asks for a new try). A change of connection clears the unreachable ones. Pure apart from the clock
 * it is given; cannot fail.
 */
import type { Route } from '../route/types.js';
import type { RouteDown } from '../transport/types.js';

/** One route that is down. */
export interface DownRoute {
  route: string;
  reason: string;
  /** The server refused the credentials: down until the route's settings change. */
  auth: boolean;
  since: number;
  /** When it may be tried again (Infinity: when its settings change). */
  until: number;
}

/** What the route looked like when it was marked down (its settings, not its secrets). */
function stampOf(route: Route): string {
  return JSON.stringify([route.transport, route.connections, route.permanent]);
}

/** Routes that are down, for one spool. */
export class RouteHealth {
  private readonly down = new Map<string, DownRoute & { stamp: string }>();

  /** Marks a route down; true when it was not down before (worth telling someone). */
  mark(route: Route, d: RouteDown, now: number, holdMs: number): boolean {
    const was = this.down.has(route.name);
    this.down.set(route.name, {
      route: route.name,
      reason: d.reason,
      auth: !!d.auth,
      since: now,
      until: d.auth ? Infinity : now + holdMs,
      stamp: stampOf(route),
    });
    return !was;
  }

  /** The route's down state now, or null when it may be tried. */
  check(route: Route, now: number): DownRoute | null {
    const d = this.down.get(route.name);
    if (!d) return null;
    if (now >= d.until || (d.auth && d.stamp !== stampOf(route))) {
      this.down.delete(route.name);
      return null;
    }
    return d;
  }

  /** Forgets routes that were down for want of a server (a new connection may reach them); with all,
   * also those whose login was refused (a person asked for a new try). */
  clear(all = false): void {
    for (const [k, d] of this.down) if (all || !d.auth) this.down.delete(k);
  }

  /** Every route down now. */
  list(now: number): DownRoute[] {
    return [...this.down.values()].filter((d) => d.until > now).map(({ stamp: _stamp, ...d }) => d);
  }
}

const bySpool = new Map<string, RouteHealth>();

/** The route health of a spool in this process. */
export function healthOf(root: string): RouteHealth {
  let h = bySpool.get(root);
  if (!h) bySpool.set(root, (h = new RouteHealth()));
  return h;
}
