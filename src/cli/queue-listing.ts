/**
 * Prints the queue (`ferrymail queue list`, `--json`, `mailq`) a slice at a time: the envelopes of one
 * slice are read, given their notes on why they wait, printed and dropped before the next slice is read,
 * so a listing of 100,000 messages holds a few hundred envelopes, not all of them. The output is the
 * same as one built whole.
 *
 * Trusts the spool's envelopes (checked by the codec); corrupt ones are reported through onCorrupt.
 * Fails with the spool's FerryError; what was printed before a failure stays printed.
 */
import type { Config } from '../config/types.js';
import type { CorruptReport, Store } from '../spool/store.js';
import { entryJson, formatList, MAILQ_EMPTY, MAILQ_HEAD, mailqBlock, mailqFoot } from './queue-view.js';
import { type WaitFacts, waitFacts, waitNotes } from './queue-why.js';

export type ListingForm = 'list' | 'mailq' | 'json';

/**
 * Entries printed at a time. V8 builds a long text in pieces and joins them when it is encoded: for a
 * part of 128 entries (about 100 KB) that costs half what it costs for a slice of 512, which no longer
 * fits the processor's caches.
 */
const PRINT = 128;

/** Prints the whole queue in the given form through write. */
export async function printQueue(
  cfg: Config,
  store: Store,
  form: ListingForm,
  write: (chunk: string | Uint8Array) => void,
  onCorrupt: (c: CorruptReport) => void,
): Promise<void> {
  // why mail waits costs a look at the daemon and the routes: only once something waits
  let facts: WaitFacts | undefined;
  const now = Date.now();
  let count = 0;
  let bytes = 0;
  for await (const { entries, corrupt } of store.scan()) {
    for (const c of corrupt) onCorrupt(c);
    if (!entries.length) continue;
    facts ??= await waitFacts(cfg);
    const notes = await waitNotes(entries, facts, store);
    for (let at = 0; at < entries.length; at += PRINT) {
      const part = entries.slice(at, at + PRINT);
      const first = count === 0;
      count += part.length;
      if (form === 'json') {
        // JSON.stringify(all, null, 1) a part at a time: the part's array without its brackets, cut from
        // the encoded bytes (slicing and joining the string V8 built would copy it twice more)
        const text = Buffer.from(
          JSON.stringify(
            part.map((e) => entryJson(e.envelope, e.place, now, notes)),
            null,
            1,
          ),
        );
        write(first ? '[\n' : ',\n');
        write(text.subarray(2, text.length - 2));
      } else if (form === 'mailq') {
        for (const e of part) bytes += e.envelope.size;
        write(Buffer.from(`${first ? MAILQ_HEAD : ''}${part.map((e) => mailqBlock(e, notes)).join('')}`));
      } else write(Buffer.from(formatList(part, now, notes)));
    }
  }
  if (form === 'json') write(count ? '\n]\n' : '[]\n');
  else if (form === 'mailq') write(count ? mailqFoot(bytes, count) : MAILQ_EMPTY);
  else if (!count) write(formatList([], now));
}
