/**
 * Crash recovery of a spool, by the daemon at start and by every queue run under the runner lock:
 * temporary files and lock directories of processes that are gone, stale locks, drop files a killed
 * pickup left half taken, the data of messages whose writer died before the commit (its claim in tmp/),
 * and data files no envelope refers to (after a grace period, and a second look; never a live writer's).
 *
 * Trusts the spool (checked by the caller). Files of live processes are left alone. Fails with the file
 * system's error.
 */
import fs from 'node:fs';
import { recoverPickups } from './drop.js';
import { isId } from './id.js';
import { type Layout, namesIn } from './layout.js';
import { sweepLocks, tryLock } from './lock.js';
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
  const report: RecoveryReport = { tmpRemoved: 0, orphansRemoved: 0, corrupt: [] };
  // ids whose data a live writer is still writing (its claim ID.PID.env, writer.ts), found first, so that
  // a dead claim never takes data another writer's live claim names
  const names = await namesIn(layout.dir('tmp'));
  const claimed = liveClaims(names);
  for (const name of names) {
    // ID.PID.env (a claim), ID.PID.new, ID.PID.upd, ID.PID.msg (older versions), lock.PID.RAND/
    const [id = '', pidText, kind] = name.split('.');
    if (isLive(name, Number(pidText))) continue;
    // a claim of a dead writer: its message was never acknowledged, its data goes with it
    if (kind === 'env' && isId(id) && !claimed.has(id) && !committed(layout, id)) {
      if (fs.existsSync(layout.data(id))) report.orphansRemoved++;
      await fs.promises.rm(layout.data(id), { force: true });
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
  if (orphans) report.orphansRemoved += await removeOrphans(layout, claimed);
  return report;
}

/** Removes data files that no envelope names and no live writer claims, once they are old enough; a
 * look at every name in queue/, hold/, corrupt/ and msg/. */
async function removeOrphans(layout: Layout, claimed: ReadonlySet<string>): Promise<number> {
  let removed = 0;
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
    await fs.promises.rm(layout.data(id), { force: true });
    removed++;
  }
  return removed;
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
