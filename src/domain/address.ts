/**
 * Mailbox syntax: checks and normalises envelope addresses (RFC 5321 paths, RFC 6531 UTF-8).
 *
 * Trusts nothing: input comes from SMTP peers and command lines. Pure; never throws, returns a verdict.
 */

import { domainToASCII } from 'node:url';

/** Result of checking one address: the normalised form (domain lower-case, in A-labels) and whether it needs SMTPUTF8. */
export type AddressCheck = { ok: true; address: string; utf8: boolean } | { ok: false; reason: string };

const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uFFFF]+$/u;
const LABEL = /^(?!-)[A-Za-z0-9\u0080-\uFFFF-]{1,63}(?<!-)$/u;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** Checks a local part: dot-atom or quoted string. */
function localPartOk(local: string): boolean {
  if (local.length === 0 || Buffer.byteLength(local) > 64) return false;
  if (local.startsWith('"')) {
    return /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\uFFFF]|\\[\x20-\x7e])*"$/u.test(local);
  }
  return local.split('.').every((atom) => ATEXT.test(atom));
}

/** Checks a domain: host name labels or an address literal. */
function domainOk(domain: string): boolean {
  if (domain.startsWith('[') && domain.endsWith(']')) {
    const lit = domain.slice(1, -1);
    return IPV4.test(lit) || /^IPv6:[0-9A-Fa-f:.]+$/.test(lit);
  }
  if (domain.length === 0 || Buffer.byteLength(domain) > 253) return false;
  return domain.split('.').every((label) => LABEL.test(label));
}

/** A domain whose ASCII form is itself, lower-cased: letters, digits, hyphens and dots only, no A-label
 * (xn--) that domainToASCII() would check, and a last label that is not a number (which it would read
 * as an IPv4 address). Most domains are; for them that call was the largest cost of checking an address. */
function plainAscii(domain: string): boolean {
  const last = domain.slice(domain.lastIndexOf('.') + 1);
  return /^[A-Za-z0-9.-]+$/.test(domain) && !/(?:^|\.)xn--/i.test(domain) && /[g-wyz]/i.test(last.replace(/^0x/i, ''));
}

/** Checks an envelope address (without angle brackets); "" is the null path and is not accepted here. */
export function checkAddress(input: string): AddressCheck {
  const at = input.lastIndexOf('@');
  if (at <= 0 || at === input.length - 1) return { ok: false, reason: 'address must be local-part@domain' };
  const local = input.slice(0, at);
  const domain = input.slice(at + 1);
  if (/[\x00-\x1f\x7f]/.test(input)) return { ok: false, reason: 'address contains control characters' };
  // U+FFFD is what invalid UTF-8 decodes to: never a real address (it would merge distinct addresses)
  if (input.includes('\ufffd')) return { ok: false, reason: 'address is not valid UTF-8' };
  if (Buffer.byteLength(input) > 254) return { ok: false, reason: 'address is longer than 254 octets' };
  if (!localPartOk(local)) return { ok: false, reason: 'invalid local part' };
  if (!domainOk(domain)) return { ok: false, reason: 'invalid domain' };
  // an internationalised domain is kept in its ASCII form (A-labels), which every hop can carry; only a
  // UTF-8 local part needs SMTPUTF8
  const ascii = domain.startsWith('[') || plainAscii(domain) ? domain : domainToASCII(domain) || domain;
  // eslint-disable-next-line no-control-regex
  const utf8 = /[^\x00-\x7f]/.test(local) || /[^\x00-\x7f]/.test(ascii);
  return { ok: true, address: `${local}@${ascii.toLowerCase()}`, utf8 };
}

/** The domain part of an address, lower-cased; "" for the null sender. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/** Qualifies a bare local name ("root") with a domain, as sendmail does for unqualified addresses. */
export function qualify(address: string, domain: string): string {
  return address.includes('@') ? address : `${address}@${domain}`;
}
