/**
 * The built-in hook `ip_list`: client addresses from a file (one address or CIDR range per line, IPv4 or
 * IPv6, `#` comments), asked at connect. A listed client gets the entry's action: reject (554 5.7.1, or
 * the configured reply) before the greeting, defer, or accept (the connect stage's later hooks, such as a
 * DNSBL, are not asked). The file is read again when it changes (checked at most once a second).
 *
 * Trusts the configuration; the file is the administrator's, its lines are checked: at start a bad line
 * is a configuration error, on a change the list in use stays and the log says why.
 */
import { inCidr, isIP } from '../domain/ip.js';
import { configuredReply, watchedFile } from './builtin-util.js';
import type { HookApi, HookHandlers } from './hook-api.js';
import type { Verdict } from './stages.js';

/** The ranges of a list file, or the first bad line. */
export function parseList(text: string, file: string): string[] {
  const out: string[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const [addr, bits, extra] = line.split('/');
    const family = isIP(addr ?? '');
    const max = family === 4 ? 32 : 128;
    if (!family || extra !== undefined || (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > max)))
      throw new Error(`${file}:${i + 1}: ${JSON.stringify(line)} is not an address or CIDR range`);
    out.push(bits === undefined ? `${addr}/${max}` : line);
  }
  return out;
}

/** The built-in: a connect handler. */
export function ipList(options: Record<string, unknown>, api: HookApi): HookHandlers {
  const file = options.file;
  if (typeof file !== 'string' || !file) throw new Error('options.file must name the list file');
  const action = options.action ?? 'reject';
  if (action !== 'reject' && action !== 'defer' && action !== 'accept')
    throw new Error('options.action must be reject, defer or accept');
  const verdict: Verdict =
    action === 'accept'
      ? { action: 'accept' }
      : action === 'defer'
        ? { action: 'defer', reply: configuredReply(options.reply, '450 4.7.1 Your address is not welcome now', '4') }
        : {
            action: 'reject',
            reply: configuredReply(options.reply, '554 5.7.1 Your address is not welcome here', '5'),
          };
  const current = watchedFile(file, parseList, `ip_list ${file}`, 'list', (r) => r.length, api.log);
  return {
    connect: (s) => (current().some((r) => inCidr(s.peer, r)) ? verdict : { action: 'continue' }),
  };
}
