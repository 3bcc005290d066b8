/**
 * The Sendmail milter protocol (version 6) on the wire, the MTA's side: packets are a 32-bit big-endian
 * length, a command or reply byte and its data; strings are NUL-terminated. This module encodes the
 * commands ferrymail sends, splits a byte stream into reply packets and decodes each reply. No I/O.
 *
 * Trusts nothing it decodes: a malformed reply is an Error naming what is wrong (the caller takes the
 * milter's failure action); a length over the limit is refused before it is buffered.
 */

/** Commands (MTA to milter). */
export const CMD = {
  abort: 'A',
  body: 'B',
  connect: 'C',
  macro: 'D',
  eob: 'E',
  helo: 'H',
  header: 'L',
  mail: 'M',
  eoh: 'N',
  optneg: 'O',
  quit: 'Q',
  rcpt: 'R',
  data: 'T',
  unknown: 'U',
} as const;

/** Protocol flags: steps the milter does not want (NO*), or will not answer (NR_*). */
export const P = {
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  SKIP: 0x400,
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  HDR_LEADSPC: 0x100000,
} as const;

/** Every protocol flag this MTA honours (RCPT_REJ is not offered: a refused recipient is not sent). */
export const OFFERED_PROTOCOL = Object.values(P).reduce((a, b) => a | b, 0) & ~P.RCPT_REJ;

/** Actions a milter may take at the end of a message. */
export const ACT = {
  ADDHDRS: 0x1,
  CHGBODY: 0x2,
  ADDRCPT: 0x4,
  DELRCPT: 0x8,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
} as const;

/** Every action this MTA carries out. */
export const OFFERED_ACTIONS = Object.values(ACT).reduce((a, b) => a | b, 0);

/** Macro stages of the option negotiation's symbol lists. */
export const MACRO_STAGE = ['C', 'H', 'M', 'R', 'T', 'E', 'N'] as const;

/** The longest reply packet taken (a replaced body comes in chunks of at most 64 KB each). */
export const MAX_PACKET = 1024 * 1024;

/** One packet: the command byte and its data. */
export function packet(cmd: string, data: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length + 1, 0);
  head.write(cmd, 4, 'latin1');
  return Buffer.concat([head, data]);
}

/** NUL-terminated strings, one after the other. */
export function strings(...s: string[]): Buffer {
  return Buffer.from(s.map((x) => `${x}\0`).join(''), 'latin1');
}

/** The option negotiation: version 6, the actions and protocol steps this MTA offers. */
export function optneg(actions = OFFERED_ACTIONS, protocol = OFFERED_PROTOCOL): Buffer {
  const d = Buffer.alloc(12);
  d.writeUInt32BE(6, 0);
  d.writeUInt32BE(actions >>> 0, 4);
  d.writeUInt32BE(protocol >>> 0, 8);
  return packet(CMD.optneg, d);
}

/** Macros for the command that follows: its command byte, then name and value pairs. */
export function macros(forCmd: string, defs: Record<string, string | undefined>): Buffer {
  const pairs = Object.entries(defs).filter((e): e is [string, string] => e[1] !== undefined);
  return packet(CMD.macro, Buffer.concat([Buffer.from(forCmd, 'latin1'), strings(...pairs.flat())]));
}

/** The connect command: host name, then the family and port and address (IPv4, IPv6, or unknown). */
export function connect(hostname: string, address: string, port: number): Buffer {
  const family = address.includes(':') ? '6' : /^\d+\.\d+\.\d+\.\d+$/.test(address) ? '4' : 'U';
  if (family === 'U') return packet(CMD.connect, Buffer.concat([strings(hostname), Buffer.from('U', 'latin1')]));
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port & 0xffff, 0);
  return packet(CMD.connect, Buffer.concat([strings(hostname), Buffer.from(family, 'latin1'), p, strings(address)]));
}

/** What the milter answered to the option negotiation. */
export interface Negotiated {
  version: number;
  actions: number;
  protocol: number;
  /** Macro names it asked for, by macro stage index. */
  symbols: Map<number, string[]>;
}

/** Decodes the option negotiation's reply. */
export function decodeOptneg(data: Buffer): Negotiated {
  if (data.length < 12) throw new Error('its option negotiation is shorter than 12 bytes');
  const version = data.readUInt32BE(0);
  if (version < 2 || version > 6) throw new Error(`it speaks milter protocol version ${version}, not 2 to 6`);
  const symbols = new Map<number, string[]>();
  for (let at = 12; at + 4 < data.length; ) {
    const stage = data.readUInt32BE(at);
    const end = data.indexOf(0, at + 4);
    if (end < 0) throw new Error('a symbol list is not NUL-terminated');
    symbols.set(
      stage,
      data
        .subarray(at + 4, end)
        .toString('latin1')
        .split(' ')
        .filter(Boolean),
    );
    at = end + 1;
  }
  return { version, actions: data.readUInt32BE(4), protocol: data.readUInt32BE(8), symbols };
}

/** Splits a byte stream into packets; push() returns the whole ones. */
export class PacketReader {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): Array<{ cmd: string; data: Buffer }> {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Array<{ cmd: string; data: Buffer }> = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len < 1 || len > MAX_PACKET) throw new Error(`it sent a packet of ${len} bytes`);
      if (this.buf.length < 4 + len) break;
      out.push({ cmd: String.fromCharCode(this.buf[4]!), data: this.buf.subarray(5, 4 + len) });
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}

/** The NUL-terminated strings of a reply's data. */
export function splitStrings(data: Buffer, want: number): string[] {
  const out: string[] = [];
  let at = 0;
  while (out.length < want) {
    const end = data.indexOf(0, at);
    if (end < 0) throw new Error('a string in its reply is not NUL-terminated');
    out.push(data.subarray(at, end).toString('latin1'));
    at = end + 1;
  }
  return out;
}

/** A decoded reply. */
export type MilterReply =
  | { kind: 'continue' | 'accept' | 'discard' | 'reject' | 'tempfail' | 'progress' | 'skip' | 'connfail' | 'shutdown' }
  | { kind: 'replycode'; code: number; enhanced?: string; text: string }
  | { kind: 'addheader'; name: string; value: string }
  | { kind: 'insheader'; index: number; name: string; value: string }
  | { kind: 'chgheader'; index: number; name: string; value: string }
  | { kind: 'addrcpt'; rcpt: string; args?: string }
  | { kind: 'delrcpt'; rcpt: string }
  | { kind: 'chgfrom'; from: string; args?: string }
  | { kind: 'replbody'; chunk: Buffer }
  | { kind: 'quarantine'; reason: string };

/** Decodes one reply packet. */
export function decodeReply(cmd: string, data: Buffer): MilterReply {
  const simple: Record<string, MilterReply['kind']> = {
    c: 'continue',
    a: 'accept',
    d: 'discard',
    r: 'reject',
    t: 'tempfail',
    p: 'progress',
    s: 'skip',
    f: 'connfail',
    '4': 'shutdown',
  };
  const kind = simple[cmd];
  if (kind) return { kind } as MilterReply;
  switch (cmd) {
    case 'y': {
      const [line] = splitStrings(data, 1);
      const m = /^([45]\d\d)(?:[ -]([45]\.\d{1,3}\.\d{1,3}))?[ -]?([\s\S]*)$/.exec(line!);
      if (!m) throw new Error(`its reply code ${JSON.stringify(line!.slice(0, 40))} is not a 4xx or 5xx reply`);
      // a multi-line reply comes as "550-5.7.1 a\r\n550 5.7.1 b": the door sends one line of it
      const text = m[3]!.split(/\r?\n/)[0]!.replace(/\s+$/, '');
      return { kind: 'replycode', code: Number(m[1]), enhanced: m[2], text };
    }
    case 'h': {
      const [name, value] = splitStrings(data, 2);
      return { kind: 'addheader', name: name!, value: value! };
    }
    case 'i':
    case 'm': {
      if (data.length < 4) throw new Error('a header change without its index');
      const [name, value] = splitStrings(data.subarray(4), 2);
      return { kind: cmd === 'i' ? 'insheader' : 'chgheader', index: data.readUInt32BE(0), name: name!, value: value! };
    }
    case '+':
      return { kind: 'addrcpt', rcpt: splitStrings(data, 1)[0]! };
    case '2': {
      const [rcpt, args] = splitStrings(data, data.indexOf(0) === data.length - 1 ? 1 : 2);
      return { kind: 'addrcpt', rcpt: rcpt!, args };
    }
    case '-':
      return { kind: 'delrcpt', rcpt: splitStrings(data, 1)[0]! };
    case 'e': {
      const [from, args] = splitStrings(data, data.indexOf(0) === data.length - 1 ? 1 : 2);
      return { kind: 'chgfrom', from: from!, args };
    }
    case 'b':
      return { kind: 'replbody', chunk: Buffer.from(data) };
    case 'q':
      return { kind: 'quarantine', reason: splitStrings(data, 1)[0]! };
    default:
      throw new Error(`it sent the unknown reply ${JSON.stringify(cmd)}`);
  }
}
