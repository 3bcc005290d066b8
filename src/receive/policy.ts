/**
 * Who may do what: trusted client ranges, relay permission, per-client connection counting.
 *
 * Inputs are a peer address from the socket (trusted as given by the kernel) and recipient addresses
 * (untrusted, already syntax-checked). Pure apart from the connection counter; never throws.
 */
import { domainOf } from '../domain/address.js';
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

/** True when a recipient is one this host receives for. */
export function isLocalRecipient(address: string, localDomains: readonly string[]): boolean {
  const d = domainOf(address);
  return localDomains.some((ld) => ld.toLowerCase() === d);
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
