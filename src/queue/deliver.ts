/**
 * Delivering one message's due recipients by their routes, in order: each route takes the recipients
 * whose next route it is; a temporary failure falls through to the next route unless the route forbids
 * it. Around each attempt:
 * - a route that is down (health.ts) is not tried: its recipients are deferred at once (or fall through);
 *   an attempt whose transport says its server cannot be reached marks it down;
 * - a route that the connection the run was retargeted to cannot use is not started any more;
 * - before the last byte of the message goes out, the hand-over is noted in the in-flight journal, and
 *   while it goes out the delivery is visible as in flight (route, since when, bytes sent).
 *
 * Trusts the loaded routes and the envelope. Transport failures are outcomes; a transport that throws
 * or leaves a recipient without a result counts as a temporary failure (never a lost state).
 */
import { Transform, type Readable } from 'node:stream';
import type { Envelope, Recipient } from '../domain/envelope.js';
import type { OnlineState } from '../domain/online.js';
import type { Outcome } from '../domain/outcome.js';
import { rewriteAddress } from '../route/rewrite.js';
import { fallThrough } from '../route/select.js';
import type { Route } from '../route/types.js';
import type { InflightNote } from '../spool/inflight.js';
import { withReserve } from '../spool/space.js';
import type { DeliveryRequest, DeliveryResult } from '../transport/types.js';
import type { RunnerDeps, RunReport } from './runner.js';
import { settle, uncertainStep } from './settle.js';

/** What happened in one message's run, for the notices at its end. */
export interface MessageRun {
  env: Envelope;
  head: string;
  state: OnlineState;
  failedBefore: Set<string>;
  /** Routes that failed temporarily for this message in this run (they cannot carry a notice now). */
  troubled: Set<string>;
  /** The envelope as the spool holds it, when the run began: a run that changes nothing writes nothing. */
  written?: string;
}

/** A delivery under way, for listings. */
export interface Flight {
  id: string;
  route: string;
  recipients: string[];
  /** ISO time the attempt started. */
  since: string;
  /** Bytes of the message handed to the transport so far. */
  bytes: number;
}

const flightsBySpool = new Map<string, Map<string, Flight>>();

/** The deliveries under way in this process for a spool. */
export function inFlight(root: string): Flight[] {
  return [...(flightsBySpool.get(root)?.values() ?? [])];
}

/** The flights of a spool, made on first use. */
function flightsOf(root: string): Map<string, Flight> {
  let m = flightsBySpool.get(root);
  if (!m) flightsBySpool.set(root, (m = new Map()));
  return m;
}

/** Walks the routes: each route takes the recipients still waiting for it; tempfail falls through. */
export async function deliverByRoutes(
  deps: RunnerDeps,
  run: MessageRun,
  pending: Recipient[],
  routesOf: Map<string, Route[]>,
  now: () => number,
  report: RunReport,
): Promise<void> {
  const env = run.env;
  while (routesOf.size) {
    // the next route to try is the first route of some waiting recipient; take every recipient whose next route it is
    const route = [...routesOf.values()][0]![0]!;
    const batch = [...routesOf.entries()].filter(([, rs]) => rs[0] === route).map(([a]) => a);
    const result =
      (await notNow(deps, route, batch, now())) ??
      (await attempt(deps, route, request(deps, run, pending, route, batch)));
    if (result.down && deps.health?.mark(route, result.down, now(), deps.holdDownMs ?? 60_000))
      deps.onRouteDown?.(route, result.down);
    for (const res of result.results) {
      const rest = fallThrough(route, res.outcome, routesOf.get(res.address)!.slice(1));
      const r = pending.find((x) => x.address === res.address)!;
      const failFinal =
        res.outcome === 'tempfail' && route.connectErrorFail && /^451 4\.4\.1/.test(res.reply) && !result.skipped;
      const outcome: Outcome = failFinal ? 'permfail' : res.outcome;
      // final means 5xx: the connection failure a LAN route may not have is a permanent one
      const reply = failFinal ? `${res.reply.replace(/^451 4\.4\.1/, '554 5.4.1')} (connect_error_fail)` : res.reply;
      if (outcome === 'tempfail') run.troubled.add(route.name);
      if (rest.length && outcome === 'tempfail') {
        routesOf.set(res.address, rest);
        deps.log.log('deferred', env.id, {
          to: `<${res.address}>`,
          route: route.name,
          relay: result.relay,
          status: reply,
          next: rest[0]!.name,
        });
        continue;
      }
      routesOf.delete(res.address);
      settle(deps, env, r, outcome === 'uncertain' ? uncertainStep(route, r) : outcome, reply, now(), report, {
        route: route.name,
        relay: result.relay,
        attempted: !result.skipped,
      });
    }
  }
}

/** A result for a route that is not tried now: down, or not usable on the connection the run was
 * retargeted to; undefined when it may be tried. */
async function notNow(
  deps: RunnerDeps,
  route: Route,
  batch: string[],
  now: number,
): Promise<(DeliveryResult & { skipped: true }) | undefined> {
  const moved = deps.signal?.next;
  const why =
    moved && !deps.signal!.usable(route)
      ? `451 4.4.1 route ${route.name} is not used on ${moved.online ? `connection ${moved.connection}` : 'no connection'} (the connection changed)`
      : undefined;
  const down = why ? null : deps.health?.check(route, now);
  const reply =
    why ??
    (down
      ? `451 4.4.1 route ${route.name} is down since ${new Date(down.since).toISOString()}, delivery temporarily suspended: ${down.reason.replace(/^\d{3} \d\.\d\.\d+ /, '')}`
      : undefined);
  if (!reply) return undefined;
  return { relay: 'none', skipped: true, results: batch.map((address) => ({ address, outcome: 'tempfail', reply })) };
}

/** The delivery request of a batch of recipients by a route. */
function request(
  deps: RunnerDeps,
  run: MessageRun,
  pending: Recipient[],
  route: Route,
  batch: string[],
): DeliveryRequest {
  const env = run.env;
  // recipients whose transport recorded its own note (record()): the hand-over note is not needed
  const recorded = new Set<string>();
  const attemptsOf = (a: string): number => pending.find((x) => x.address === a)?.attempts ?? 0;
  return {
    id: env.id,
    sender: rewriteAddress(route.rewrite.envelopeSender, env.sender),
    recipients: batch.map((a) => {
      const r = pending.find((x) => x.address === a)!;
      return { address: a, notify: r.notify, orcpt: r.orcpt, local: r.local, orig: r.orig, attempts: r.attempts };
    }),
    message: (to, opts) => {
      const addresses = to ?? batch;
      // the attempts each recipient had: a later run knows an outcome was written when the count grew
      const attempts = addresses.map(attemptsOf);
      const note =
        opts?.recorded || addresses.every((a) => recorded.has(a))
          ? undefined
          : { id: env.id, route: route.name, addresses, attempts };
      return handOver(deps, deps.messageFor(env, route, run.head), note, env.id);
    },
    record: deps.journal
      ? async (address, detail) => {
          await withReserve(deps.store.layout, () =>
            deps.journal!.mark({
              id: env.id,
              route: route.name,
              addresses: [address],
              attempts: [attemptsOf(address)],
              local: detail,
            }),
          );
          recorded.add(address);
        }
      : undefined,
    size: env.size,
    smtputf8: env.smtputf8,
    body: env.body,
    envid: env.envid,
    ret: env.ret,
  };
}

/** One delivery attempt through a route's transport; a transport that throws, or that leaves a
 * recipient without a result, counts as a temporary failure for those recipients (never a lost state). */
async function attempt(
  deps: RunnerDeps,
  route: Route,
  req: DeliveryRequest,
): Promise<DeliveryResult & { skipped?: boolean }> {
  let result: DeliveryResult;
  const flights = flightsOf(deps.store.layout.root);
  flights.set(req.id, {
    id: req.id,
    route: route.name,
    recipients: req.recipients.map((r) => r.address),
    since: new Date().toISOString(),
    bytes: 0,
  });
  deps.observe?.({
    kind: 'delivering',
    id: req.id,
    sender: req.sender,
    recipients: req.recipients.map((r) => r.address),
    route: route.name,
  });
  try {
    result = await deps.transportFor(route).deliver(req);
  } catch (err) {
    result = { relay: 'none', results: [] };
    deps.log.log('error', `${req.id} route ${route.name} failed unexpectedly`, { error: (err as Error).message });
  } finally {
    flights.delete(req.id);
  }
  const got = new Map(result.results.map((r) => [r.address, r] as const));
  return {
    relay: result.relay,
    down: result.down,
    results: req.recipients.map(
      (r) =>
        got.get(r.address) ?? {
          address: r.address,
          outcome: 'tempfail',
          reply: `451 4.3.0 route ${route.name} gave no result for this recipient`,
        },
    ),
  };
}

/**
 * The message stream as a transport reads it, counted for the in-flight view, with its end held back
 * until the hand-over of these recipients is noted durably in the in-flight journal: the final dot (or
 * a command's end of input) never goes out before a killed run could know it may have. A note that
 * cannot be made fails the stream, and the transport gives up before the end.
 */
function handOver(deps: RunnerDeps, stream: Readable, note: Omit<InflightNote, 't'> | undefined, id: string): Readable {
  const journal = note ? deps.journal : undefined;
  const flight = flightsOf(deps.store.layout.root).get(id);
  const gate = new Transform({
    transform: (chunk: Buffer, _e, cb) => {
      if (flight) flight.bytes += chunk.length;
      cb(null, chunk);
    },
    flush: (cb) => {
      if (!journal) return cb();
      withReserve(deps.store.layout, () => journal.mark(note!)).then(
        () => cb(),
        (err: Error) => cb(err),
      );
    },
  });
  stream.once('error', (err) => gate.destroy(err));
  gate.once('close', () => stream.destroy());
  return stream.pipe(gate);
}
