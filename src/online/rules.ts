/**
 * online.rules: the first rule whose conditions all hold names the connection. The conditions on one
 * interface (name glob, kind, up with an address that is not link-local, a default route, gateway,
 * address range) are checked against the facts read from /sys and /proc; the Wi-Fi network name and the
 * probe, which cost a command or a connection, are asked only for an interface that passed the others.
 *
 * Rules come from the validated configuration, facts from the kernel; the SSID and probe answers come
 * through the checks given (missing tools mean "unknown", which does not match). Never throws: a rule
 * that does not hold says why, and "offline" carries the reason of each rule.
 */
import type { InterfaceRule, OnlineState } from '../domain/online.js';
import { inCidr } from '../domain/ip.js';
import { canonical6, type InterfaceFacts } from './interfaces.js';
import type { NmFacts } from './nm.js';

/** The answers that cost something: SSID of an interface (undefined: unknown), a probe (null: connected). */
export interface RuleChecks {
  ssid(iface: string): Promise<string | undefined>;
  probe(target: string): Promise<string | null>;
  /** NetworkManager's facts (undefined: it does not run or did not answer). */
  nm?(): Promise<NmFacts | undefined>;
}

/** Name globs as used in rules. */
function nameMatches(glob: string, name: string): boolean {
  const re = new RegExp(
    `^${glob
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.')}$`,
  );
  return re.test(name);
}

/** An address that can carry traffic beyond the link (not fe80::/10, not 169.254.0.0/16). */
function usable(addr: string): boolean {
  return !inCidr(addr, 'fe80::/10') && !inCidr(addr, '169.254.0.0/16');
}

/** Whether the interface is one the rule is about at all (name, kind, not loopback). */
function concerns(rule: InterfaceRule, f: InterfaceFacts): boolean {
  if (f.kind === 'loopback') return false;
  if (rule.interface && !nameMatches(rule.interface, f.name)) return false;
  return !rule.kind || rule.kind === f.kind;
}

/** The first condition on the facts that fails for this interface, or null when they all hold. */
function factMiss(rule: InterfaceRule, f: InterfaceFacts): string | null {
  if (!f.up) return `${f.name} is down`;
  if (!f.addresses.some(usable)) return `${f.name} has no address`;
  if (rule.default_route !== false && f.gateways.length === 0) return `${f.name} has no default route`;
  if (rule.gateway && !f.gateways.includes(rule.gateway.includes(':') ? canonical6(rule.gateway) : rule.gateway)) {
    return `${f.name}: gateway ${f.gateways.join(',') || 'none'}, not ${rule.gateway}`;
  }
  if (rule.cidr && !f.addresses.some((a) => inCidr(a, rule.cidr!))) return `${f.name}: no address in ${rule.cidr}`;
  return null;
}

/** The SSID condition for one interface: null when it holds. */
async function ssidMiss(rule: InterfaceRule, f: InterfaceFacts, checks: RuleChecks): Promise<string | null> {
  if (rule.ssid === undefined) return null;
  if (f.kind !== 'wireless') return `${f.name} is not wireless`;
  const got = await checks.ssid(f.name);
  if (got === undefined) return `${f.name}: SSID unknown`;
  return got === rule.ssid ? null : `${f.name}: SSID ${JSON.stringify(got)}`;
}

/** The NetworkManager conditions for one interface: null when they hold. Without NetworkManager, a rule
 * that names its facts does not hold, and one that does not is not concerned. */
async function nmMiss(rule: InterfaceRule, f: InterfaceFacts, checks: RuleChecks): Promise<string | null> {
  const named = rule.nm_connection !== undefined || rule.metered !== undefined;
  const counts = rule.nm_connectivity !== false && rule.default_route !== false;
  if (!named && !counts) return null;
  const nm = checks.nm ? await checks.nm() : undefined;
  if (!nm) return named ? `${f.name}: NetworkManager facts unknown` : null;
  if (counts && ['portal', 'limited', 'none'].includes(nm.connectivity))
    return `NetworkManager connectivity is ${nm.connectivity}`;
  const dev = nm.devices.get(f.name);
  if (
    rule.nm_connection !== undefined &&
    !(dev?.connection !== undefined && nameMatches(rule.nm_connection, dev.connection))
  )
    return `${f.name}: NetworkManager connection ${dev?.connection === undefined ? 'none' : JSON.stringify(dev.connection)}`;
  if (rule.metered !== undefined && dev?.metered !== rule.metered)
    return `${f.name}: ${dev?.metered === undefined ? 'metered unknown' : dev.metered ? 'metered' : 'not metered'}`;
  return null;
}

/** Evaluates one rule: the interface that satisfies it, or the reason it does not hold. */
async function evaluate(
  rule: InterfaceRule,
  facts: readonly InterfaceFacts[],
  checks: RuleChecks,
): Promise<{ iface: InterfaceFacts } | { miss: string }> {
  const mine = facts.filter((f) => concerns(rule, f));
  if (mine.length === 0)
    return { miss: `no ${rule.kind ? `${rule.kind} ` : ''}interface${rule.interface ? ` ${rule.interface}` : ''}` };
  // the reason shown is that of the interface that came closest (down < other facts < SSID)
  let miss = { rank: -1, why: '' };
  for (const f of mine) {
    const fact = factMiss(rule, f);
    const why = fact ?? (await ssidMiss(rule, f, checks)) ?? (await nmMiss(rule, f, checks));
    if (why === null) {
      if (!rule.probe) return { iface: f };
      const err = await checks.probe(rule.probe);
      return err === null ? { iface: f } : { miss: `probe ${rule.probe}: ${err}` };
    }
    const rank = fact === null ? 2 : f.up ? 1 : 0;
    if (rank > miss.rank) miss = { rank, why };
  }
  return { miss: miss.why };
}

/** What a holding rule says about itself in the state's "why". */
function describe(n: number, rule: InterfaceRule, f: InterfaceFacts): string {
  const parts = [`interface ${f.name}`];
  if (rule.ssid !== undefined) parts.push(`SSID ${JSON.stringify(rule.ssid)}`);
  if (rule.gateway) parts.push(`gateway ${rule.gateway}`);
  else if (rule.default_route !== false && f.gateways[0]) parts.push(`default route via ${f.gateways[0]}`);
  if (rule.cidr) parts.push(`address in ${rule.cidr}`);
  if (rule.nm_connection !== undefined) parts.push(`NetworkManager connection ${JSON.stringify(rule.nm_connection)}`);
  if (rule.metered !== undefined) parts.push(rule.metered ? 'metered' : 'not metered');
  if (rule.probe) parts.push(`${rule.probe} answers`);
  return `rule ${n} (${rule.connection}): ${parts.join(', ')}`;
}

/** The first rule (in order) that holds names the connection; none: offline, with each rule's reason. */
export async function connectionFromRules(
  rules: readonly InterfaceRule[],
  facts: readonly InterfaceFacts[],
  checks: RuleChecks,
): Promise<OnlineState> {
  const misses: string[] = [];
  for (const [i, rule] of rules.entries()) {
    const r = await evaluate(rule, facts, checks);
    if ('iface' in r) return { online: true, connection: rule.connection, why: describe(i + 1, rule, r.iface) };
    misses.push(`${rule.connection}: ${r.miss}`);
  }
  return { online: false, why: rules.length ? `no rule holds (${misses.join('; ')})` : 'no rules' };
}
