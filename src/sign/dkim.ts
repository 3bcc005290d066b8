/**
 * DKIM signing (RFC 6376, relaxed/relaxed; rsa-sha256, and ed25519-sha256 from RFC 8463) of a message
 * whose body can be read twice: once to hash it, once to send it. The signature field goes in front of
 * the header section, so the body hash must be known before the first byte leaves; a signer that reads
 * the message once (as nodemailer's does) has to hold the body until its end. Reading the spool file
 * twice instead keeps only the header section and the stream buffers in memory, whatever the size.
 *
 * Trusts: the header section and body are untrusted message bytes (latin1 text, CRLF line ends as the
 * spool holds them; a bare LF also ends a line here, as it will on the wire); the key settings are the
 * administrator's, already checked for shape by config/. Fails by throwing an Error whose message says
 * what is wrong with the key (never its content); the caller must then send nothing.
 */
import type { KeyObject } from 'node:crypto';
import { cryptoModule } from '../lazy-node.js';
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { parseHeaderBlock, type HeaderField } from '../domain/header.js';
import type { DkimAlgorithm, DkimSettings } from '../route/types.js';

/** Header fields signed when a route names none (RFC 6376 section 5.4.1's list, the ones that exist). */
export const DEFAULT_SIGNED_HEADERS = [
  'from',
  'sender',
  'reply-to',
  'subject',
  'date',
  'message-id',
  'to',
  'cc',
  'mime-version',
  'content-type',
  'content-transfer-encoding',
  'content-id',
  'content-description',
  'resent-date',
  'resent-from',
  'resent-sender',
  'resent-to',
  'resent-cc',
  'resent-message-id',
  'in-reply-to',
  'references',
  'list-id',
  'list-help',
  'list-unsubscribe',
  'list-subscribe',
  'list-post',
  'list-owner',
  'list-archive',
];

/** A key ready to sign with. */
export interface DkimKey {
  settings: DkimSettings;
  algorithm: DkimAlgorithm;
  key: KeyObject;
}

/** Why a key file may not be used (missing, not a file, readable by others), or undefined. */
export function keyFileProblem(file: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    return `key_file ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  if (!st.isFile()) return `key_file ${file} is not a file`;
  if ((st.mode & 0o077) !== 0) return `key_file ${file} must be readable by its owner only (chmod 600)`;
  return undefined;
}

/** Keys already parsed, by file, with the file's identity when read (a changed file is read again). */
const parsed = new Map<string, { stamp: string; algorithm: DkimKey['algorithm']; key: KeyObject }>();

/** Reads and checks a route's key: file permissions, a private key, of the type and size the algorithm
 * needs. The permissions are checked every time; the key is parsed again only when the file changed. */
export function loadDkimKey(s: DkimSettings): DkimKey {
  const problem = keyFileProblem(s.keyFile);
  if (problem) throw new Error(problem);
  const st = fs.statSync(s.keyFile);
  const stamp = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${s.algorithm ?? ''}`;
  const known = parsed.get(s.keyFile);
  if (known?.stamp === stamp) return { settings: s, algorithm: known.algorithm, key: known.key };
  const fresh = parseKey(s);
  parsed.set(s.keyFile, { stamp, algorithm: fresh.algorithm, key: fresh.key });
  return fresh;
}

/** Reads and parses a key file. */
function parseKey(s: DkimSettings): DkimKey {
  let text: Buffer;
  try {
    text = fs.readFileSync(s.keyFile);
  } catch (err) {
    throw new Error(`key_file ${s.keyFile} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let key: KeyObject;
  try {
    key = cryptoModule().createPrivateKey(
      text.includes('-----BEGIN') ? text : { key: text, format: 'der', type: 'pkcs8' },
    );
  } catch {
    // the library's message may quote the file: say only what is wrong
    throw new Error(`key_file ${s.keyFile} holds no private key in PEM or DER (PKCS#8) form`);
  }
  const type = key.asymmetricKeyType;
  const algorithm = s.algorithm ?? (type === 'ed25519' ? 'ed25519-sha256' : 'rsa-sha256');
  if (algorithm === 'rsa-sha256' && type !== 'rsa')
    throw new Error(`key_file ${s.keyFile} holds a key of type ${type}, not the RSA key rsa-sha256 needs`);
  if (algorithm === 'ed25519-sha256' && type !== 'ed25519')
    throw new Error(`key_file ${s.keyFile} holds a key of type ${type}, not the Ed25519 key ed25519-sha256 needs`);
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (type === 'rsa' && bits < 1024)
    throw new Error(
      `key_file ${s.keyFile} holds a ${bits}-bit RSA key; verifiers refuse keys under 1024 bits (use 2048)`,
    );
  return { settings: s, algorithm, key };
}

/**
 * The relaxed body canonicalization (RFC 6376 section 3.4.4), hashed as the bytes arrive: trailing
 * whitespace of each line dropped, runs of SP/HTAB inside a line made one SP, empty lines at the end
 * ignored, a CRLF added after a last line that has none. Holds at most one CR between chunks.
 */
export class RelaxedBodyHash {
  private hash = cryptoModule().createHash('sha256');
  private pendingCr = false;
  private pendingWsp = false;
  private lineHasContent = false;
  private emptyLines = 0;
  private skipFirst: boolean;

  /** skipSeparator: the stream starts with the empty line that ends the header section; it is not body. */
  constructor(skipSeparator = false) {
    this.skipFirst = skipSeparator;
  }

  /** Feeds the next bytes of the body. */
  update(chunk: Buffer): void {
    let text = (this.pendingCr ? '\r' : '') + chunk.toString('latin1');
    this.pendingCr = text.endsWith('\r');
    if (this.pendingCr) text = text.slice(0, -1);
    let start = 0;
    for (let lf = text.indexOf('\n'); lf >= 0; lf = text.indexOf('\n', start)) {
      this.content(text.slice(start, lf > start && text[lf - 1] === '\r' ? lf - 1 : lf));
      this.endLine();
      start = lf + 1;
    }
    this.content(text.slice(start));
  }

  /** Ends the body; returns the base64 body hash. */
  digest(): string {
    if (this.pendingCr) this.content('\r');
    if (this.lineHasContent) this.hash.update('\r\n');
    return this.hash.digest('base64');
  }

  /** A piece of one line (no LF in it). */
  private content(piece: string): void {
    if (!piece) return;
    let s = piece.replace(/[ \t]+/g, ' ');
    if (s.startsWith(' ')) {
      this.pendingWsp = true;
      s = s.slice(1);
    }
    if (!s) return;
    const trailing = s.endsWith(' ');
    if (trailing) s = s.slice(0, -1);
    if (!this.lineHasContent) {
      // empty lines count only once something follows them
      if (this.emptyLines) this.hash.update('\r\n'.repeat(this.emptyLines));
      this.emptyLines = 0;
      this.lineHasContent = true;
    }
    this.hash.update((this.pendingWsp ? ' ' : '') + s, 'latin1');
    this.pendingWsp = trailing;
  }

  /** The end of a line. */
  private endLine(): void {
    if (this.lineHasContent) this.hash.update('\r\n');
    else if (this.skipFirst) this.skipFirst = false;
    else this.emptyLines++;
    this.skipFirst = false;
    this.lineHasContent = false;
    this.pendingWsp = false;
  }
}

/** Hashes what follows a header section (the empty separator line, then the body) from a stream. */
export async function bodyHashOf(rest: Readable): Promise<string> {
  const h = new RelaxedBodyHash(true);
  for await (const chunk of rest) h.update(chunk as Buffer);
  return h.digest();
}

/** The relaxed canonical form of one header field (RFC 6376 section 3.4.2), without its line end. */
export function relaxedHeader(raw: string): string {
  const colon = raw.indexOf(':');
  const name = raw
    .slice(0, colon)
    .replace(/[ \t]+$/, '')
    .toLowerCase();
  const value = raw
    .slice(colon + 1)
    .replace(/\r?\n/g, '')
    .replace(/[ \t]+/g, ' ')
    .replace(/^ | $/g, '');
  return `${name}:${value}`;
}

/** The h= list: each signed field as often as it occurs, then From once more (so no From can be added). */
function signedNames(fields: HeaderField[], wanted: string[]): string[] {
  const names: string[] = [];
  for (const w of new Set(['from', ...wanted])) for (const f of fields) if (f.lower === w) names.push(w);
  return [...names, 'from'];
}

/** The canonical header data the h= list selects: each name takes the next occurrence from the bottom. */
function selectedHeaders(fields: HeaderField[], names: string[]): string {
  const used = new Map<string, number>();
  let out = '';
  for (const n of names) {
    let i = used.get(n) ?? fields.length;
    do i--;
    while (i >= 0 && fields[i]!.lower !== n);
    // the next search for this name starts above the one found (none found: nothing is left)
    used.set(n, Math.max(i, 0));
    if (i >= 0) out += `${relaxedHeader(fields[i]!.raw)}\r\n`;
  }
  return out;
}

/** Folds tag=value pairs into a field no wider than 78 columns; long values break where FWS may go. */
function foldTags(tags: [string, string][]): string {
  const tokens: { text: string; sep: string }[] = [];
  tags.forEach(([t, v], k) => {
    const pieces = t === 'h' ? v.split(/(?<=:)/) : t === 'b' || t === 'bh' ? (v.match(/.{1,64}/g) ?? ['']) : [v];
    pieces.forEach((p, j) => {
      tokens.push({
        text: (j === 0 ? `${t}=` : '') + p + (j === pieces.length - 1 && k < tags.length - 1 ? ';' : ''),
        sep: j === 0 ? ' ' : '',
      });
    });
  });
  let out = 'DKIM-Signature:';
  let width = out.length;
  for (const tok of tokens) {
    if (width + tok.sep.length + tok.text.length > 78) {
      out += `\r\n ${tok.text}`;
      width = 1 + tok.text.length;
    } else {
      out += tok.sep + tok.text;
      width += tok.sep.length + tok.text.length;
    }
  }
  return out;
}

/** The DKIM-Signature field (ending in CRLF) for a header section and the hash of its body. */
export function signatureField(head: string, bodyHash: string, k: DkimKey, now = Date.now()): string {
  const { fields } = parseHeaderBlock(head);
  const names = signedNames(fields, k.settings.headers);
  const tags: [string, string][] = [
    ['v', '1'],
    ['a', k.algorithm],
    ['c', 'relaxed/relaxed'],
    ['d', k.settings.domain],
    ['s', k.settings.selector],
    ['t', String(Math.floor(now / 1000))],
    ['h', names.join(':')],
    ['bh', bodyHash],
  ];
  const unsigned = foldTags([...tags, ['b', '']]);
  const data = Buffer.from(selectedHeaders(fields, names) + relaxedHeader(unsigned), 'latin1');
  const b =
    k.algorithm === 'rsa-sha256'
      ? cryptoModule().sign('sha256', data, k.key).toString('base64')
      : cryptoModule().sign(null, cryptoModule().createHash('sha256').update(data).digest(), k.key).toString('base64');
  return `${foldTags([...tags, ['b', b]])}\r\n`;
}
