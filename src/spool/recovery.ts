/**
 * Crash recovery of a spool, by the daemon at start and by every queue run under the runner lock:
 * temporary files and lock directories of processes that are gone, stale locks, drop files a killed
 * pickup left half taken, and data files no envelope refers to (after a grace period, and a second look).
 *
 * Trusts the spool (checked by the caller). Files of live processes are left alone. Fails with the file
 * system's error.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { recoverPickups } from './drop.js';
import type { Layout } from './layout.js';
import { sweepLocks, tryLock } from './lock.js';
import type { RecoveryReport } from './store.js';

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
export async function recoverSpool(layout: Layout): Promise<RecoveryReport> {
  const report: RecoveryReport = { tmpRemoved: 0, orphansRemoved: 0, corrupt: [] };
  for (const name of await readdirOrNone(layout.dir('tmp'))) {
    // ID.PID.msg, ID.PID.env, ID.PID.upd, lock.PID.RAND/
    const pid = Number(name.split('.')[1]);
    if (Number.isInteger(pid) && pid !== process.pid && alive(pid)) continue;
    if (pid === process.pid) continue;
    await fsp.rm(`${layout.dir('tmp')}/${name}`, { force: true, recursive: true });
    report.tmpRemoved++;
  }
  await sweepLocks(layout.root);
  // drop files a killed pickup left half taken (drop.ts): queued ones are removed, the rest go back
  await recoverPickups(layout, async (id) => {
    const l = await tryLock(layout.root, `msg/${id}`);
    return l ? () => l.release() : null;
  });
  // the lock key of older versions (abstract socket locks)
  await fsp.rm(`${layout.root}/lock.key`, { force: true });
  const known = new Set<string>();
  for (const place of ['queue', 'hold', 'corrupt'] as const) {
    for (const id of await readdirOrNone(layout.dir(place))) known.add(id);
  }
  const now = Date.now();
  for (const id of await readdirOrNone(layout.dir('msg'))) {
    if (known.has(id)) continue;
    const st = fs.statSync(layout.data(id), { throwIfNoEntry: false });
    if (!st || now - st.mtimeMs < ORPHAN_GRACE_MS) continue;
    // re-check: a writer may have committed its envelope since the listing
    if (fs.existsSync(layout.envelope('queue', id)) || fs.existsSync(layout.envelope('hold', id))) continue;
    await fsp.rm(layout.data(id), { force: true });
    report.orphansRemoved++;
  }
  return report;
}

/** The names in a directory; none when it does not exist. */
async function readdirOrNone(dir: string): Promise<string[]> {
  return fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
}
