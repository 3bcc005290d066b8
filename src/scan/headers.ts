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
  if (line.length <= 78) return `${line}\r\n`;
  const words = line.split(' ');
  let out = '';
  let cur = '';
  for (const w of words) {
    if (cur && cur.length + 1 + w.length > 78) {
      out += `${cur}\r\n`;
      cur = `\t${w}`;
    } else {
      cur = cur ? `${cur} ${w}` : w;
    }
  }
  return `${out + cur}\r\n`;
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
  /** The login of a client that authenticated (SMTP AUTH). */
  authUser?: string;
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
  if (r.authUser) text += ` (Authenticated sender: ${clean(r.authUser)})`;
  if (r.tls) text += ` (using ${r.tls.split(' ').map(clean).join(' with cipher ')})`;
  text += ` with ${r.protocol} id ${r.id}`;
  if (r.recipients.length === 1) text += ` for <${clean(r.recipients[0]!)}>`;
  text += `; ${rfc5322Date(r.date)}`;
  return fold(text);
}

/** The address fields whose bare local names are qualified for a local submission. */
const ADDRESS_FIELDS = new Set([
  'from',
  'sender',
  'reply-to',
  'to',
  'cc',
  'bcc',
  'resent-from',
  'resent-sender',
  'resent-to',
  'resent-cc',
  'resent-bcc',
  'mail-followup-to',
]);

/** A local part that may stand alone ("root", "www-data"), as cron and many scripts write addresses. */
const BARE = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+$/;

/**
 * A local submission's address field with each bare local name qualified with `domain` ("From: root
 * (Cron Daemon)" becomes "From: root@HOST (Cron Daemon)", "To: Alice <alice>" gets "<alice@HOST>"), so
 * that a route's maps and the next hop see a whole address; undefined when nothing needs it. Groups and
 * anything it cannot read are left as they are.
 */
export function qualifyField(f: HeaderField, domain: string): string | undefined {
  if (!ADDRESS_FIELDS.has(f.lower)) return undefined;
  const value = fieldValue(f);
  const items = splitTopLevel(value);
  if (!items || items.some((i) => /^[^<"(]*:/.test(i.trim()))) return undefined; // a group
  let changed = false;
  const out = items.map((item) => {
    const q = qualifyItem(item, domain);
    if (q !== item) changed = true;
    return q;
  });
  return changed ? fold(`${f.name}: ${out.map((i) => i.trim()).join(', ')}`) : undefined;
}

/** Splits an address list at the commas outside quotes, comments and angle brackets; null when it
 * cannot be read (unbalanced). */
function splitTopLevel(value: string): string[] | null {
  const items: string[] = [];
  let depth = 0;
  let angle = false;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '\\') i++;
    else if (quoted) quoted = c !== '"';
    else if (c === '"') quoted = true;
    else if (c === '(') depth++;
    else if (c === ')') depth = Math.max(0, depth - 1);
    else if (depth === 0 && c === '<') angle = true;
    else if (depth === 0 && c === '>') angle = false;
    else if (depth === 0 && !angle && c === ',') {
      items.push(value.slice(start, i));
      start = i + 1;
    }
  }
  if (quoted || depth || angle) return null;
  items.push(value.slice(start));
  return items.filter((i) => i.trim() !== '');
}

/** One address of a list, its bare local name qualified. */
function qualifyItem(item: string, domain: string): string {
  const angle = /<([^<>@]*)>/.exec(item);
  if (angle) return BARE.test(angle[1]!) ? item.replace(angle[0], `<${angle[1]}@${domain}>`) : item;
  if (item.includes('@') || item.includes('<')) return item;
  // the address is what is left without comments: one bare word
  const m = /^(\s*)([^\s(]+)(\s*(?:\(.*\))?\s*)$/.exec(item);
  return m && BARE.test(m[2]!) ? `${m[1]}${m[2]}@${domain}${m[3]}` : item;
}
