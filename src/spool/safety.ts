/**
 * Trusting the spool: a spool directory is used only when it is this process's own, and spool files are
 * opened only as what they claim to be.
 *
 * checkSpool() refuses a spool whose directory, any of its folders, or anything on the way to it could be
 * changed by another user: not owned by this user (symlinks and directories on the way: by this user or
 * root), a symlink where a folder should be, or writable by group or others (drop/ is the one folder meant to be written by
 * others, and must be sticky). openSpoolFile() opens with O_NOFOLLOW and checks that what was opened is a
 * regular file of the spool's owner. Both fail with FerryError: config (exit 78) for a spool that cannot
 * be trusted, spool-* for file system errors.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FerryError, spoolError } from '../errors.js';
import { resolveTrusted, UntrustedPath } from '../trust.js';

/** The sticky bit of a mode. */
const S_ISVTX = 0o1000;

/** The effective user id, or -1 where there is none (never on the platforms ferrymail runs on). */
function euid(): number {
  // a process of ferrymail never changes its ids once running (agents are processes of their own)
  ownEuid ??= process.geteuid?.() ?? -1;
  return ownEuid;
}
let ownEuid: number | undefined;

/** An unsafe spool: says what and why, and what to do. */
function unsafe(p: string, why: string): FerryError {
  return new FerryError(
    'config',
    `refusing the spool: ${p} ${why}; fix its owner and mode (see docs/security.md) or choose another spool`,
  );
}

/** Checks one folder of the spool (or its root): a real directory of ours, not writable by others. */
function checkOwn(p: string, st: fs.Stats, opts: { sticky?: boolean } = {}): void {
  if (!st.isDirectory()) throw unsafe(p, 'is not a directory');
  if (st.uid !== euid()) throw unsafe(p, `belongs to uid ${st.uid}, not to this user (uid ${euid()})`);
  if (opts.sticky) {
    if (!(st.mode & S_ISVTX)) throw unsafe(p, 'is writable by others but not sticky (mode 1733 expected)');
  } else if (st.mode & 0o022) {
    throw unsafe(p, `is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`);
  }
}

/** Resolves the spool root: every symlink on the way, and every directory passed through, must be ours
 * or root's and closed to others unless sticky (a user who may rename entries in a parent could swap the
 * spool for a directory of theirs); the spool itself must be our own closed directory. */
function checkRoot(root: string): string {
  const real = trusted(root, [0, euid()]);
  checkOwn(root, fs.statSync(real));
  return real;
}

/** resolveTrusted with its refusal as the spool's config error. */
function trusted(p: string, owners: readonly number[], refuse = unsafe): string {
  try {
    return resolveTrusted(p, owners);
  } catch (err) {
    if (err instanceof UntrustedPath) throw refuse(err.at, `(on the way to ${p}) ${err.why}`);
    throw err;
  }
}

/** Checks the spool's root and the given folders (missing folders pass); throws when any is unsafe. */
export function checkSpool(root: string, folders: readonly string[], sticky: readonly string[] = []): void {
  try {
    checkRoot(root);
    for (const f of [...folders, ...sticky]) {
      const p = path.join(root, f);
      const st = fs.lstatSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isSymbolicLink()) throw unsafe(p, 'is a symlink');
      checkOwn(p, st, { sticky: sticky.includes(f) });
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw spoolError(err, `check the spool ${root}`);
  }
}

/** Opens a spool file for reading without following a symlink; it must be a regular file of ours. */
export function openSpoolFile(file: string): number {
  return openSpoolFileStat(file).fd;
}

/** openSpoolFile(), with the file's status as checked (one fstat serves the check and the caller). */
export function openSpoolFileStat(file: string): { fd: number; st: fs.BigIntStats } {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (!st.isFile() || st.uid !== BigInt(euid())) {
      throw Object.assign(new Error(`${file} is not a regular file of the spool's owner`), { code: 'EPERM' });
    }
    return { fd, st };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/**
 * Checks, for a submitter who may not write the spool, that its drop folder is one to hand a message to.
 * The spool's owner must be root, one of `trusted` (the owner of the settings file), an account root gave
 * the spool to (its parent directory is root's and closed to others, as /var/spool), or, for root's own
 * mail, a user whose home directory holds the spool (a per-user daemon that root's mail should reach).
 * Nothing on the way may be in other hands (symlinks and directories of root or the owner, closed to
 * others unless sticky), and drop/ must be the owner's sticky folder.
 * A spool some other user prepared would let that user read the message: it is refused with config (78);
 * a spool without a drop folder (no daemon has run yet) is spool-full (75, try again later).
 */
export function checkDropFolder(root: string, trustedUids: readonly number[]): string {
  try {
    const owner = fs.statSync(root).uid;
    const real = trusted(root, [0, owner], unsafeDrop);
    const st = fs.statSync(real);
    if (st.uid !== owner) throw unsafeDrop(root, 'changed owner while it was being checked');
    const parent = fs.statSync(path.dirname(real));
    const givenByRoot = parent.uid === 0 && !(parent.mode & 0o022);
    // root's mail may go to the spool of a user's own daemon, inside that user's home directory
    const usersOwn = process.geteuid?.() === 0 && insideHome(real, owner);
    if (owner !== 0 && !trustedUids.includes(owner) && !givenByRoot && !usersOwn)
      throw unsafeDrop(
        root,
        `belongs to uid ${owner}, which is neither root, the owner of the settings file nor an account root made the spool for`,
      );
    if (!st.isDirectory() || st.mode & 0o022) throw unsafeDrop(root, 'is not a directory closed to others');
    const drop = path.join(real, 'drop');
    const d = fs.lstatSync(drop, { throwIfNoEntry: false });
    if (!d)
      throw new FerryError(
        'spool-full',
        `cannot write the spool ${root} and it has no drop folder yet (the daemon makes it when it starts); try again later`,
      );
    if (!d.isDirectory() || d.uid !== owner || !(d.mode & S_ISVTX))
      throw unsafeDrop(drop, "is not a sticky folder of the spool's owner");
    return drop;
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw spoolError(err, `reach the spool ${root}`);
  }
}

/** A drop folder the submitter must not use. */
function unsafeDrop(p: string, why: string): FerryError {
  return new FerryError('config', `refusing to hand the message over: ${p} ${why} (see docs/security.md)`);
}

/** True when path lies inside the home directory /etc/passwd gives uid. */
function insideHome(p: string, uid: number): boolean {
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (Number(f[2]) !== uid || !f[5] || f[5] === '/') continue;
      const home = fs.realpathSync(f[5]);
      return p.startsWith(home + path.sep);
    }
  } catch {
    /* no passwd file, or a home that does not exist: not inside */
  }
  return false;
}
