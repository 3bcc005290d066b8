/**
 * Who may do what: trusted client ranges, relay permission, per-client connection counting.
 *
 * Inputs are a peer address from the socket (trusted as given by the kernel) and recipient addresses
 * (untrusted, already syntax-checked). Pure apart from the connection counter; never throws.
 */
import net from 'node:net';
import { domainOf } from '../domain/address.js';

/** A parsed address range. */
interface Range {
  family: 4 | 6;
  bits: bigint;
  prefix: number;
}

/** Turns an IP address into a number (IPv4-mapped IPv6 counts as IPv4). */
function ipToBig(ip: string): { family: 4 | 6; value: bigint } | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) ip = mapped[1]!;
  if (net.isIPv4(ip)) {
    return { family: 4, value: ip.split('.').reduce((acc, o) => (acc << 8n) + BigInt(Number(o)), 0n) };
  }
  if (!net.isIPv6(ip)) return null;
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : Array(8 - h.length - t.length).fill('0');
  const groups = [...h, ...fill, ...t];
  return { family: 6, value: groups.reduce((acc, g) => (acc << 16n) + BigInt(parseInt(g || '0', 16)), 0n) };
}

/** Parses "addr/prefix" (already validated by config). */
function parseRange(cidr: string): Range | null {
  const [addr, prefix] = cidr.split('/');
  const ip = addr ? ipToBig(addr) : null;
  // an IPv4-mapped range (::ffff:10.0.0.0/104) is compared as the IPv4 range it maps (10.0.0.0/8)
  const bits = ip?.family === 4 && addr!.includes(':') ? Math.max(0, Number(prefix) - 96) : Number(prefix);
  return ip ? { family: ip.family, bits: ip.value, prefix: bits } : null;
}

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
  const addr = ipToBig(ip);
  if (!addr) return false;
  for (const r of ranges.map(parseRange)) {
    if (!r || r.family !== addr.family) continue;
    const width = BigInt(r.family === 4 ? 32 : 128);
    const shift = width - BigInt(r.prefix);
    if (addr.value >> shift === r.bits >> shift) return true;
  }
  return false;
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
