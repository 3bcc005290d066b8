/**
 * Header section parsing and the header lines ferrymail adds (Received, Date, Message-ID, From).
 *
 * Input is untrusted message text as bytes decoded latin1 (so every byte survives a round trip). Pure:
 * no I/O, never throws on bad input; a line that is not a header field ends the header section, as in
 * Postfix's cleanup.
 */
import addressparser, { type Address } from 'nodemailer/lib/addressparser';
import { fieldValue, parseHeaderBlock, type HeaderField } from '../domain/header.js';

export { fieldValue, parseHeaderBlock, type HeaderField };

/** Collects the mailbox addresses of the named fields (To, Cc, Bcc for sendmail -t). */
export function addressesIn(fields: HeaderField[], names: string[]): string[] {
  const out: string[] = [];
  const walk = (list: Address[]): void => {
    for (const a of list) {
      if (a.group) walk(a.group);
      else if (a.address) out.push(a.address);
      // a bare local name ("To: root", as cron writes it) is parsed as a display name; callers qualify it
      else if (a.name && /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$/.test(a.name)) out.push(a.name);
    }
  };
  for (const f of fields) {
    if (names.includes(f.lower)) walk(addressparser(Buffer.from(fieldValue(f), 'latin1').toString('utf8')));
  }
  return out;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Formats a date as RFC 5322 wants it, in local time with its offset. */
export function rfc5322Date(d: Date): string {
  const pad = (n: number): string => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const abs = Math.abs(off);
  return (
    `${DAYS[d.getDay()]}, ${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`
  );
}

/** Encodes a display name: as is when plain, quoted when it has specials, RFC 2047 when not ASCII. */
export function displayName(name: string): string {
  const clean = name.replace(/[\r\n]+/g, ' ').trim();
  if (/[^\x20-\x7e]/.test(clean)) return `=?UTF-8?B?${Buffer.from(clean, 'utf8').toString('base64')}?=`;
  if (/^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*$/.test(clean)) return clean;
  return `"${clean.replace(/(["\\])/g, '\\$1')}"`;
}

/** Folds a header line at spaces so no line passes 78 characters where it can be helped. */
export function fold(line: string): string {
  if (line.length <= 78) return line + '\r\n';
  const words = line.split(' ');
  let out = '';
  let cur = '';
  for (const w of words) {
    if (cur && cur.length + 1 + w.length > 78) {
      out += cur + '\r\n';
      cur = '\t' + w;
    } else {
      cur = cur ? `${cur} ${w}` : w;
    }
  }
  return out + cur + '\r\n';
}

/** Facts for the Received header. */
export interface ReceivedInfo {
  hostname: string;
  id: string;
  protocol: string;
  date: Date;
  helo?: string;
  peer?: string;
  clientName?: string;
  uid?: number;
  user?: string;
  /** Named in "for" only when there is exactly one. */
  recipients: string[];
  /** "VERSION CIPHER", e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384". */
  tls?: string;
}

/** Builds the Received header (RFC 5321 4.4) for one message. */
export function receivedHeader(r: ReceivedInfo): string {
  const clean = (s: string): string => s.replace(/[^\x21-\x7e]/g, '?').slice(0, 255);
  let text = 'Received:';
  if (r.peer) {
    const name = r.clientName ? `${clean(r.clientName)} ` : '';
    text += ` from ${clean(r.helo ?? 'unknown')} (${name}[${r.peer}])`;
  } else if (r.helo) {
    text += ` from ${clean(r.helo)}`;
  }
  text += ` by ${r.hostname} (ferrymail)`;
  if (r.uid !== undefined) text += ` (uid ${r.uid}${r.user ? `, ${clean(r.user)}` : ''})`;
  if (r.tls) text += ` (using ${r.tls.split(' ').map(clean).join(' with cipher ')})`;
  text += ` with ${r.protocol} id ${r.id}`;
  if (r.recipients.length === 1) text += ` for <${clean(r.recipients[0]!)}>`;
  text += `; ${rfc5322Date(r.date)}`;
  return fold(text);
}
