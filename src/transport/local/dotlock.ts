/**
 * Dot-locks (FILE.lock), as every mail reader on the system honours them: created exclusively holding
 * the holder's pid (liblockfile takes a lock whose pid is gone, or that is older than five minutes and
 * holds none, for stale, and so does this module), waited for up to `attempts` seconds, removed when
 * done. A process that may not create files in the mailbox's folder (a user's own daemon and Debian's
 * /var/mail, 2775 root:mail) asks liblockfile's setgid dotlockfile(1) for the user's own mailbox.
 *
 * Trusts nothing in an existing lock file beyond its pid. Never throws: a lock that cannot be had is a
 * result saying why.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';

/** A dot-lock held. */
export interface DotLock {
  release(): Promise<void>;
}

/** Why there is no lock: busy (someone else holds it), denied (no right to create it), or an error. */
export type NoDotLock = { busy: string } | { denied: string } | { failed: string };

/** True when a lock file is stale: its pid is gone, or it holds none and is five minutes old. */
function stale(lock: string): boolean {
  try {
    const st = fs.statSync(lock);
    const pid = Number(fs.readFileSync(lock, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
        return false;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'ESRCH';
      }
    }
    return Date.now() - st.mtimeMs > 300_000;
  } catch {
    return false;
  }
}

/** Creates FILE.lock, waiting up to `attempts` seconds for another holder. */
export async function dotLock(file: string, attempts = 20): Promise<DotLock | NoDotLock> {
  const lock = `${file}.lock`;
  for (let i = 0; ; i++) {
    try {
      const fd = fs.openSync(
        lock,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
        0o644,
      );
      fs.writeSync(fd, `${process.pid}\n`);
      fs.closeSync(fd);
      return { release: async () => fs.rmSync(lock, { force: true }) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS')
        return { denied: `cannot create ${lock} (${code})` };
      if (code !== 'EEXIST') return { failed: `cannot create ${lock} (${code})` };
    }
    if (stale(lock)) {
      fs.rmSync(lock, { force: true });
      continue;
    }
    if (i >= attempts) return { busy: `${lock} is held by another program` };
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Locks the user's own mailbox with liblockfile's setgid dotlockfile(1) (MAIL names the mailbox). */
export function dotLockByHelper(mailbox: string, attempts = 20): Promise<DotLock | NoDotLock> {
  const env = { PATH: '/usr/bin:/bin', MAIL: mailbox };
  return new Promise((resolve) => {
    execFile(
      'dotlockfile',
      ['-l', '-p', '-r', String(Math.ceil(attempts / 5)), '-m'],
      { env, timeout: (attempts + 10) * 1000 },
      (err) => {
        if (!err)
          return resolve({
            release: () =>
              new Promise((r) => execFile('dotlockfile', ['-u', '-m'], { env, timeout: 10_000 }, () => r())),
          });
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return resolve({ denied: 'dotlockfile is not installed (Debian: liblockfile-bin)' });
        resolve({ busy: `dotlockfile could not lock ${mailbox} (exit ${String(code)})` });
      },
    );
  });
}
