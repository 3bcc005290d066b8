/**
 * The built-in hook `vet`: the header of mail this network's own people submit, checked at data_end as
 * RFC 5322 section 3.6 asks: From present once and holding an address, Date present once and a date,
 * Message-ID at most once and of the form <left@right>, the fields that may appear at most once
 * appearing so, no line over 998 characters, and the header within options.max_fields fields. With
 * options.fix, a missing From is made of the envelope sender (the door already adds a missing Date and
 * Message-ID for trusted and authenticated clients) instead of refusing the message.
 *
 * By default only sessions that authenticated or come from trusted networks are vetted (options.who:
 * authenticated, trusted, or all). A refusal is 550 5.6.0 naming the problem; the header is untrusted
 * text and only read.
 */
import type { HookApi, HookHandlers } from './hook-api.js';
import type { Verdict } from './stages.js';

/** Fields RFC 5322 3.6 allows at most once. */
const ONCE = [
  'date',
  'from',
  'sender',
  'reply-to',
  'to',
  'cc',
  'bcc',
  'message-id',
  'in-reply-to',
  'references',
  'subject',
];

/** What is wrong with a header (and the envelope sender a missing From could be made of), or nothing. */
export function headerProblem(headers: Array<{ name: string; value: string }>, maxFields: number): string | undefined {
  if (headers.length > maxFields) return `the header has ${headers.length} fields, more than ${maxFields}`;
  const count = (n: string): number => headers.filter((h) => h.name.toLowerCase() === n).length;
  for (const n of ONCE) if (count(n) > 1) return `the header has ${count(n)} ${n} fields; at most one is allowed`;
  const value = (n: string): string | undefined => headers.find((h) => h.name.toLowerCase() === n)?.value;
  const from = value('from');
  if (from === undefined) return 'the header has no From field';
  if (!/[^\s@<>(),;:"]+@[^\s@<>(),;:"]+/.test(from))
    return `the From field holds no address: ${JSON.stringify(from.slice(0, 80))}`;
  const date = value('date');
  if (date === undefined) return 'the header has no Date field';
  if (Number.isNaN(Date.parse(date.replace(/\([^)]*\)/g, '').trim())))
    return `the Date field is no date: ${JSON.stringify(date.slice(0, 80))}`;
  const id = value('message-id');
  if (id !== undefined && !/^\s*<[^\s<>@]+@[^\s<>@]+>\s*$/.test(id))
    return `the Message-ID field is not <left@right>: ${JSON.stringify(id.slice(0, 80))}`;
  return undefined;
}

/** The built-in: a data_end handler. */
export function vet(options: Record<string, unknown>, _api: HookApi): HookHandlers {
  const who = options.who ?? 'local';
  if (!['authenticated', 'trusted', 'local', 'all'].includes(String(who)))
    throw new Error('options.who must be authenticated, trusted, local (both) or all');
  const maxFields = options.max_fields ?? 500;
  if (typeof maxFields !== 'number' || !Number.isInteger(maxFields) || maxFields < 10)
    throw new Error('options.max_fields must be a whole number of 10 or more');
  const fix = options.fix === true;
  return {
    async data_end(s, input) {
      const local = who === 'all' || (who !== 'trusted' && !!s.user) || (who !== 'authenticated' && s.trusted);
      if (!local) return { action: 'continue' };
      const m = input.message!;
      // a line over 998 characters anywhere in the header (RFC 5322 2.1.1)
      let head = '';
      for await (const c of m.read()) {
        head += Buffer.from(c).toString('latin1');
        const end = head.indexOf('\r\n\r\n');
        if (end >= 0) {
          head = head.slice(0, end);
          break;
        }
        if (head.length > 4 * 1024 * 1024) break;
      }
      if (head.split('\r\n').some((l) => l.length > 998)) return refuse('a header line is longer than 998 characters');
      let headers = m.headers;
      const added: Array<{ name: string; value: string }> = [];
      if (fix && !headers.some((h) => h.name.toLowerCase() === 'from') && s.sender) {
        added.push({ name: 'From', value: s.sender });
        headers = [...headers, ...added];
      }
      const problem = headerProblem(headers, maxFields);
      if (problem) return refuse(problem);
      return added.length ? { action: 'continue', headers: { add: added } } : { action: 'continue' };
    },
  };
}

/** The refusal of a message whose header is wrong. */
function refuse(problem: string): Verdict {
  return { action: 'reject', reply: { code: 550, enhanced: '5.6.0', text: `Message header refused: ${problem}` } };
}
