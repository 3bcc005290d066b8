/**
 * Crash recovery of a spool, by the daemon at start and by every queue run under the runner lock:
 * temporary files and lock directories of processes that are gone, stale locks, drop files a killed
 * pickup left half taken, the data of messages whose writer died before the commit (its claim in tmp/),
 * and data files no envelope refers to (after a grace period, and a second look; never a live writer's).
 * A data file that carries a whole envelope behind its message (a deferred commit that had synced, so
 * its client may have been told "accepted": writer.ts, trailer.ts) is rolled forward into queue/
 * instead, under the message's lock.
 *
 * Trusts the spool (checked by the caller). Files of live processes are left alone. Fails with the file
 * system's error.
 */
import fs from 'node:fs';
import { recoverPickups } from './drop.js';
import { replaceEnvelope } from './envelope-write.js';
import { isId } from './id.js';
import { DirSyncer, type Layout, namesIn } from './layout.js';
import { sweepLocks, tryLock } from './lock.js';
import { envelopeBehind } from './trailer.js';
import type { RecoveryReport } from './store.js';
import { ownClaims } from './writer.js';

/** True when a process with this pid exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const ORPHAN_GRACE_MS = 60_000;

/** Recovery after a crash, by the daemon at start and by every queue run: drops temp files and lock
 * directories of dead processes, and data files no envelope refers to. */
export async function recoverSpool(layout: Layout, orphans = true): Promise<RecoveryReport> {
  const report: RecoveryReport = { tmpRemoved: 0, orphansRemoved: 0, rolledForward: 0, corrupt: [] };
  // ids whose data a live writer is still writing (its claim ID.PID.env, writer.ts), found first, so that
  // a dead claim never takes data another writer's live claim names
  const names = await namesIn(layout.dir('tmp'));
  const claimed = liveClaims(names);
  for (const name of names) {
    // ID.PID.env (a claim), ID.PID.new, ID.PID.upd, ID.PID.msg (older versions), lock.PID.RAND/
    const [id = '', pidText, kind] = name.split('.');
    if (isLive(name, Number(pidText))) continue;
    // a claim of a dead writer: its message goes forward if its data carries a whole envelope, else it
    // was never acknowledged and its data goes with it
    if (kind === 'env' && isId(id) && !claimed.has(id) && !committed(layout, id)) {
      const done = await settleData(layout, id);
      if (done === 'forward') report.rolledForward++;
      if (done === 'removed') report.orphansRemoved++;
    }
    await fs.promises.rm(`${layout.dir('tmp')}/${name}`, { force: true, recursive: true });
    report.tmpRemoved++;
  }
  await sweepLocks(layout.root);
  // drop files a killed pickup left half taken (drop.ts): queued ones are removed, the rest go back
  await recoverPickups(layout, async (id) => {
    const l = await tryLock(layout.root, `msg/${id}`);
    return l ? () => l.release() : null;
  });
  // the lock key of older versions (abstract socket locks)
  fs.rmSync(`${layout.root}/lock.key`, { force: true });
  if (orphans) await removeOrphans(layout, claimed, report);
  return report;
}

/** Removes (or rolls forward) data files that no envelope names and no live writer claims, once they
 * are old enough; a look at every name in queue/, hold/, corrupt/ and msg/. */
async function removeOrphans(layout: Layout, claimed: ReadonlySet<string>, report: RecoveryReport): Promise<void> {
  const known = new Set<string>();
  for (const place of ['queue', 'hold', 'corrupt'] as const) {
    for (const id of await namesIn(layout.dir(place))) known.add(id);
  }
  const now = Date.now();
  const data = await namesIn(layout.dir('msg'));
  // a claim is made before its data: claims listed after msg/ cover every data file seen there
  const live = new Set([...claimed, ...liveClaims(await namesIn(layout.dir('tmp')))]);
  for (const id of data) {
    if (known.has(id) || live.has(id)) continue;
    const st = fs.statSync(layout.data(id), { throwIfNoEntry: false });
    if (!st || now - st.mtimeMs < ORPHAN_GRACE_MS) continue;
    // re-check: a writer may have committed its envelope since the listing
    if (committed(layout, id)) continue;
    const done = await settleData(layout, id);
    if (done === 'forward') report.rolledForward++;
    if (done === 'removed') report.orphansRemoved++;
  }
}

/** What became of a dead writer's data: moved forward into queue/, removed, or left (another process
 * holds the message's lock, or an envelope appeared meanwhile). */
type Settled = 'forward' | 'removed' | 'left';

/** Rolls forward or removes the data of a message that has no envelope and no live writer, under the
 * message's lock and after a second look for its envelope: a second recoverer that came after a
 * roll-forward would otherwise find data without an envelope behind it and remove a queued message's. */
async function settleData(layout: Layout, id: string): Promise<Settled> {
  const l = await tryLock(layout.root, `msg/${id}`);
  if (!l) return 'left';
  try {
    if (committed(layout, id)) return 'left';
    if (await rollForward(layout, id)) return 'forward';
    if (!fs.existsSync(layout.data(id))) return 'left';
    await fs.promises.rm(layout.data(id), { force: true });
    return 'removed';
  } finally {
    await l.release();
  }
}

/** When msg/ID carries a whole envelope behind its message, puts that envelope into queue/ durably
 * (the data fsynced, then envelope-write.ts) and then cuts the data back to the message; false when it
 * carries none that checks out (the message was never acknowledged). */
async function rollForward(layout: Layout, id: string): Promise<boolean> {
  let fd: number;
  try {
    fd = fs.openSync(layout.data(id), fs.constants.O_RDWR | fs.constants.O_NOFOLLOW);
  } catch {
    return false;
  }
  try {
    const env = fs.fstatSync(fd).isFile() ? envelopeBehind(fd, id) : null;
    if (!env) return false;
    // a writer killed before its own sync ended left the file whole in memory only: synced here, so an
    // envelope never names data a power loss could still take
    fs.fsyncSync(fd);
    await DirSyncer.of(layout.dir('msg')).sync();
    await replaceEnvelope(layout, env, 'queue');
    fs.ftruncateSync(fd, env.size);
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

/** True when the tmp/ file `name` belongs to a live process: another that exists, or this one. A claim
 * of this pid counts only when this process's writer holds it: one left by a former process that had the
 * same pid (a restart as a container's first process) is a dead one's. */
function isLive(name: string, pid: number): boolean {
  if (!Number.isInteger(pid)) return false;
  if (pid !== process.pid) return alive(pid);
  return !name.endsWith('.env') || ownClaims.has(name);
}

/** The ids the claims of live writers name, among the given tmp/ names. */
function liveClaims(names: readonly string[]): Set<string> {
  const ids = new Set<string>();
  for (const name of names) {
    const [id = '', pidText, kind] = name.split('.');
    if (kind === 'env' && isId(id) && isLive(name, Number(pidText))) ids.add(id);
  }
  return ids;
}

/** True when the message has an envelope (queued, held or set aside as corrupt). */
function committed(layout: Layout, id: string): boolean {
  return (['queue', 'hold', 'corrupt'] as const).some((place) => fs.existsSync(layout.envelope(place, id)));
}
