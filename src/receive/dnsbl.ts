/**
 * The built-in hook `dnsbl`: DNS block and allow lists asked at connect (Postfix's reject_rbl_client and
 * permit_dnswl_client, postscreen's dnsbl_sites). The client's address is looked up in each zone (IPv4
 * octets or IPv6 nibbles reversed); an answer in 127.0.0.0/8 lists it, and the zone's action applies:
 * reject or defer with the list's own TXT text in the reply, or accept (an allow list: the connect
 * stage's later hooks are not asked). An answer in 127.255.255.0/24 is the list saying the query was
 * refused (a public resolver, a quota): not a listing, logged once. Answers are cached for their TTL.
 *
 * Fails open: a list that does not answer within the timeout, a resolver that cannot be reached (a laptop
 * offline) or any DNS error counts as "not listed", with a log line at most once a minute per zone.
 * Trusts the configuration; answers are only compared, and TXT text is cut to one line.
 */
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import type { HookApi, HookHandlers } from './hook-api.js';
import { configuredReply } from './builtin-util.js';
import type { Verdict } from './stages.js';

/** One zone as configured. */
interface Zone {
  zone: string;
  action: 'reject' | 'defer' | 'accept';
  /** Answers that count (127.0.0.x); empty: any in 127.0.0.0/8 but 127.255.255.x. */
  codes: string[];
  reply?: { code: number; enhanced: string; text: string };
}

/** The name to look up for an address in a zone; undefined for what is no address. */
export function queryName(ip: string, zone: string): string | undefined {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(ip);
  if (v4 && net.isIPv4(`${v4[1]}.${v4[2]}.${v4[3]}.${v4[4]}`)) return `${v4[4]}.${v4[3]}.${v4[2]}.${v4[1]}.${zone}`;
  if (!net.isIPv6(ip)) return undefined;
  const [head, tail] = ip.split('%')[0]!.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...(tail === undefined ? [] : Array(8 - h.length - t.length).fill('0')), ...t];
  const nibbles = groups
    .map((g) => g.padStart(4, '0'))
    .join('')
    .toLowerCase();
  return `${[...nibbles].reverse().join('.')}.${zone}`;
}

/** The zones of the options, checked. */
function zonesOf(options: Record<string, unknown>): Zone[] {
  const list = options.zones;
  if (!Array.isArray(list) || !list.length) throw new Error('options.zones must list at least one zone');
  return list.map((z, i) => {
    const e = (typeof z === 'string' ? { zone: z } : z) as Record<string, unknown>;
    if (typeof e.zone !== 'string' || !/^[A-Za-z0-9.-]+$/.test(e.zone))
      throw new Error(`options.zones[${i}]: a zone name is needed`);
    const action = e.action ?? 'reject';
    if (action !== 'reject' && action !== 'defer' && action !== 'accept')
      throw new Error(`options.zones[${i}].action must be reject, defer or accept`);
    const codes = e.codes ?? [];
    if (!Array.isArray(codes) || !codes.every((c) => typeof c === 'string' && /^127\.\d+\.\d+\.\d+$/.test(c)))
      throw new Error(`options.zones[${i}].codes must list answers such as 127.0.0.2`);
    const reply =
      action === 'reject'
        ? configuredReply(e.reply, `554 5.7.1 Service unavailable; client [$ip] blocked using ${e.zone}$text`, '5')
        : action === 'defer'
          ? configuredReply(e.reply, `450 4.7.1 Service unavailable; client [$ip] listed by ${e.zone}$text`, '4')
          : undefined;
    return { zone: e.zone.replace(/\.$/, '').toLowerCase(), action, codes: codes as string[], reply };
  });
}

/** A cached answer: the listing codes and text, until when. */
interface Cached {
  codes: string[];
  text: string;
  until: number;
}

/** The built-in: a connect handler. */
export function dnsbl(options: Record<string, unknown>, api: HookApi): HookHandlers {
  const zones = zonesOf(options);
  const timeoutMs = typeof options.timeout_ms === 'number' ? options.timeout_ms : 2000;
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  const servers = (options.servers as string[] | undefined) ?? api.dnsServers ?? [];
  if (servers.length) resolver.setServers(servers);
  const cache = new Map<string, Cached>();
  const warned = new Map<string, number>();
  const warn = (zone: string, text: string): void => {
    const now = Date.now();
    if (now - (warned.get(zone) ?? 0) < 60_000) return;
    warned.set(zone, now);
    api.log(`dnsbl ${zone}: ${text}`);
  };

  /** The list's answer for a name: codes (none: not listed) and its text, cached for the TTL. */
  const ask = async (name: string, zone: string): Promise<Cached> => {
    const hit = cache.get(name);
    if (hit && hit.until > Date.now()) return hit;
    let out: Cached;
    try {
      const a = await withDeadline(resolver.resolve4(name, { ttl: true }), timeoutMs);
      const text = await withDeadline(resolver.resolveTxt(name), timeoutMs).then(
        (t) => (t[0]?.join('') ?? '').replace(/[\r\n\x00-\x1f]+/g, ' ').slice(0, 200),
        () => '',
      );
      const ttl = Math.min(3600, Math.max(10, ...a.map((x) => x.ttl)));
      out = { codes: a.map((x) => x.address), text, until: Date.now() + ttl * 1000 };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // not listed: remembered a minute; anything else fails open and is asked again next time
      if (code === 'ENOTFOUND' || code === 'ENODATA') out = { codes: [], text: '', until: Date.now() + 60_000 };
      else {
        warn(zone, `not asked (${code ?? (err as Error).message}): taken as not listed`);
        return { codes: [], text: '', until: 0 };
      }
    }
    if (cache.size > 10_000) cache.clear();
    cache.set(name, out);
    return out;
  };

  return {
    async connect(s) {
      const answers = await Promise.all(
        zones.map(async (z) => {
          const name = queryName(s.peer, z.zone);
          return name ? { z, a: await ask(name, z.zone) } : undefined;
        }),
      );
      for (const x of answers) {
        if (!x) continue;
        const refused = x.a.codes.filter((c) => c.startsWith('127.255.255.'));
        if (refused.length) warn(x.z.zone, `refused the query (${refused.join(', ')}): not taken as a listing`);
        const hits = x.a.codes.filter(
          (c) => c.startsWith('127.') && !c.startsWith('127.255.255.') && (!x.z.codes.length || x.z.codes.includes(c)),
        );
        if (!hits.length) continue;
        if (x.z.action === 'accept') return { action: 'accept' };
        const r = x.z.reply!;
        const text = r.text.replace(/\$ip/g, s.peer).replace(/\$text/g, x.a.text ? `; ${x.a.text}` : '');
        return { action: x.z.action, reply: { ...r, text } } as Verdict;
      }
      return { action: 'continue' };
    },
  };
}

/** A promise that rejects (ETIMEOUT) when p takes longer than ms. */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_r, reject) => {
    t = setTimeout(() => reject(Object.assign(new Error('no answer in time'), { code: 'ETIMEOUT' })), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(t));
}
