/**
 * Whether a path can be trusted: resolves it the way the kernel does, one component at a time, and
 * refuses it when anything met on the way could be changed by a user other than the trusted owners: a
 * symlink of another user (it could point anywhere), or a directory passed through that belongs to
 * another user or that others may write without the sticky bit (they could rename an entry in it).
 *
 * Used before the spool, the drop folder or a cached snapshot is trusted. The final component is
 * resolved but not judged: the caller knows what it must be. Fails with UntrustedPath (saying where and
 * why) or with the file system's error for a path that does not resolve.
 */
import fs from 'node:fs';
import path from 'node:path';

/** The sticky bit of a mode. */
const S_ISVTX = 0o1000;

/** The most symlinks followed in one path, as the kernel's limit. */
const MAX_LINKS = 40;

/** A path some other user could redirect. */
export class UntrustedPath extends Error {
  constructor(
    readonly at: string,
    readonly why: string,
  ) {
    super(`${at} ${why}`);
  }
}

/** Resolves p (made absolute) and returns its real path; throws UntrustedPath when something on the way
 * is not in the hands of `owners` (user ids; root is not added implicitly). */
export function resolveTrusted(p: string, owners: readonly number[]): string {
  const rest = path.resolve(p).split(path.sep).filter(Boolean);
  let cur = path.parse(path.resolve(p)).root;
  let links = 0;
  checkPassed(cur, fs.statSync(cur), owners);
  while (rest.length > 0) {
    const name = rest.shift()!;
    if (name === '.') continue;
    if (name === '..') {
      cur = path.dirname(cur);
      continue;
    }
    const next = path.join(cur, name);
    const st = fs.lstatSync(next);
    if (st.isSymbolicLink()) {
      if (!owners.includes(st.uid)) throw new UntrustedPath(next, `is a symlink of uid ${st.uid}`);
      if (++links > MAX_LINKS) throw Object.assign(new Error(`too many symlinks in ${p}`), { code: 'ELOOP' });
      const target = fs.readlinkSync(next);
      rest.unshift(...target.split(path.sep).filter(Boolean));
      if (path.isAbsolute(target)) cur = path.parse(target).root;
      continue;
    }
    if (rest.length > 0) checkPassed(next, st, owners);
    cur = next;
  }
  return cur;
}

/** Checks a directory the path passes through. */
function checkPassed(dir: string, st: fs.Stats, owners: readonly number[]): void {
  if (!st.isDirectory()) return; // the kernel will say ENOTDIR
  if (!owners.includes(st.uid)) throw new UntrustedPath(dir, `belongs to uid ${st.uid}`);
  if (st.mode & 0o022 && !(st.mode & S_ISVTX))
    throw new UntrustedPath(dir, `is writable by others and not sticky (mode ${(st.mode & 0o7777).toString(8)})`);
}

/** Whether permission bits grant `bit` (4 read, 1 search) to a user with uid and groups. */
function grants(st: fs.Stats, uid: number, gids: readonly number[], bit: number): boolean {
  if (uid === 0) return true;
  if (st.uid === uid) return (st.mode & (bit << 6)) !== 0;
  if (gids.includes(st.gid)) return (st.mode & (bit << 3)) !== 0;
  return (st.mode & bit) !== 0;
}

/** Whether a user (uid and group ids) could open the real path `real` for reading by the permission
 * bits: every folder on the way searchable, the file readable. A root daemon reads a user's .forward
 * and include files only when this holds, so that nobody is read through them what they could not read
 * themselves (access control lists aside: a file they open to someone is not taken into account). */
export function mayRead(real: string, uid: number, gids: readonly number[]): boolean {
  if (uid === 0) return true;
  let dir = path.dirname(real);
  for (;;) {
    if (!grants(fs.statSync(dir), uid, gids, 1)) return false;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return grants(fs.statSync(real), uid, gids, 4);
}
