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

/** Bytes free for this user on the spool's file system (Infinity when it cannot be told). */
export function freeBytes(root: string): number {
  try {
    const s = fs.statfsSync(root);
    return s.bavail * s.bsize;
  } catch {
    return Infinity;
  }
}

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
