/**
 * Room on the spool's file system: how much is free, and a reserve kept for the queue's own state.
 *
 * SPOOL/reserve is a file of RESERVE_BYTES made while there is room. When writing queue state (an
 * envelope update, the in-flight journal) fails for a full disk, the reserve is given up and the write
 * tried once more, so that a recorded outcome is not lost because something else filled the disk; the
 * reserve is made again once there is room. Reading free space never throws (unknown: Infinity).
 */
import fs from 'node:fs';
import path from 'node:path';
import { isFerryError } from '../errors.js';
import type { Layout } from './layout.js';

/** The reserve's size. */
export const RESERVE_BYTES = 2 * 1024 * 1024;

/** The last answer of freeBytes() for each spool, and when it was read (ms). */
const lastFree = new Map<string, { at: number; bytes: number }>();

/**
 * Bytes free for this user on the spool's file system (Infinity when it cannot be told). With maxAgeMs,
 * an answer read that recently is given again: the intake asks twice per message (at MAIL and before the
 * data), and a statfs each time was 2–3 % of its CPU. The messages this process commits meanwhile are
 * taken off it (spent()); other writers' are not, nor data still arriving, which no check made before
 * the data sees anyway: a disk that fills while data is written is met by the write's error.
 */
export function freeBytes(root: string, maxAgeMs = 0, now = Date.now()): number {
  const last = lastFree.get(root);
  if (last && now - last.at < maxAgeMs && now >= last.at) return last.bytes;
  let bytes: number;
  try {
    const s = fs.statfsSync(root);
    bytes = s.bavail * s.bsize;
  } catch {
    bytes = Infinity;
  }
  lastFree.set(root, { at: now, bytes });
  return bytes;
}

/** Takes bytes this process has written to the spool off the answer freeBytes() keeps, so that a
 * check within its age sees the messages committed since (one connection's next message, say). */
export function spent(root: string, bytes: number): void {
  const last = lastFree.get(root);
  if (last) last.bytes -= bytes;
}

/** How old the free space the intake checks may be (freeBytes()). */
export const INTAKE_FREE_AGE_MS = 100;

/** The reserve file. */
function reserveFile(layout: Layout): string {
  return path.join(layout.root, 'reserve');
}

/** Makes the reserve when it is missing and there is room for it and `keep` bytes more; never throws. */
export function ensureReserve(layout: Layout, keep = 0): boolean {
  const file = reserveFile(layout);
  const st = fs.lstatSync(file, { throwIfNoEntry: false });
  if (st?.isFile() && st.size === RESERVE_BYTES) return true;
  if (freeBytes(layout.root) < RESERVE_BYTES + keep) return false;
  const tmp = `${file}.${process.pid}`;
  try {
    const fd = fs.openSync(
      tmp,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
      0o600,
    );
    try {
      const block = Buffer.alloc(65_536);
      for (let n = 0; n < RESERVE_BYTES; n += block.length) fs.writeSync(fd, block);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    return true;
  } catch {
    fs.rmSync(tmp, { force: true });
    return false;
  }
}

/** Gives the reserve up; true when there was one. */
export function releaseReserve(layout: Layout): boolean {
  const file = reserveFile(layout);
  if (!fs.existsSync(file)) return false;
  fs.rmSync(file, { force: true });
  return true;
}

/** Runs a write of queue state; when it fails for a full disk, gives the reserve up and tries once more. */
export async function withReserve<T>(layout: Layout, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    if (!isFerryError(err, 'spool-full') || !releaseReserve(layout)) throw err;
    return write();
  }
}
