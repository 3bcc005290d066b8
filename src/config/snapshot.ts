/**
 * The configuration for commands that must start fast (the sendmail command): a JSON snapshot of the
 * validated configuration, kept in the user's cache directory and used while the settings file is
 * unchanged, so that the YAML parser and the validator are loaded only when the file changed.
 *
 * The snapshot is keyed by everything the configuration was derived from (file identity, size and
 * times, ferrymail's version, host name, user and the environment the defaults read). A snapshot that is
 * missing, unreadable or stale is ignored and rewritten; failing to write one is not an error. Errors of
 * the configuration itself are those of loadConfig (ConfigError).
 *
 * Trusts a snapshot only when it and its directory belong to this user and others may not write them,
 * and every directory and symlink on the way belongs to this user or root and is closed to others unless
 * sticky (a cache another user can change could hold a planted snapshot naming their spool); reads and
 * writes never follow a symlink, and the temporary file is created exclusively.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from '../random.js';
import { resolveTrusted } from '../trust.js';
import { VERSION } from '../version.js';
import { settingsLocation } from './paths.js';
import { deepFreeze, defaultSettings, type Config } from './types.js';

/** Where snapshots live. */
function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'ferrymail');
}

/** The shape of the configuration (every key, nested), so that a snapshot made before a key was added
 * is never taken for a complete configuration. */
function shape(v: unknown): string {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return '';
  return Object.entries(v)
    .map(([k, x]) => `${k}(${shape(x)})`)
    .join(',');
}

/** Everything a configuration depends on besides the file's text. */
function snapshotKey(file: string): string {
  const st = fs.statSync(file, { throwIfNoEntry: false, bigint: true });
  const facts = [
    VERSION,
    file,
    st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : 'absent',
    os.hostname(),
    process.getuid?.() ?? '',
    os.homedir(),
    process.env.XDG_STATE_HOME ?? '',
    // the aliases file's default depends on whether the system has one
    fs.existsSync('/etc/aliases') ? 'aliases' : 'no aliases',
    shape(defaultSettings()),
  ];
  return facts.join('\n');
}

/** A snapshot's name from its settings file's path: 64-bit FNV-1a, in hex (the key inside decides whether
 * a snapshot fits; the name only keeps one file's snapshot apart from another's). */
function nameHash(file: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(file)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h.toString(16).padStart(16, '0');
}

/** Loads the configuration, from a fresh snapshot when there is one. */
export async function loadConfigQuick(dirOrFile?: string): Promise<Config> {
  const { file } = settingsLocation(dirOrFile);
  const key = snapshotKey(file);
  const dir = cacheDir();
  const snap = path.join(dir, `config-${nameHash(file)}.json`);
  const own = ownDir(dir);
  try {
    const saved = own ? (JSON.parse(readOwn(snap)) as { key: string; config: Config }) : null;
    if (saved?.key === key) return deepFreeze(saved.config);
  } catch {
    /* no usable snapshot: load the file */
  }
  const { loadConfig } = await import('./load.js');
  const cfg = loadConfig(dirOrFile, { submission: true });
  if (own !== false) saveSnapshot(dir, snap, key, cfg);
  return cfg;
}

/** Whether dir is this user's own directory that others may not write: true, false (someone else's: do
 * not use it), or null (it does not exist yet). */
function ownDir(dir: string): boolean | null {
  const st = fs.lstatSync(dir, { throwIfNoEntry: false });
  if (!st) return null;
  if (!st.isDirectory() || st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0) return false;
  // nothing on the way may be in other hands either: whoever may rename an entry above the cache could
  // put a directory of theirs in its place
  try {
    resolveTrusted(dir, [0, process.geteuid?.() ?? -1]);
    return true;
  } catch {
    return false;
  }
}

/** Whether the nearest existing folder above dir is this user's own, closed to others, on a trusted path. */
function ownParent(dir: string): boolean {
  let up = path.dirname(dir);
  while (!fs.existsSync(up) && path.dirname(up) !== up) up = path.dirname(up);
  const st = fs.lstatSync(up, { throwIfNoEntry: false });
  if (!st?.isDirectory() || st.uid !== process.geteuid?.() || (st.mode & 0o022) !== 0) return false;
  try {
    resolveTrusted(up, [0, process.geteuid?.() ?? -1]);
    return true;
  } catch {
    return false;
  }
}

/** Reads a file that must be this user's own regular file, not writable by others, never through a symlink. */
function readOwn(file: string): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.uid !== process.geteuid?.() || st.mode & 0o022)
      throw new Error("not this user's own snapshot");
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes a snapshot atomically through a temporary file created exclusively; best effort. */
function saveSnapshot(dir: string, snap: string, key: string, cfg: Config): void {
  try {
    // a folder is made only below one of this user's own (root running with another user's HOME must
    // not leave root's folders in that user's cache)
    if (!fs.existsSync(dir) && !ownParent(dir)) return;
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!ownDir(dir)) return;
    const tmp = `${snap}.${process.pid}.${randomBytes(4).toString('hex')}`;
    const fd = fs.openSync(
      tmp,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      0o600,
    );
    try {
      fs.writeFileSync(fd, JSON.stringify({ key, config: cfg }));
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, snap);
    prune(dir);
  } catch {
    /* a read-only home must not stop mail */
  }
}

/** A snapshot's name, and a temporary one's: nothing else in the directory is touched. */
const SNAPSHOT = /^config-[0-9a-f]{16}\.json$/;
const TEMPORARY = /^config-[0-9a-f]{16}\.json\.\d+\.[0-9a-f]{8}$/;

/** Snapshots kept in the cache at most (one per settings file in use; the oldest go first). */
const KEEP = 16;

/** Keeps the cache to KEEP snapshots, removing the least recently written (and stray temporary files of
 * a day old). */
function prune(dir: string): void {
  const now = Date.now();
  const files = fs
    .readdirSync(dir)
    .filter((n) => SNAPSHOT.test(n) || TEMPORARY.test(n))
    .map((n) => ({ n, st: fs.lstatSync(path.join(dir, n), { throwIfNoEntry: false }) }))
    .filter((f): f is { n: string; st: fs.Stats } => !!f.st);
  for (const f of files)
    if (TEMPORARY.test(f.n) && now - f.st.mtimeMs > 86_400_000) fs.rmSync(path.join(dir, f.n), { force: true });
  const snaps = files.filter((f) => SNAPSHOT.test(f.n)).sort((a, b) => b.st.mtimeMs - a.st.mtimeMs);
  for (const f of snaps.slice(KEEP)) fs.rmSync(path.join(dir, f.n), { force: true });
}
