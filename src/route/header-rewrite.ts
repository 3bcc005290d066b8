/**
 * Rewrites the From, Sender, Reply-To and Mail-Followup-To fields of a header section by a route's maps,
 * changing only the addresses: display names (RFC 2047 encoded or not), comments, groups and folding
 * stay byte for byte. Other fields and the body are never touched.
 *
 * Input is the untrusted header section as latin1 text with CRLF line ends (what the spool holds). Pure;
 * a field it cannot parse is left as it is. Never throws.
 */
import addressparser, { type Address } from 'nodemailer/lib/addressparser';
import { parseHeaderBlock, type HeaderField } from '../domain/header.js';
import { rewriteAddress } from './rewrite.js';
import type { RewriteMaps } from './types.js';

/** Which map rewrites which field. */
const FIELD_MAP: Record<string, keyof RewriteMaps> = {
  from: 'from',
  sender: 'sender',
  'reply-to': 'replyTo',
  'mail-followup-to': 'mailFollowupTo',
};

/** Every mailbox address in a parsed address list, groups included. */
function addressesOf(list: Address[]): string[] {
  return list.flatMap((a) => (a.group ? addressesOf(a.group) : a.address ? [a.address] : []));
}

/** Escapes text for use inside a regular expression. */
function quote(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Rewrites the addresses inside one field's raw text. */
function rewriteField(f: HeaderField, map: [string, string][]): string {
  const value = f.raw.slice(f.raw.indexOf(':') + 1);
  let out = f.raw;
  for (const address of new Set(addressesOf(addressparser(value.replace(/\r\n(?=[ \t])/g, ''))))) {
    const next = rewriteAddress(map, address);
    if (next === address) continue;
    const head = out.slice(0, out.indexOf(':') + 1);
    // the address as an angle-addr, or bare between separators; never inside another word
    const re = new RegExp(`(<\\s*)${quote(address)}(\\s*>)|(^|[\\s,:;])${quote(address)}(?=$|[\\s,;])`, 'gi');
    out =
      head +
      out
        .slice(head.length)
        .replace(re, (_m, a1?: string, a2?: string, b1?: string) =>
          a1 !== undefined ? `${a1}${next}${a2}` : `${b1}${next}`,
        );
  }
  return out;
}

/** The addresses of the From field(s) of a header section, for the routes' From filters. */
export function headerFromAddresses(head: string): string[] {
  const from = parseHeaderBlock(head).fields.filter((f) => f.lower === 'from');
  return from.flatMap((f) =>
    addressesOf(addressparser(f.raw.slice(f.raw.indexOf(':') + 1).replace(/\r\n(?=[ \t])/g, ''))),
  );
}

/** Rewrites a header section (everything before the blank line) by the route's maps. */
export function rewriteHeaderSection(head: string, maps: RewriteMaps): string {
  const { fields, consumed } = parseHeaderBlock(head);
  const rewritten = fields.map((f) => {
    const key = FIELD_MAP[f.lower];
    const map = key ? maps[key] : undefined;
    return map?.length ? rewriteField(f, map) : f.raw;
  });
  return rewritten.join('') + head.slice(consumed);
}
