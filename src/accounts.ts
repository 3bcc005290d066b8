/**
 * The host's accounts: user names for uids (the submitter of a drop file) and the passwd entries of
 * local recipients (who they are, where they live, what they may run).
 *
 * Reads /etc/passwd (parsed again only when the file changed); a name or uid not found there is asked of
 * `getent passwd` (NSS: LDAP, systemd-homed), which runs without a shell and is given two seconds.
 * Entries are what the system says and are trusted as such; names are checked before they are asked
 * for. Never throws: an unknown uid is named "uid-N", an unknown name is undefined.
 */
import fs from 'node:fs';

/** One account. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
  /** The GECOS field's first part: the person's full name. */
  gecos: string;
  home: string;
  shell: string;
}

/** A name that may be looked up (as useradd would take it, with the $ of machine accounts). */
const NAME = /^[A-Za-z0-9._][A-Za-z0-9._$-]{0,63}$/;

let cache: {
  file: string;
  mtimeMs: number;
  size: number;
  ino: number;
  byUid: Map<number, Account>;
  byName: Map<string, Account>;
} | null = null;

/** One passwd line as an account, or undefined when it is not one. */
function parseLine(line: string): Account | undefined {
  const f = line.split(':');
  if (f.length < 7 || !f[0] || !NAME.test(f[0])) return undefined;
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid < 0 || gid < 0 || f[2] === '' || f[3] === '')
    return undefined;
  return { name: f[0], uid, gid, gecos: (f[4] ?? '').split(',')[0] ?? '', home: f[5] ?? '', shell: f[6] ?? '' };
}

/** The accounts of the passwd file (the first entry of a uid or a name wins). */
function passwd(file = process.env.FERRYMAIL_PASSWD_FILE || '/etc/passwd'): NonNullable<typeof cache> {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) return { file, mtimeMs: 0, size: 0, ino: 0, byUid: new Map(), byName: new Map() };
  // the inode too: useradd renames a new file over the old one, maybe within one step of the file clock
  if (cache?.file === file && cache.mtimeMs === st.mtimeMs && cache.size === st.size && cache.ino === st.ino)
    return cache;
  const byUid = new Map<number, Account>();
  const byName = new Map<string, Account>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const a = parseLine(line);
    if (!a) continue;
    if (!byUid.has(a.uid)) byUid.set(a.uid, a);
    if (!byName.has(a.name)) byName.set(a.name, a);
  }
  cache = { file, mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, byUid, byName };
  return cache;
}

/** Asks NSS for one passwd entry; undefined when it does not know it or does not answer in time. */
function getent(key: string): Promise<Account | undefined> {
  // child_process is loaded on the first question NSS must answer, not by every command that starts
  return import('node:child_process').then(
    ({ execFile }) =>
      new Promise((resolve) => {
        execFile('getent', ['passwd', key], { timeout: 2000, encoding: 'utf8' }, (err, out) => {
          resolve(err ? undefined : parseLine(out.split('\n')[0] ?? ''));
        });
      }),
  );
}

/** The login name of a uid. */
export async function userName(uid: number): Promise<string> {
  const known = passwd().byUid.get(uid);
  if (known) return known.name;
  return (await getent(String(uid)))?.name ?? `uid-${uid}`;
}

/** The account of a uid from the passwd file alone (no NSS): for what must not wait. */
export function accountOfUidSync(uid: number): Account | undefined {
  return passwd().byUid.get(uid);
}

/** The account of a login name; `caseless` also finds a name written in other case (an exact match
 * wins). Undefined when there is none. */
export async function accountOf(name: string, opts: { caseless?: boolean } = {}): Promise<Account | undefined> {
  if (!NAME.test(name)) return undefined;
  const local = accountOfSync(name, opts);
  if (local) return local;
  const a = await getent(name);
  if (a) return a;
  return opts.caseless && name !== name.toLowerCase() ? getent(name.toLowerCase()) : undefined;
}

/** accountOf from the passwd file alone (no NSS). */
export function accountOfSync(name: string, opts: { caseless?: boolean } = {}): Account | undefined {
  if (!NAME.test(name)) return undefined;
  const p = passwd();
  const exact = p.byName.get(name);
  if (exact || !opts.caseless) return exact;
  const lower = name.toLowerCase();
  for (const a of p.byName.values()) if (a.name.toLowerCase() === lower) return a;
  return undefined;
}

/** Every account of the passwd file, in file order (for choosing who reads root's mail). */
export function accountsSync(): Account[] {
  return [...passwd().byName.values()];
}

/** The id of a group from /etc/group (the mail group owns /var/mail on Debian); undefined when absent. */
export function groupIdSync(name: string): number | undefined {
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f[2] !== undefined && /^\d+$/.test(f[2])) return Number(f[2]);
    }
  } catch {
    /* no group file: no such group */
  }
  return undefined;
}

/** The group ids a user is in: the primary group and every /etc/group entry that lists the name (what
 * initgroups gives it, groups known only to NSS aside). */
export function groupsOfSync(name: string, gid: number): number[] {
  const out = new Set([gid]);
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[2] && /^\d+$/.test(f[2]) && (f[3] ?? '').split(',').includes(name)) out.add(Number(f[2]));
    }
  } catch {
    /* no group file: the primary group only */
  }
  return [...out];
}
