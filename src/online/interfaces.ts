/**
 * Interface facts without blocking the event loop: link state and kind from /sys/class/net (and
 * /proc/net/wireless for wireless interfaces), the default routes from /proc/net/route and
 * /proc/net/ipv6_route, addresses from os.networkInterfaces(). Each read costs well under a millisecond
 * (systeminformation's interface calls run shell commands and block, so they stay off this path);
 * rules.ts turns these facts into a connection.
 *
 * Reads kernel files, which are trusted; a missing or odd file simply yields fewer facts. Never throws.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

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
  /** Lists the wireless interfaces (one per line after two header lines). */
  procWireless: string;
  addresses: () => NodeJS.Dict<os.NetworkInterfaceInfo[]>;
}

export const SYSTEM_SOURCES: FactSources = {
  sysNet: '/sys/class/net',
  procRoute: '/proc/net/route',
  procRoute6: '/proc/net/ipv6_route',
  procWireless: '/proc/net/wireless',
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

/** The interfaces /proc/net/wireless lists ("  wlan0: 0000   70.  -40.  ..."). */
function wirelessNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n').slice(2)) {
    const m = /^\s*([^\s:]+):/.exec(line);
    if (m) out.add(m[1]!);
  }
  return out;
}

/** An IPv6 address in its short canonical form (fe80::1), as people write it in rules. */
export function canonical6(ip: string): string {
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip;
  }
}

/** The kind of an interface from what /sys shows. */
function kindOf(dir: string, name: string, wireless: Set<string>): InterfaceFacts['kind'] {
  if (name === 'lo' || read(path.join(dir, 'type')).trim() === '772') return 'loopback';
  if (wireless.has(name)) return 'wireless';
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
  const wireless = wirelessNames(read(src.procWireless));
  const addrs = src.addresses();
  return names.sort().map((name) => {
    const dir = path.join(src.sysNet, name);
    const state = read(path.join(dir, 'operstate')).trim();
    return {
      name,
      // "unknown" is what loopback and many tunnels (VPNs) report while they work
      up: state === 'up' || (state === 'unknown' && read(path.join(dir, 'carrier')).trim() !== '0'),
      kind: kindOf(dir, name, wireless),
      addresses: (addrs[name] ?? []).map((a) => a.address),
      gateways: [...(gw4.get(name) ?? []), ...(gw6.get(name) ?? [])],
    };
  });
}

/** A fingerprint of the facts (for polling): equal fingerprints, equal facts. */
export function factsFingerprint(src: FactSources = SYSTEM_SOURCES): string {
  return JSON.stringify(readInterfaces(src));
}
