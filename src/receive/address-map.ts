/**
 * The built-in hook `address_map`: what to do with a recipient (or, at MAIL, a sender), by address or
 * domain, from a file (Postfix's check_recipient_access and check_sender_access with a hash table, its
 * relay_domains, and a backup MX's relay_recipient rule). Each line is a key and an action:
 * `user@example.org`, `@example.org` (the domain), `example.org` (the domain and every subdomain) or
 * `user@` (the local part at any domain), then `accept`, `reject`, `defer` or `continue`, with an
 * optional reply (`reject 550 5.1.1 No such user`); or `relay` (mail for it is taken from any client,
 * to be carried on by the routes) or `backup_mx [HOST[:PORT]]` (taken from any client only while the
 * domain's primary server, HOST or its lowest MX, does not answer; deferred while it does). The most
 * specific key wins: the address, then user@, then the domain, then its parents. The file is read again
 * when it changes.
 *
 * Trusts the configuration; the file's lines are checked (a bad line at start is a configuration error;
 * after a change the map in use stays and the log says why). A primary's answer is asked with a TCP
 * connection that must bring a 220 greeting within options.probe_timeout, and kept for
 * options.probe_cache; a primary that cannot be looked up counts as down (the mail is taken).
 */
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { parseDuration } from '../config/schema.js';
import { watchedFile } from './builtin-util.js';
import type { HookApi, HookHandlers } from './hook-api.js';
import type { Verdict } from './stages.js';

/** A line's action: a verdict, or a relay grant (for good, or while the primary is down). */
export type MapEntry = Verdict | { action: 'relay' } | { action: 'backup_mx'; host?: string; port: number };

/** The map's entries by key. */
export type AddressMap = Map<string, MapEntry>;

/** Parses the HOST[:PORT] of a backup_mx line ([v6]:port for an IPv6 address). */
function primaryOf(text: string | undefined): { host?: string; port: number } | undefined {
  if (!text) return { port: 25 };
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::(\d{1,5}))?$/i.exec(text);
  const port = m?.[3] ? Number(m[3]) : 25;
  if (!m || port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!.toLowerCase(), port };
}

/** A key in lower case, checked to be an address, user@, @domain or domain. */
function checkedKey(text: string, bad: (why: string) => Error): string {
  const key = text.toLowerCase();
  if (!/^[^\s@]*@?[^\s@]*$/.test(key) || key === '@')
    throw bad(`${JSON.stringify(key)} is no address, user@, @domain or domain`);
  return key;
}

/** Parses a map file. */
export function parseMap(text: string, file: string): AddressMap {
  const map: AddressMap = new Map();
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/(^|\s)#.*/, '').trim();
    if (!line) continue;
    const m = /^(\S+)\s+(accept|reject|defer|continue)(?:\s+([45]\d\d)\s+([45]\.\d{1,3}\.\d{1,3})\s+(.+))?$/i.exec(
      line,
    );
    const bad = (why: string): Error => new Error(`${file}:${i + 1}: ${why}`);
    const grant = /^(\S+)\s+(relay|backup_mx)(?:\s+(.+))?$/i.exec(line);
    if (grant) {
      const key = checkedKey(grant[1]!, bad);
      if (grant[2]!.toLowerCase() === 'relay') {
        if (grant[3]) throw bad('relay takes nothing after it');
        map.set(key, { action: 'relay' });
        continue;
      }
      const primary = primaryOf(grant[3]);
      if (!primary) throw bad(`${JSON.stringify(grant[3])} is no HOST, HOST:PORT or [ADDRESS]:PORT`);
      map.set(key, { action: 'backup_mx', ...primary });
      continue;
    }
    if (!m) throw bad(`${JSON.stringify(line)} is not "KEY ACTION [CODE X.Y.Z text]"`);
    const key = checkedKey(m[1]!, bad);
    const action = m[2]!.toLowerCase();
    const code = m[3] ? Number(m[3]) : undefined;
    if (code !== undefined && (action === 'accept' || action === 'continue')) throw bad(`${action} takes no reply`);
    const first = action === 'reject' ? '5' : '4';
    if (m[3] && (m[3][0] !== first || m[4]![0] !== first)) throw bad(`a ${action} needs a ${first}xx reply`);
    const reply = code
      ? { code, enhanced: m[4]!, text: m[5]! }
      : action === 'reject'
        ? { code: 554, enhanced: '5.7.1', text: 'Access denied' }
        : { code: 450, enhanced: '4.7.1', text: 'Try again later' };
    const v: Verdict =
      action === 'accept'
        ? { action: 'accept' }
        : action === 'continue'
          ? { action: 'continue' }
          : action === 'reject'
            ? { action: 'reject', reply }
            : { action: 'defer', reply };
    map.set(key, v);
  }
  return map;
}

/** The entry for an address: the address, user@, @domain, then the domain and its parents. */
export function lookup(map: AddressMap, address: string): MapEntry | undefined {
  const a = address.toLowerCase();
  const at = a.lastIndexOf('@');
  const local = at < 0 ? a : a.slice(0, at);
  const domain = at < 0 ? '' : a.slice(at + 1);
  const keys = [a, `${local}@`, `@${domain}`];
  const parts = domain.split('.');
  for (let i = 0; i < parts.length; i++) keys.push(parts.slice(i).join('.'));
  for (const k of keys) {
    const v = map.get(k);
    if (v) return v;
  }
  return undefined;
}

/** Whether a server answers with a 220 greeting within timeoutMs. */
export function answers(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let got = '';
    let settled = false;
    const done = (up: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.removeAllListeners('data');
      sock.on('error', () => undefined);
      if (up) sock.end('QUIT\r\n');
      setTimeout(() => sock.destroy(), 1000).unref();
      resolve(up);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      got += d;
      const eol = got.indexOf('\n');
      if (eol >= 0) done(/^220[ -]/.test(got));
      else if (got.length > 4096) done(false);
    });
    sock.once('error', () => done(false));
    sock.once('close', () => done(false));
  });
}

/** Answers "is the primary of this domain up?", each host's answer kept for a while. */
function primaryWatch(options: Record<string, unknown>, api: HookApi) {
  const timeoutMs = (parseDuration(options.probe_timeout ?? '5s') ?? 5) * 1000;
  const keepMs = (parseDuration(options.probe_cache ?? '1m') ?? 60) * 1000;
  const known = new Map<string, { up: Promise<boolean>; until: number }>();
  const resolver = new Resolver({ timeout: Math.min(timeoutMs, 5000), tries: 1 });
  if (api.dnsServers?.length) resolver.setServers(api.dnsServers);
  /** The lowest MX of a domain; 'none' when the domain has none (it does not exist, has no MX, or a
   * null MX), undefined when it cannot be looked up now. */
  const lowestMx = async (domain: string): Promise<string | 'none' | undefined> => {
    try {
      const mx = await resolver.resolveMx(domain);
      return mx.sort((a, b) => a.priority - b.priority)[0]?.exchange || 'none';
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === 'ENOTFOUND' || code === 'ENODATA' ? 'none' : undefined;
    }
  };
  return async (
    domain: string,
    host: string | undefined,
    port: number,
  ): Promise<{ up: boolean; host: string } | { none: true }> => {
    const name = host ?? (await lowestMx(domain));
    // a domain without mail servers is none of a backup's business: the relay policy answers
    if (name === 'none') return { none: true };
    if (!name) return { up: false, host: `the MX of ${domain}` };
    const key = `${name}:${port}`;
    const now = Date.now();
    let k = known.get(key);
    if (!k || k.until <= now) {
      k = { up: answers(name, port, timeoutMs), until: now + keepMs };
      known.set(key, k);
    }
    return { up: await k.up, host: port === 25 ? name : key };
  };
}

/** The built-in: rcpt and relay handlers (and a mail handler with options.senders). */
export function addressMap(options: Record<string, unknown>, api: HookApi): HookHandlers {
  const file = options.file;
  if (typeof file !== 'string' || !file) throw new Error('options.file must name the map file');
  const current = watchedFile(file, parseMap, `address_map ${file}`, 'map', (m) => m.size, api.log);
  const primaryUp = primaryWatch(options, api);
  /** A verdict at MAIL or RCPT: a relay grant is no verdict there, the relay stage asked it already. */
  const verdict = (address: string): Verdict => {
    const e = address ? lookup(current(), address) : undefined;
    return !e || e.action === 'relay' || e.action === 'backup_mx' ? { action: 'continue' } : e;
  };
  /** At the relay stage: relay and a backup MX whose primary is down grant; the rest decline. */
  const relay = async (address: string): Promise<Verdict> => {
    const e = lookup(current(), address);
    if (e?.action === 'relay') return { action: 'accept' };
    if (e?.action !== 'backup_mx') return { action: 'continue' };
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    const p = await primaryUp(domain, e.host, e.port);
    if ('none' in p) return { action: 'continue' };
    if (!p.up) return { action: 'accept' };
    return {
      action: 'defer',
      reply: { code: 451, enhanced: '4.7.1', text: `The primary server ${p.host} of ${domain} answers: deliver there` },
    };
  };
  const handlers: HookHandlers = { rcpt: (_s, i) => verdict(i.arg), relay: (_s, i) => relay(i.arg) };
  if (options.senders === true) handlers.mail = (_s, i) => verdict(i.arg);
  return handlers;
}
