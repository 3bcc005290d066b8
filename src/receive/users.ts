/**
 * Local user names for user ids: the name the kernel-vouched uid of a submitter goes by.
 *
 * Reads /etc/passwd (cached while the file is unchanged); a uid not found there is asked of `getent
 * passwd` (NSS: LDAP, systemd-homed), which runs without a shell and is given two seconds. Never throws:
 * an unknown uid is named "uid-N".
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';

let cache: { mtimeMs: number; names: Map<number, string> } | null = null;

/** The user names of /etc/passwd by uid (the first name listed for a uid wins). */
function passwdNames(file = '/etc/passwd'): Map<number, string> {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) return new Map();
  if (cache?.mtimeMs === st.mtimeMs) return cache.names;
  const names = new Map<number, string>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [name, , uid] = line.split(':');
    const n = Number(uid);
    if (name && Number.isInteger(n) && !names.has(n)) names.set(n, name);
  }
  cache = { mtimeMs: st.mtimeMs, names };
  return names;
}

/** Asks NSS for a uid's name; undefined when it does not know it or does not answer in time. */
function getent(uid: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('getent', ['passwd', String(uid)], { timeout: 2000, encoding: 'utf8' }, (err, out) => {
      const name = err ? undefined : out.split(':')[0];
      resolve(name && /^[A-Za-z0-9._][A-Za-z0-9._$-]{0,63}$/.test(name) ? name : undefined);
    });
  });
}

/** The login name of a uid. */
export async function userName(uid: number): Promise<string> {
  const known = passwdNames().get(uid);
  if (known) return known;
  return (await getent(uid)) ?? `uid-${uid}`;
}
