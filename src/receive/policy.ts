/**
 * Who may do what: trusted client ranges, relay permission, per-client connection counting, which
 * session slots a client may take, and the DATA deadline of a client that must keep a minimum rate.
 *
 * Inputs are a peer address from the socket (trusted as given by the kernel), recipient addresses
 * (untrusted, already syntax-checked) and counts kept by the door. Pure apart from the connection
 * counter; never throws.
 */
import { inCidr } from '../domain/ip.js';

/** Answers remembered per range list, so that a busy client costs one parse per list. */
const memo = new WeakMap<readonly string[], Map<string, boolean>>();

/** True when ip lies in one of the ranges. */
export function inRanges(ip: string, ranges: readonly string[]): boolean {
  let known = memo.get(ranges);
  if (!known) memo.set(ranges, (known = new Map()));
  let hit = known.get(ip);
  if (hit === undefined) {
    hit = matchRanges(ip, ranges);
    if (known.size >= 4096) known.clear();
    known.set(ip, hit);
  }
  return hit;
}

/** The uncached check behind inRanges. */
function matchRanges(ip: string, ranges: readonly string[]): boolean {
  return ranges.some((r) => inCidr(ip, r));
}

/** True for loopback peers (127/8, ::1, and the IPv4-mapped forms). */
export function isLoopback(ip: string): boolean {
  return inRanges(ip, LOOPBACK);
}

const LOOPBACK: readonly string[] = ['127.0.0.0/8', '::1/128'];

/** Facts the relay decision needs. */
export interface RelayFacts {
  peer: string;
  authenticated: boolean;
  localNets: readonly string[];
}

/** True when the client may relay: loopback, a local network, or an authenticated user. */
export function mayRelay(f: RelayFacts): boolean {
  return f.authenticated || isLoopback(f.peer) || inRanges(f.peer, f.localNets);
}

/** Counts open connections per client address. */
export class ClientCounter {
  private readonly counts = new Map<string, number>();
  total = 0;

  /** Counts a new connection; returns the client's count including it. */
  add(ip: string): number {
    const n = (this.counts.get(ip) ?? 0) + 1;
    this.counts.set(ip, n);
    this.total++;
    return n;
  }

  /** Forgets a closed connection. */
  remove(ip: string): void {
    const n = (this.counts.get(ip) ?? 0) - 1;
    if (n <= 0) this.counts.delete(ip);
    else this.counts.set(ip, n);
    this.total = Math.max(0, this.total - 1);
  }
}

/** The connection limits a new session is checked against (the limits.* settings of the same names). */
export interface SlotLimits {
  connections: number;
  reserved_local: number;
  connections_per_client: number;
}

/** What the door knows about a new session, itself counted in total and perClient. */
export interface SlotFacts {
  total: number;
  perClient: number;
  /** Loopback or local_nets: may use the slots kept for local clients. */
  trusted: boolean;
  /** In limits.per_client_exempt. */
  perClientExempt: boolean;
}

/**
 * Why a new session must be refused: "full" (every slot it may use is taken; for a client that is not
 * trusted, all but limits.reserved_local), "client" (its address has too many), or undefined to serve it.
 */
export function slotRefusal(f: SlotFacts, l: SlotLimits): 'full' | 'client' | undefined {
  const usable = f.trusted ? l.connections : l.connections - l.reserved_local;
  if (f.total > usable) return 'full';
  if (f.perClient > l.connections_per_client && !f.perClientExempt) return 'client';
  return undefined;
}

/**
 * When a DATA phase that began at startMs must have ended, given the bytes received so far: the idle
 * timeout, plus one second for every minRate bytes (Postfix's smtpd_min_data_rate). Milliseconds since
 * the epoch; Infinity when minRate is 0 (no minimum).
 */
export function dataDeadline(startMs: number, bytes: number, idleTimeoutMs: number, minRate: number): number {
  if (minRate <= 0) return Infinity;
  return startMs + idleTimeoutMs + (bytes * 1000) / minRate;
}
