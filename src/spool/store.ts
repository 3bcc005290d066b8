/**
 * Reads and manages committed messages: list, load, remove, hold, release, and the start-up recovery.
 *
 * Envelope files are untrusted (hand edits, truncation): one that cannot be parsed moves to corrupt/ and
 * is reported, never deleted. release also turns recipients held as uncertain back into queued ones.
 * rm, hold and release take the message's lock (lock.ts); update() expects
 * its caller to hold it. Removal unlinks the envelope first (the commit of the removal), then the data.
 * Errors are FerryError.
 */
import fs from 'node:fs';
import { FerryError, isFerryError, spoolError } from '../errors.js';
import type { Envelope } from '../domain/envelope.js';
import { decodeEnvelope } from './envelope-codec.js';
import { replaceEnvelope } from './envelope-write.js';
import { isId } from './id.js';
import { checkLayout, DirSyncer, type Layout, layoutOf, namesIn } from './layout.js';
import { lock, type Lock } from './lock.js';
import { beginListing, type Brief, briefOf, countStamps, keptBriefs, savedCounts, saveCounts } from './queue-index.js';
import { recoverSpool } from './recovery.js';
import { openSpoolFile } from './safety.js';
import { cutTrailer } from './trailer.js';
import { type RawEnvelope, readRaw, readSlices, startReaderThread, stampOfFile } from './envelope-file.js';

/** Where a message's envelope currently is. */
export type Place = 'queue' | 'hold';

/** A committed message as found in the spool. */
export interface Entry {
  envelope: Envelope;
  place: Place;
}

/** A file that could not be read as an envelope and was moved aside. */
export interface CorruptReport {
  id: string;
  reason: string;
}

/** A spool opened for reading and managing committed messages. */
export interface Store {
  layout: Layout;
  list(): Promise<Slice>;
  /** The queued messages a queue run wants (queuedEntries). */
  queued(select: (b: Brief) => boolean): Promise<Slice>;
  /** The same as list(), a slice at a time (listings of a long queue). Read without stamps: fresh()
   * reads its entries again. */
  scan(size?: number): AsyncGenerator<Slice>;
  get(id: string): Promise<Entry>;
  /** The entry as it is now: the listed one when its envelope file is unchanged since, else re-read. */
  fresh(entry: Entry): Promise<Entry>;
  remove(id: string): Promise<Envelope>;
  /** remove() for a caller that already holds the message's lock (the queue runner). */
  /** Deletes a message whose lock the caller holds and whose place it knows (no re-read). */
  removeLocked(id: string, place?: Place): Promise<void>;
  hold(id: string): Promise<Envelope>;
  release(id: string): Promise<Envelope>;
  /** Writes a changed envelope in place (same place), durably. */
  update(env: Envelope, place: Place): Promise<void>;
  lockMessage(id: string, timeoutMs?: number): Promise<Lock>;
  /** Crash recovery; listCorrupt false skips reading every envelope (a queue run lists them itself),
   * orphans false the look for data no envelope names (a look at every name in four folders). */
  recover(listCorrupt?: boolean, orphans?: boolean): Promise<RecoveryReport>;
  /** The message's header section (through its blank line), read no further than its size. */
  readHead(env: Pick<Envelope, 'id' | 'size'>, max?: number): Promise<string>;
  /** Cuts the envelope that a daemon killed between its mover's rename into queue/ and the cut left
   * behind a queued message's data (writer.ts, deferred), once queue/ is synced; true when it cut. For a
   * caller holding the message's lock. Readers stop at the size anyway; an older version would not. */
  cutBehind(env: Pick<Envelope, 'id' | 'size'>): Promise<boolean>;
}

/** What start-up recovery found and did. */
export interface RecoveryReport {
  tmpRemoved: number;
  orphansRemoved: number;
  /** Answered messages a dead daemon had not yet moved into queue/, moved now (writer.ts, deferred). */
  rolledForward: number;
  corrupt: CorruptReport[];
}

/** Opens the spool at root for reading and management. */
export function openStore(root: string): Store {
  // reading needs nothing created: a spool that does not exist yet is an empty queue; one that exists
  // must be this user's own
  const layout = withSyncers(layoutOf(root));
  checkLayout(layout);
  const s: Store = {
    layout,
    list: () => listAll(layout),
    scan: (size) => scanAll(layout, size, undefined, true),
    queued: (select) => queuedEntries(layout, select),
    get: (id) => getEntry(layout, id),
    fresh: (entry) => {
      const stamp = stamps.get(entry.envelope);
      return stamp !== undefined && stampOfFile(layout.envelope(entry.place, entry.envelope.id)) === stamp
        ? Promise.resolve(entry)
        : getEntry(layout, entry.envelope.id);
    },
    remove: (id) => withLock(s, id, () => removeEntry(layout, id)),
    removeLocked: (id, place = 'queue') => (checkId(id), unlinkEntry(layout, id, place)),
    hold: (id) => withLock(s, id, () => moveEntry(layout, id, 'queue', 'hold')),
    release: (id) => withLock(s, id, () => releaseEntry(layout, id)),
    update: (env, place) => replaceEnvelope(layout, env, place),
    lockMessage: async (id, timeoutMs = 2000) => {
      const l = await lock(root, `msg/${id}`, timeoutMs);
      if (!l) throw new FerryError('locked', `message ${id} is busy (being delivered or changed); try again`);
      return l;
    },
    recover: async (listCorrupt = true, orphans = true) => {
      const report = await recoverSpool(layout, orphans);
      if (listCorrupt) report.corrupt = (await listAll(layout)).corrupt;
      return report;
    },
    readHead: (env, max = 262_144) => readHead(layout, env.id, Math.min(max, env.size)),
    cutBehind: (env) => cutBehind(layout, env),
  };
  return s;
}

/** Store.cutBehind(): a look at the data's size, and only for a file longer than its message the sync
 * of queue/ (the envelope there must be durable before the copy behind the data goes) and the cut. */
async function cutBehind(layout: SyncedLayout, env: Pick<Envelope, 'id' | 'size'>): Promise<boolean> {
  const file = layout.data(env.id);
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st || st.size <= env.size) return false;
  await layout.sync('queue');
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    return fs.fstatSync(fd).isFile() && cutTrailer(fd, env.size);
  } finally {
    fs.closeSync(fd);
  }
}

/** A layout whose directory fsyncs are shared between concurrent callers (removals and updates of many
 * messages in one queue run cost a few fsyncs, not one each). */
type SyncedLayout = Layout & { sync(place: Place): Promise<void> };

function withSyncers(layout: Layout): SyncedLayout {
  return { ...layout, sync: (place) => DirSyncer.of(layout.dir(place)).sync() };
}

/** Runs fn while holding the message's lock. */
async function withLock<T>(s: Store, id: string, fn: () => Promise<T>): Promise<T> {
  checkId(id);
  // a spool that does not exist yet holds no message, and a change creates nothing (not even its locks)
  if (!fs.existsSync(s.layout.root)) throw new FerryError('not-found', `no such message: ${id}`);
  const l = await s.lockMessage(id);
  try {
    return await fn();
  } finally {
    await l.release();
  }
}

/** Refuses anything that is not a queue id before it reaches a path. */
function checkId(id: string): void {
  if (!isId(id)) throw new FerryError('not-found', `no such message: ${JSON.stringify(id)} is not a queue id`);
}

/**
 * Reads and decodes one envelope file; moves it to corrupt/ when it cannot be decoded. An envelope is a
 * few hundred bytes in the owner-only spool: it is read synchronously (one open, read and close, some
 * microseconds) rather than with four thread-pool round trips, which dominated a queue run's cost.
 * dataNames, when given, are the names in msg/ read after the envelope's own listing: an id found there
 * needs no look of its own for its data (the data is created before its envelope and removed after it).
 */
function readEnvelope(
  layout: Layout,
  place: Place,
  id: string,
  dataNames?: { has(id: string): boolean },
): Promise<Envelope | CorruptReport | null> {
  return decodeRead(layout, place, id, readRaw(layout.envelope(place, id)), dataNames);
}

/** The errors of opening or reading something that is not a regular file of the spool owner: a
 * symlink, a folder, a pipe, a socket or a device, or (checked by the stamped read) another's file. */
const NOT_A_FILE = new Set(['ELOOP', 'EPERM', 'EISDIR', 'ESPIPE', 'ENXIO']);

/** readEnvelope() for an envelope file already read. `listed`: read as a listing reads (readListed():
 * no stamp, no look at the owner); what such a read cannot use is read again the usual way before
 * anything is moved aside or reported, so that it is judged by the full check (a read cut short, an odd
 * file). */
async function decodeRead(
  layout: Layout,
  place: Place,
  id: string,
  raw: RawEnvelope,
  dataNames?: { has(id: string): boolean },
  listed = false,
): Promise<Envelope | CorruptReport | null> {
  const again = (): Promise<Envelope | CorruptReport | null> =>
    decodeRead(layout, place, id, readRaw(layout.envelope(place, id)), dataNames);
  if ('code' in raw) {
    if (raw.code === 'ENOENT') return null;
    if (listed) return again();
    if (NOT_A_FILE.has(raw.code)) return moveCorrupt(layout, place, id, 'not a regular file of the spool owner');
    throw spoolError(Object.assign(new Error(raw.message), { code: raw.code }), `read envelope ${id}`);
  }
  try {
    const env = decodeEnvelope(raw.text, id);
    if (raw.stamp) stamps.set(env, raw.stamp);
    if (!dataNames?.has(id) && !fs.existsSync(layout.data(id))) {
      // removed since we read it (removal unlinks the envelope, then the data)?
      if (!fs.existsSync(layout.envelope(place, id))) return null;
      throw new Error('message data file is missing');
    }
    return env;
  } catch (err) {
    return listed ? again() : moveCorrupt(layout, place, id, (err as Error).message);
  }
}

/** Moves an envelope that cannot be used to corrupt/ and says why. */
async function moveCorrupt(layout: Layout, place: Place, id: string, reason: string): Promise<CorruptReport> {
  await fs.promises.rename(layout.envelope(place, id), layout.envelope('corrupt', id)).catch(() => undefined);
  return { id, reason };
}

/** The stamp of each envelope as read (envelope-file.ts). A rewrite renames a new file over it, so any
 * change moves the inode or the times. */
const stamps = new WeakMap<Envelope, string>();

/** A slice of the queue as scan() reads it. */
export interface Slice {
  entries: Entry[];
  corrupt: CorruptReport[];
}

/** The queue ids among the names in one folder, unsorted; none when the folder does not exist yet. */
async function idsIn(layout: Layout, place: Place): Promise<string[]> {
  try {
    return await namesIn(layout.dir(place), isId);
  } catch (err) {
    throw spoolError(err, `list ${place}`);
  }
}

/** The ids in queue/ and hold/, oldest first, and each one's place (names only, no envelope read). */
export type QueueNames = { ids: string[]; places: Place[] };

/** Lists queue/ and hold/ (or the places given). Two arrays side by side rather than an object per
 * message: with 100,000 queued the objects cost a listing some 6 % of its CPU in collections. */
export async function queueNames(layout: Layout, places: readonly Place[] = ['queue', 'hold']): Promise<QueueNames> {
  // a listing of both folders also saves their counts for `status` (queue-index.ts)
  const both = places.includes('queue') && places.includes('hold');
  const before = both ? countStamps(layout) : null;
  let out: QueueNames = { ids: [], places: [] };
  for (const place of places) {
    const ids = (await idsIn(layout, place)).sort();
    out = mergeNames(out, ids, place);
  }
  if (before && !savedCounts(layout)) {
    const held = out.places.filter((p) => p === 'hold').length;
    saveCounts(layout, before, out.ids.length - held, held);
  }
  return out;
}

/** Merges sorted ids of one place into a sorted listing. */
function mergeNames(a: QueueNames, ids: string[], place: Place): QueueNames {
  if (!a.ids.length) return { ids, places: new Array<Place>(ids.length).fill(place) };
  if (!ids.length) return a;
  const out: QueueNames = { ids: [], places: [] };
  let i = 0;
  let j = 0;
  while (i < a.ids.length || j < ids.length) {
    if (j >= ids.length || (i < a.ids.length && a.ids[i]! <= ids[j]!)) {
      out.ids.push(a.ids[i]!);
      out.places.push(a.places[i++]!);
    } else {
      out.ids.push(ids[j++]!);
      out.places.push(place);
    }
  }
  return out;
}

/** How many messages queue/ and hold/ hold, from the names alone (no envelope read, no sort), or
 * from the counts saved when the folders have not changed since (queue-index.ts). */
export async function queueCounts(layout: Layout, now = Date.now()): Promise<{ queued: number; held: number }> {
  const saved = savedCounts(layout, now);
  if (saved) return saved;
  const before = countStamps(layout, now);
  const [queue, hold] = await Promise.all([idsIn(layout, 'queue'), idsIn(layout, 'hold')]);
  if (before) saveCounts(layout, before, queue.length, hold.length, now);
  return { queued: queue.length, held: hold.length };
}

/** The size of a folder that holds some 2,000 names on ext4 (tmpfs: some 3,000). */
const LONG_FOLDER = 65_536;

/**
 * A folder's names, sorted, asked about in rising order (a listing goes through the ids oldest first):
 * each question moves a cursor forward, and one asked out of order is looked up by halving. Built in
 * a sort rather than a Set of 100,000 names, which cost a long listing its start and a collection.
 */
class SortedNames {
  private readonly names: string[];
  private at = 0;
  constructor(names: string[]) {
    this.names = names.sort();
  }
  has(id: string): boolean {
    const n = this.names;
    if (this.at > 0 && n[this.at - 1]! >= id) {
      let lo = 0;
      let hi = n.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (n[mid]! < id) lo = mid + 1;
        else hi = mid;
      }
      return n[lo] === id;
    }
    while (this.at < n.length && n[this.at]! < id) this.at++;
    return n[this.at] === id;
  }
}

/** Reads every message in queue/ and hold/, oldest first, a slice at a time: a listing of a long queue
 * holds one slice of envelopes, not all of them, and the event loop turns between slices. */
async function* scanAll(
  layout: Layout,
  size = 512,
  places: readonly Place[] = ['queue', 'hold'],
  waitsOnIt = false,
): AsyncGenerator<Slice> {
  // a listing someone waits on reads without stamps (they serve fresh(), which a listing never asks)
  // and without a look at each file's owner, when the spool is there to be checked now, before its
  // names are read: the folders of one that did not exist when the store was opened were never looked at
  const mode = waitsOnIt && checkLayout(layout) ? 'listed' : 'stamped';
  // for a listing someone waits on (scan()), when the folder is this large, the reader thread starts
  // while the names are read. Not in the daemon's runs: ext4 never shrinks a folder, so a queue that was
  // long once would start a thread at every run, most of them for a short queue
  const early = waitsOnIt && (fs.statSync(layout.dir('queue'), { throwIfNoEntry: false })?.size ?? 0) >= LONG_FOLDER;
  const thread = early ? startReaderThread() : undefined;
  // one listing of msg/ instead of a look per message for its data, made on the thread pool while the
  // names are read (for a long queue) or the first envelopes are (by a worker when there are many:
  // envelope-file.ts); read here with namesIn(), beside the decoding, it raised the listing's peak memory
  // by a quarter
  const msgNames = (): Promise<string[]> => fs.promises.readdir(layout.dir('msg')).catch(() => []);
  const earlyListing = early ? msgNames() : undefined;
  const names = await queueNames(layout, places).catch(async (err: unknown) => {
    void (await thread)?.worker.terminate();
    throw err;
  });
  const count = names.ids.length;
  const listing = count > size ? (earlyListing ?? msgNames()) : undefined;
  let data: SortedNames | undefined;
  // the folders' paths joined once: a path.join() per name was a twentieth of a long listing's main thread
  const folder = { queue: `${layout.dir('queue')}/`, hold: `${layout.dir('hold')}/` };
  const fileOf = (i: number): string => folder[names.places[i]!] + names.ids[i]!;
  for await (const [at, raws] of readSlices(count, fileOf, size, thread, mode)) {
    if (listing) data ??= new SortedNames(await listing);
    const slice: Slice = { entries: [], corrupt: [] };
    for (const [i, raw] of raws.entries()) {
      const id = names.ids[at + i]!;
      const place = names.places[at + i]!;
      const r = await decodeRead(layout, place, id, raw, data, mode === 'listed');
      if (r === null) continue;
      if ('reason' in r) slice.corrupt.push(r);
      else slice.entries.push({ envelope: r, place });
    }
    yield slice;
    await new Promise((r) => setImmediate(r));
  }
}

/**
 * The queued messages (not the held ones) that select() wants, oldest first, read whole, and the
 * envelopes found corrupt (moved to corrupt/) on the way; select() sees
 * the brief of every queued message once. The briefs come from the last listing when queue/ has not
 * changed since (queue-index.ts): then only the wanted envelopes are read.
 */
async function queuedEntries(layout: Layout, select: (b: Brief) => boolean): Promise<Slice> {
  const entries: Entry[] = [];
  const corrupt: CorruptReport[] = [];
  const briefs = keptBriefs(layout);
  if (briefs) {
    let n = 0;
    for (const b of briefs) {
      if (!select(b)) continue;
      if (++n % 64 === 0) await new Promise((r) => setImmediate(r));
      const r = await readEnvelope(layout, 'queue', b.id);
      if (r && 'reason' in r) corrupt.push(r);
      else if (r) entries.push({ envelope: r, place: 'queue' });
    }
    return { entries, corrupt };
  }
  const keep = beginListing(layout);
  const fresh: Brief[] = [];
  for await (const slice of scanAll(layout, 64, ['queue'])) {
    corrupt.push(...slice.corrupt);
    for (const e of slice.entries) {
      const b = briefOf(e.envelope);
      fresh.push(b);
      if (select(b)) entries.push(e);
    }
  }
  keep(fresh);
  return { entries, corrupt };
}

/** Lists every message in queue/ and hold/, oldest first. */
async function listAll(layout: Layout): Promise<Slice> {
  const all: Slice = { entries: [], corrupt: [] };
  for await (const slice of scanAll(layout, 64)) {
    for (const e of slice.entries) all.entries.push(e);
    for (const c of slice.corrupt) all.corrupt.push(c);
  }
  return all;
}

/** Finds one message by id. */
async function getEntry(layout: Layout, id: string): Promise<Entry> {
  checkId(id);
  for (const place of ['queue', 'hold'] as const) {
    const r = await readEnvelope(layout, place, id);
    if (r && 'reason' in r)
      throw new FerryError('spool-io', `message ${id} is corrupt (${r.reason}); moved to corrupt/`);
    if (r) return { envelope: r, place };
  }
  throw new FerryError('not-found', `no such message: ${id}`);
}

/** Deletes a message: envelope first (durably), then its data. */
async function removeEntry(layout: SyncedLayout, id: string): Promise<Envelope> {
  const { envelope, place } = await getEntry(layout, id);
  await unlinkEntry(layout, id, place);
  return envelope;
}

/** Unlinks a message's envelope (durably), then its data. */
async function unlinkEntry(layout: SyncedLayout, id: string, place: Place): Promise<void> {
  try {
    // unlinks stay asynchronous: freeing a file's blocks can take long (discard, journal), and the
    // envelope's unlink waits on the directory's fsync of other removals
    await fs.promises.unlink(layout.envelope(place, id));
    await layout.sync(place);
    await fs.promises.unlink(layout.data(id)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  } catch (err) {
    throw spoolError(err, `remove ${id}`);
  }
}

/** Moves an envelope between queue/ and hold/ with one rename. */
async function moveEntry(layout: SyncedLayout, id: string, from: Place, to: Place): Promise<Envelope> {
  const { envelope, place } = await getEntry(layout, id);
  if (place !== from) {
    throw new FerryError('not-found', `message ${id} is ${place === 'hold' ? 'already held' : 'not held'}`);
  }
  try {
    await fs.promises.rename(layout.envelope(from, id), layout.envelope(to, id));
    await Promise.all([layout.sync(from), layout.sync(to)]);
  } catch (err) {
    throw spoolError(err, `move ${id} to ${to}`);
  }
  return envelope;
}

/**
 * Releases a message: out of hold/, and every recipient held as uncertain back to queued (a person has
 * decided it should be tried again). A message in queue/ with uncertain recipients is released in place.
 */
async function releaseEntry(layout: SyncedLayout, id: string): Promise<Envelope> {
  const { envelope, place } = await getEntry(layout, id);
  const uncertain = envelope.recipients.filter((r) => r.state === 'uncertain');
  if (place === 'queue' && !uncertain.length) throw new FerryError('not-found', `message ${id} is not held`);
  for (const r of uncertain) {
    r.state = 'queued';
    delete r.nextAttempt;
  }
  if (uncertain.length) await replaceEnvelope(layout, envelope, place);
  return place === 'hold' ? moveEntry(layout, id, 'hold', 'queue') : envelope;
}

/** Reads the start of a message's data up to the end of its header section (synchronously, in 16 KB
 * steps while the blank line is not found: see readEnvelope for why). */
async function readHead(layout: Layout, id: string, max: number): Promise<string> {
  checkId(id);
  let fd: number;
  try {
    fd = openSpoolFile(layout.data(id));
  } catch (err) {
    throw spoolError(err, `read message ${id}`);
  }
  try {
    let text = '';
    for (let pos = 0; pos < max; ) {
      const want = Math.min(pos === 0 ? 16_384 : 65_536, max - pos);
      const buf = Buffer.allocUnsafe(want);
      const got = fs.readSync(fd, buf, 0, want, pos);
      if (got === 0) break;
      text += buf.toString('latin1', 0, got);
      pos += got;
      const end = text.indexOf('\r\n\r\n', Math.max(0, text.length - got - 3));
      if (end >= 0) return text.slice(0, end + 2);
    }
    return text;
  } catch (err) {
    throw spoolError(err, `read message ${id}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** The result for one id of an rm / hold / release. */
export interface ChangeResult {
  id: string;
  ok: boolean;
  error?: string;
  code?: string;
  envelope?: Envelope;
}

/** Runs rm / hold / release for each id, collecting per-id results (never throws for one id). */
export async function applyChange(
  store: Store,
  cmd: 'rm' | 'hold' | 'release',
  ids: string[],
): Promise<ChangeResult[]> {
  const out: ChangeResult[] = [];
  for (const id of ids) {
    try {
      const env =
        cmd === 'rm' ? await store.remove(id) : cmd === 'hold' ? await store.hold(id) : await store.release(id);
      out.push({ id, ok: true, envelope: env });
    } catch (err) {
      out.push({ id, ok: false, error: (err as Error).message, code: isFerryError(err) ? err.code : 'internal' });
    }
  }
  return out;
}
