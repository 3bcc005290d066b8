/**
 * The built-in hook `address_map`: what to do with a recipient (or, at MAIL, a sender), by address or
 * domain, from a file (Postfix's check_recipient_access and check_sender_access with a hash table).
 * Each line is a key and an action: `user@example.org`, `@example.org` (the domain), `example.org`
 * (the domain and every subdomain) or `user@` (the local part at any domain), then `accept`, `reject`,
 * `defer` or `continue`, with an optional reply (`reject 550 5.1.1 No such user`). The most specific key
 * wins: the address, then user@, then the domain, then its parents. The file is read again when it
 * changes.
 *
 * Trusts the configuration; the file's lines are checked (a bad line at start is a configuration error;
 * after a change the map in use stays and the log says why).
 */
import { watchedFile } from './builtin-util.js';
import type { HookApi, HookHandlers } from './hook-api.js';
import type { Verdict } from './stages.js';

/** The map's entries by key. */
export type AddressMap = Map<string, Verdict>;

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
    if (!m) throw bad(`${JSON.stringify(line)} is not "KEY ACTION [CODE X.Y.Z text]"`);
    const key = m[1]!.toLowerCase();
    const action = m[2]!.toLowerCase();
    if (!/^[^\s@]*@?[^\s@]*$/.test(key) || key === '@')
      throw bad(`${JSON.stringify(key)} is no address, user@, @domain or domain`);
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
export function lookup(map: AddressMap, address: string): Verdict | undefined {
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

/** The built-in: an rcpt handler (and a mail handler with options.senders). */
export function addressMap(options: Record<string, unknown>, api: HookApi): HookHandlers {
  const file = options.file;
  if (typeof file !== 'string' || !file) throw new Error('options.file must name the map file');
  const current = watchedFile(file, parseMap, `address_map ${file}`, 'map', (m) => m.size, api.log);
  const verdict = (address: string): Verdict =>
    (address ? lookup(current(), address) : undefined) ?? { action: 'continue' };
  const handlers: HookHandlers = { rcpt: (_s, i) => verdict(i.arg) };
  if (options.senders === true) handlers.mail = (_s, i) => verdict(i.arg);
  return handlers;
}
