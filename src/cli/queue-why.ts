/**
 * Why mail waits, for every listing: a recipient being sent right now (route, since when, bytes), a
 * recipient whose route is down, a held message (not tried until released), and a recipient never tried,
 * for which the listing says what holds it: no route files, no daemon to deliver it, offline, no route on
 * this connection, or just the next run.
 *
 * Asks the daemon over its control socket (in-flight deliveries, routes down, its online state); without
 * a daemon, reads the online state from the configured sources. Trusts the spool's envelopes; reads a
 * message's header section only for recipients never tried. Never throws for a single message.
 */
import type { Config } from '../config/types.js';
import { callDaemon } from '../control/client.js';
import type { DownView, FlightView } from '../control/protocol.js';
import type { OnlineState } from '../domain/online.js';
import { isFinal } from '../domain/outcome.js';
import { headerFromAddresses } from '../route/header-rewrite.js';
import { plan } from '../route/select.js';
import type { Route } from '../route/types.js';
import { layoutOf } from '../spool/layout.js';
import type { Entry, Store } from '../spool/store.js';
import { safe } from './queue-view.js';

/** What the listings know besides the envelopes. */
export interface WaitFacts {
  /** A daemon runs on the spool. */
  running: boolean;
  flights: FlightView[];
  down: DownView[];
  state: OnlineState;
  routes: Route[];
  dir: string;
}

/** Notes per recipient, keyed by noteKey(). */
export type Notes = Map<string, string>;

/** The key of a recipient's note. */
export function noteKey(id: string, address: string): string {
  return `${id} ${address}`;
}

/** Gathers the facts: from the daemon when one runs, else from the configuration. */
export async function waitFacts(cfg: Config): Promise<WaitFacts> {
  const { loadRoutes } = await import('../config/routes.js');
  let routes: Route[] = [];
  try {
    routes = loadRoutes(cfg.dir);
  } catch {
    /* broken route files: config check says why; the listing still lists */
  }
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd: 'status' }, 3000).catch(() => null);
  if (res?.ok && res.status) {
    const s = res.status;
    return {
      running: true,
      flights: s.inFlight ?? [],
      down: s.routesDown ?? [],
      state: s.online ?? { online: false, why: 'not yet known' },
      routes,
      dir: cfg.dir,
    };
  }
  const { onlineView } = await import('../online/state.js');
  return { running: false, flights: [], down: [], state: await onlineView(cfg.online).state(), routes, dir: cfg.dir };
}

/** The notes for every waiting recipient of the entries. */
export async function waitNotes(entries: Entry[], facts: WaitFacts, store: Store): Promise<Notes> {
  const notes: Notes = new Map();
  const flying = new Map(facts.flights.flatMap((f) => f.recipients.map((a) => [noteKey(f.id, a), f] as const)));
  const down = new Map(facts.down.map((d) => [d.route, d] as const));
  for (const { envelope: e, place } of entries) {
    const fresh = e.recipients.filter((r) => !isFinal(r.state) && r.state !== 'uncertain');
    if (place === 'hold') {
      // no run takes a held message, whatever its routes do
      for (const r of fresh) notes.set(noteKey(e.id, r.address), heldNote(e.id));
      continue;
    }
    let head: string | undefined;
    for (const r of fresh) {
      const f = flying.get(noteKey(e.id, r.address));
      const d = r.route ? down.get(r.route) : undefined;
      if (f)
        notes.set(noteKey(e.id, r.address), `in flight by route ${f.route} since ${f.since}, ${f.bytes} bytes sent`);
      else if (d)
        notes.set(
          noteKey(e.id, r.address),
          `route ${d.route} is down (${d.until ? `until ${d.until}` : 'until its settings change or a manual flush'}): ${safe(d.reason)}`,
        );
      else if (!r.lastError && place === 'queue') {
        // the header's From matters only to a route that filters on it: a long listing reads no data else
        if (facts.routes.some((x) => x.fromHeader.allow.length || x.fromHeader.deny.length))
          head ??= await store.readHead(e).catch(() => '');
        notes.set(noteKey(e.id, r.address), neverTried(facts, e.sender, r.address, head ?? '', e.origin?.user));
      }
    }
  }
  return notes;
}

/** Why a held message's recipient waits. */
function heldNote(id: string): string {
  return `held: not tried until 'ferrymail queue release ${id}'`;
}

/** Why a recipient never tried waits. */
function neverTried(facts: WaitFacts, sender: string, address: string, head: string, user?: string): string {
  if (!facts.routes.length) return `no route files (${facts.dir}/routes/*.yaml): nothing can leave`;
  const [p] = plan(facts.routes, facts.state, sender, [address], headerFromAddresses(head), user);
  if (p && 'defer' in p) return p.defer;
  const next = p && 'routes' in p ? p.routes[0]?.name : undefined;
  if (!facts.running)
    return `no daemon runs: 'ferrymail daemon' sends it${next ? ` by route ${next}` : ''}, or 'ferrymail flush' now`;
  return `waits for the next queue run${next ? ` (route ${next})` : ''}`;
}
