/**
 * IP addresses: is this address inside that range (IPv4 and IPv6; IPv4-mapped IPv6 addresses and
 * ranges (::ffff:10.0.0.0/104) count as the IPv4 ones they map), the network a client is counted in,
 * and host:port as written.
 *
 * Pure; a malformed address or range is simply "not inside". Never throws.
 */
import { netModule } from '../lazy-node.js';

// node:net is loaded at the first address looked at: it loads node:stream, which the sendmail command's
// submission does without

/** node:net's isIPv4(). */
export function isIPv4(s: string): boolean {
  return netModule().isIPv4(s);
}

/** node:net's isIPv6(). */
export function isIPv6(s: string): boolean {
  return netModule().isIPv6(s);
}

/** node:net's isIP(): 4, 6, or 0 for anything else. */
export function isIP(s: string): number {
  return netModule().isIP(s);
}

/** An address as a number and its family (IPv4-mapped IPv6 counts as IPv4). */
function toBig(ip: string): { family: 4 | 6; value: bigint } | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) ip = mapped[1]!;
  ip = ip.split('%')[0]!; // a zone index (fe80::1%eth0) says nothing about the range
  if (isIPv4(ip)) return { family: 4, value: ip.split('.').reduce((a, o) => (a << 8n) + BigInt(Number(o)), 0n) };
  if (!isIPv6(ip)) return null;
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...(tail === undefined ? [] : Array(8 - h.length - t.length).fill('0')), ...t];
  return { family: 6, value: groups.reduce((a, g) => (a << 16n) + BigInt(parseInt(g || '0', 16)), 0n) };
}

/** True when ip lies inside cidr ("192.168.1.0/24", "fd00::/8", "::ffff:10.0.0.0/104"). */
export function inCidr(ip: string, cidr: string): boolean {
  const [base, bits, extra] = cidr.split('/');
  const a = toBig(ip);
  const b = base ? toBig(base) : null;
  if (!a || !b || extra !== undefined || bits === undefined || !/^\d{1,3}$/.test(bits)) return false;
  const prefix = b.family === 4 && base!.includes(':') ? Math.max(0, Number(bits) - 96) : Number(bits);
  const width = b.family === 4 ? 32 : 128;
  if (a.family !== b.family || prefix > width) return false;
  const shift = BigInt(width - prefix);
  return a.value >> shift === b.value >> shift;
}

/**
 * The unit a client is counted in: an IPv4 address (also in its IPv4-mapped form) as itself, an IPv6
 * address as its /64 network ("2001:db8:1:2::/64"), since one IPv6 host usually holds a whole /64.
 * Anything else is returned as given.
 */
export function clientNetwork(ip: string): string {
  const a = toBig(ip);
  if (!a) return ip;
  if (a.family === 4) return [24, 16, 8, 0].map((s) => Number((a.value >> BigInt(s)) & 255n)).join('.');
  const top = a.value >> 64n;
  return `${[48, 32, 16, 0].map((s) => ((top >> BigInt(s)) & 0xffffn).toString(16)).join(':')}::/64`;
}

/** Splits "host:port", "[v6]:port" (a zone as in [fe80::1%wlan0] allowed) or ":port" (host "": every
 * address); null when malformed. The
 * host is not checked beyond having no spaces, colons or brackets; the port is 0 to 99999 as written. */
export function splitHostPort(v: string): { host: string; port: number; v6: boolean } | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^:\s[\]]*)):(\d{1,5})$/.exec(v);
  return m ? { host: m[1] ?? m[2] ?? '', port: Number(m[3]), v6: m[1] !== undefined } : null;
}
