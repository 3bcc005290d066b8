/**
 * A message as a local mailbox keeps it: Return-Path and Delivered-To first (as Postfix's local(8)
 * writes them), line ends as LF, and for an mbox a From_ line and ">From " quoting (mboxrd) of every line
 * that could be taken for the start of another message. A message that already carries a Delivered-To
 * for this recipient has been here before: a forwarding loop.
 *
 * Works on the whole message in memory (the agent has it all before it writes anything). Pure; never
 * throws.
 */
import { fromLineOf } from '../pipe.js';

/** The mbox From_ line of a sender at a time (asctime form, UTC, as Postfix and procmail write it). */
export function fromLine(sender: string, at: Date): string {
  return fromLineOf(/\s/.test(sender) ? '' : sender, at);
}

/** The end of the header section (index of the blank line's start), or the message's length. */
function headerEnd(m: Buffer): number {
  const crlf = m.indexOf('\r\n\r\n');
  const lf = m.indexOf('\n\n');
  const ends = [crlf, lf].filter((i) => i >= 0);
  return ends.length ? Math.min(...ends) : m.length;
}

/** True when the header section holds a Delivered-To naming this recipient. */
export function seenHere(message: Buffer, recipient: string): boolean {
  const head = message.subarray(0, headerEnd(message)).toString('latin1');
  const want = recipient.toLowerCase();
  for (const m of head.matchAll(/^delivered-to:[ \t]*(.*(?:\r?\n[ \t].*)*)/gim))
    if (m[1]!.replace(/\s+/g, '').replace(/^<|>$/g, '').toLowerCase() === want) return true;
  return false;
}

/** What goes into the mailbox. */
export interface MailboxForm {
  data: Buffer;
  /** The From_ line it starts with (mbox only). */
  fromLine?: string;
}

/** The message as the mailbox keeps it; `mbox` adds the From_ line, quoting and the closing blank line. */
export function mailboxForm(
  message: Buffer,
  o: { sender: string; recipient: string; mbox: boolean; now?: Date },
): MailboxForm {
  const trace = `Return-Path: <${o.sender}>\nDelivered-To: ${o.recipient}\n`;
  const lines = toLf(message);
  if (!o.mbox) return { data: Buffer.concat([Buffer.from(trace), lines]) };
  const from = fromLine(o.sender, o.now ?? new Date());
  const body = quoteFrom(lines);
  // one blank line ends every message of an mbox: the message's own last line ends first
  const end = body.length && body[body.length - 1] !== 0x0a ? '\n\n' : '\n';
  return { data: Buffer.concat([Buffer.from(from + trace), body, Buffer.from(end)]), fromLine: from };
}

/** CRLF to LF (a lone CR stays). */
function toLf(m: Buffer): Buffer {
  if (m.indexOf('\r\n') < 0) return m;
  const out = Buffer.allocUnsafe(m.length);
  let o = 0;
  for (let i = 0; i < m.length; i++) {
    if (m[i] === 0x0d && m[i + 1] === 0x0a) continue;
    out[o++] = m[i]!;
  }
  return out.subarray(0, o);
}

/** ">" before every line that starts with any number of ">" and then "From " (mboxrd). */
function quoteFrom(m: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= m.length; i = m.indexOf(0x0a, i) + 1 || m.length + 1) {
    if (i >= m.length) break;
    let j = i;
    while (m[j] === 0x3e) j++;
    if (m.subarray(j, j + 5).toString('latin1') === 'From ') {
      parts.push(m.subarray(start, i), Buffer.from('>'));
      start = i;
    }
  }
  parts.push(m.subarray(start));
  return Buffer.concat(parts);
}
