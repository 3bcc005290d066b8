/**
 * Maildir delivery (qmail's maildir(5)): the message is written to tmp/NAME, fsynced, linked to
 * new/NAME (never renamed over anything) and tmp/NAME removed. NAME is `SECONDS.KEY.HOST`, where KEY
 * holds the queue id, the attempt and the recipient, so that after a run that was killed, verify() can
 * say whether this very delivery reached new/ (or was read into cur/ since): a delivery is then never
 * made twice nor taken for lost.
 *
 * Runs as the mailbox's owner (the agent has dropped privileges). Trusts the directory only when it and
 * everything on the way to it belong to that user or root; creates the Maildir folders (0700) when they
 * are missing. Results are outcomes: a full disk or quota is temporary, an unusable folder too (its
 * owner can fix it).
 */
import { cryptoModule } from '../../lazy-node.js';
import fs from 'node:fs';
import path from 'node:path';
import { resolveTrusted, UntrustedPath } from '../../trust.js';
import type { LocalResult } from './results.js';
import { fsFailure } from './results.js';

/** The part of the file name that says which delivery it is. */
export function deliveryKey(id: string, attempt: number, recipient: string): string {
  const r = cryptoModule().createHash('sha256').update(recipient.toLowerCase()).digest('hex').slice(0, 8);
  return `F${id}A${attempt}R${r}`;
}

/** The host name as a Maildir name part: "/" and ":" escaped as maildir(5) asks. */
function hostPart(host: string): string {
  return host.replace(/\//g, '\\057').replace(/:/g, '\\072');
}

/** Makes the Maildir's folders when missing (0700); the folder itself must be ours. */
function ensureMaildir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const sub of ['tmp', 'new', 'cur']) {
    try {
      fs.mkdirSync(path.join(dir, sub), { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

/** Checks that the Maildir is in the user's hands alone. */
function checkMaildir(dir: string): string | undefined {
  const uid = process.geteuid?.() ?? -1;
  try {
    resolveTrusted(dir, [0, uid]);
    for (const sub of ['tmp', 'new', 'cur']) {
      const st = fs.lstatSync(path.join(dir, sub));
      if (!st.isDirectory() || st.uid !== uid) return `${path.join(dir, sub)} is not a folder of this user`;
    }
  } catch (err) {
    if (err instanceof UntrustedPath) return `${dir} is not used: ${err.message}`;
    return `${dir}: ${(err as NodeJS.ErrnoException).code ?? err}`;
  }
  return undefined;
}

/** Delivers one message into the Maildir at dir. Every call but the fsync is synchronous: each is one
 * quick call on the page cache, and the fsync, the one that waits for the disk, runs in the thread pool
 * so that deliveries made together share the disk's flushes. */
export async function deliverMaildir(dir: string, data: Buffer, key: string, host: string): Promise<LocalResult> {
  // checked first, made only when missing: the folders exist for every delivery but the first
  let bad = checkMaildir(dir);
  if (bad) {
    try {
      ensureMaildir(dir);
    } catch (err) {
      return fsFailure(err, `cannot make the Maildir ${dir}`);
    }
    bad = checkMaildir(dir);
  }
  if (bad) return { outcome: 'tempfail', reply: `451 4.3.0 ${bad}` };
  const name = `${Math.floor(Date.now() / 1000)}.${key}.${hostPart(host)}`;
  const tmp = path.join(dir, 'tmp', name);
  let fd: number | undefined;
  try {
    fd = fs.openSync(
      tmp,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
      0o600,
    );
    for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off);
    const f = fd;
    await new Promise<void>((resolve, reject) => fs.fsync(f, (err) => (err ? reject(err) : resolve())));
    fs.closeSync(fd);
    fd = undefined;
    fs.linkSync(tmp, path.join(dir, 'new', name));
  } catch (err) {
    if (fd !== undefined) quietly(() => fs.closeSync(fd!));
    quietly(() => fs.rmSync(tmp, { force: true }));
    return fsFailure(err, `cannot write into the Maildir ${dir}`);
  }
  // a leftover in tmp/ is harmless: the delivery is in new/ (verify removes leftovers it finds)
  quietly(() => fs.rmSync(tmp, { force: true }));
  return { outcome: 'ok', reply: `250 2.0.0 delivered to maildir ${dir}` };
}

/** Runs a clean-up call whose failure changes nothing. */
function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    /* nothing to do about it */
  }
}

/** Whether the delivery named by key reached the Maildir: found in new/ or cur/, or absent; either way
 * its leftover in tmp/ is removed. */
export function verifyMaildir(dir: string, key: string): 'delivered' | 'absent' | 'unknown' {
  const mark = `.${key}.`;
  try {
    const found = ['new', 'cur'].some((sub) => fs.readdirSync(path.join(dir, sub)).some((n) => n.includes(mark)));
    for (const n of fs.readdirSync(path.join(dir, 'tmp')))
      if (n.includes(mark)) fs.rmSync(path.join(dir, 'tmp', n), { force: true });
    return found ? 'delivered' : 'absent';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'absent' : 'unknown';
  }
}
