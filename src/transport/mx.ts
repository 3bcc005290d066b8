/**
 * Where mail for a domain goes (RFC 5321 section 5): its MX hosts in preference order (hosts of equal
 * preference in random order), the domain itself when it has no MX record, nowhere when it publishes a
 * null MX (RFC 7505). The resolver is injectable so that tests need no DNS.
 *
 * Trusts the resolver's answers as far as DNS can be trusted: host names are only used to connect to.
 * Never throws: a lookup that fails for now is a temporary failure, a domain that does not exist a
 * permanent one.
 */
import { promises as dns } from 'node:dns';
import { domainToASCII } from 'node:url';

/** The part of a DNS resolver MX delivery needs (node:dns/promises fits). */
export interface MxResolver {
  resolveMx(domain: string): Promise<{ exchange: string; priority: number }[]>;
}

/** Where to deliver a domain's mail, or why not. */
export type MxAnswer = { hosts: string[] } | { permfail: string } | { tempfail: string };

/** The system resolver with a bounded time per query. */
export function systemResolver(timeoutMs = 10_000): MxResolver {
  const r = new dns.Resolver({ timeout: Math.min(timeoutMs, 5000), tries: 2 });
  return { resolveMx: (d) => r.resolveMx(d) };
}

/** The domain in A-labels, lower case ("" when it cannot be converted). */
export function asciiDomain(domain: string): string {
  if (domain.startsWith('[')) return domain;
  return (domainToASCII(domain) || '').toLowerCase();
}

/** An address with its domain in A-labels (the local part as it is); "" stays "". */
export function asciiAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address;
  return `${address.slice(0, at)}@${asciiDomain(address.slice(at + 1)) || address.slice(at + 1)}`;
}

/** Shuffles hosts of equal preference, keeps the order of preferences. */
function ordered(records: { exchange: string; priority: number }[]): string[] {
  const shuffled = records.map((r) => ({ r, k: Math.random() }));
  shuffled.sort((a, b) => a.r.priority - b.r.priority || a.k - b.k);
  return shuffled.map((x) => x.r.exchange.replace(/\.$/, '').toLowerCase());
}

/** Looks up where a domain's mail goes. */
export async function lookupMx(resolver: MxResolver, domain: string): Promise<MxAnswer> {
  const ascii = asciiDomain(domain);
  if (!ascii) return { permfail: `553 5.1.2 ${domain} is not a valid domain` };
  const literal = /^\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]$/.exec(ascii);
  if (literal) return { hosts: [literal[1]!] };
  let records: { exchange: string; priority: number }[];
  try {
    records = await resolver.resolveMx(ascii);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENODATA') return { hosts: [ascii] }; // no MX: the domain's own address (implicit MX)
    if (code === 'ENOTFOUND') return { permfail: `550 5.1.2 domain ${ascii} does not exist` };
    return { tempfail: `451 4.4.3 cannot look up the MX of ${ascii} (${code ?? 'error'})` };
  }
  if (records.length === 0) return { hosts: [ascii] };
  if (records.some((r) => r.exchange === '' || r.exchange === '.')) {
    return { permfail: `556 5.1.10 ${ascii} accepts no mail (null MX)` };
  }
  return { hosts: ordered(records) };
}
