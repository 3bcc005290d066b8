/**
 * Interface facts without blocking the event loop: link state and kind from /sys/class/net, the default
 * routes from /proc/net/route and /proc/net/ipv6_route, addresses from os.networkInterfaces(). Each read
 * costs well under a millisecond (systeminformation's interface calls run shell commands and block, so
 * they stay off this path), and rules over these facts say which connection we are on.
 *
 * Reads kernel files, which are trusted; a missing or odd file simply yields fewer facts. Never throws.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { OnlineState } from '../domain/online.js';
import { inCidr } from '../domain/ip.js';

/** What is known about one interface. */
export interface InterfaceFacts {
  name: string;
  up: boolean;
  kind: 'wired' | 'wireless' | 'loopback' | 'other';
  addresses: string[];
  /** Gateways of the default routes through this interface (IPv4 and IPv6). */
  gateways: string[];
}

/** Where the facts are read from (tests point these at fixtures). */
export interface FactSources {
  sysNet: string;
  procRoute: string;
  procRoute6: string;
  addresses: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
}

export const SYSTEM_SOURCES: FactSources = {
  sysNet: '/sys/class/net',
  procRoute: '/proc/net/route',
  procRoute6: '/proc/net/ipv6_route',
  addresses: () => os.networkInterfaces(),
};

/** Reads a small kernel file, or "" when it cannot. */
function read(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** The IPv4 default routes: interface name → gateways (the kernel writes addresses little-endian hex). */
function defaultRoutes4(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n').slice(1)) {
    const [iface, dest, gw, , , , , mask] = line.trim().split(/\s+/);
    if (!iface || dest !== '00000000' || mask !== '00000000' || !gw) continue;
    const n = parseInt(gw, 16);
    const ip = [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255].join('.');
    out.set(iface, [...(out.get(iface) ?? []), ip]);
  }
  return out;
}

/** The IPv6 default routes (::/0 with a gateway): interface name → gateways. */
function defaultRoutes6(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[0] !== '0'.repeat(32) || f[1] !== '00' || /^0+$/.test(f[4]!)) continue;
    const gw = canonical6(f[4]!.match(/.{4}/g)!.join(':'));
    out.set(f[9]!, [...(out.get(f[9]!) ?? []), gw]);
  }
  return out;
}

/** An IPv6 address in its short canonical form (fe80::1), as people write it in rules. */
function canonical6(ip: string): string {
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip;
  }
}

/** The kind of an interface from what /sys shows. */
function kindOf(dir: string, name: string): InterfaceFacts['kind'] {
  if (name === 'lo' || read(path.join(dir, 'type')).trim() === '772') return 'loopback';
  if (fs.existsSync(path.join(dir, 'wireless')) || fs.existsSync(path.join(dir, 'phy80211'))) return 'wireless';
  if (fs.existsSync(path.join(dir, 'device'))) return 'wired';
  return 'other';
}

/** Reads the facts of every interface. */
export function readInterfaces(src: FactSources = SYSTEM_SOURCES): InterfaceFacts[] {
  let names: string[];
  try {
    names = fs.readdirSync(src.sysNet);
  } catch {
    return [];
  }
  const gw4 = defaultRoutes4(read(src.procRoute));
  const gw6 = defaultRoutes6(read(src.procRoute6));
  const addrs = src.addresses();
  return names.sort().map((name) => {
    const dir = path.join(src.sysNet, name);
    const state = read(path.join(dir, 'operstate')).trim();
    return {
      name,
      // "unknown" is what loopback and many tunnels (VPNs) report while they work
      up: state === 'up' || (state === 'unknown' && read(path.join(dir, 'carrier')).trim() !== '0'),
      kind: kindOf(dir, name),
      addresses: (addrs[name] ?? []).map((a) => a.address),
      gateways: [...(gw4.get(name) ?? []), ...(gw6.get(name) ?? [])],
    };
  });
}

/** A rule naming a connection by what the interfaces show; every given condition must hold. */
export interface InterfaceRule {
  connection: string;
  /** Interface name, "*" and "?" allowed (wlan*, tun0). */
  interface?: string;
  kind?: 'wired' | 'wireless';
  /** The default route goes through this gateway. */
  gateway?: string;
  /** The interface has an address in this range. */
  cidr?: string;
}

/** Name globs as used in rules. */
function nameMatches(glob: string, name: string): boolean {
  const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

/** True when one interface satisfies the rule. */
function ruleHolds(rule: InterfaceRule, f: InterfaceFacts): boolean {
  if (!f.up || f.kind === 'loopback') return false;
  if (rule.interface && !nameMatches(rule.interface, f.name)) return false;
  if (rule.kind && rule.kind !== f.kind) return false;
  if (rule.gateway && !f.gateways.includes(rule.gateway.includes(':') ? canonical6(rule.gateway) : rule.gateway)) return false;
  if (rule.cidr && !f.addresses.some((a) => inCidr(a, rule.cidr!))) return false;
  // without a gateway condition, an interface still needs some default route to count as online
  if (!rule.gateway && f.gateways.length === 0 && !rule.cidr) return false;
  return true;
}

/** The first rule (in order) that some interface satisfies names the connection; none: offline. */
export function connectionFromInterfaces(rules: readonly InterfaceRule[], facts: readonly InterfaceFacts[]): OnlineState {
  for (const rule of rules) {
    const f = facts.find((x) => ruleHolds(rule, x));
    if (f) return { online: true, connection: rule.connection, why: `interface ${f.name}` };
  }
  return { online: false, why: 'no interface rule holds' };
}
