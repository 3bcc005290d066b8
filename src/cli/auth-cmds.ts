/**
 * `ferrymail auth add|passwd|rm USER`: the users of SMTP AUTH in auth.users_file, one
 * "name:scrypt$..." line each. The password comes on standard input (asked without echo on a terminal),
 * never in argv; the file is replaced whole (a new file renamed over it, its owner and mode kept, 0600
 * for a new one), so a reader never sees half of it. A running daemon is asked to reload, so the change
 * counts for its next sessions.
 *
 * Trusts the configuration. Errors: usage (64) for a bad name, a user that is there (add) or not
 * (passwd, rm), or an empty password; config (78) when no users file is configured.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/types.js';
import { callDaemon } from '../control/client.js';
import { EX } from '../domain/sysexits.js';
import { FerryError } from '../errors.js';
import { hashPassword } from '../receive/auth.js';
import { readSuspended, setSuspension, type SuspendedList, suspendedFile, writeSuspended } from '../receive/suspend.js';
import { layoutOf } from '../spool/layout.js';
import { safe } from './queue-view.js';

/** Reads the password: a line of standard input (without echo on a terminal). */
async function readPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) {
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    const got = await new Promise<string>((resolve, reject) => {
      let text = '';
      const onData = (d: Buffer): void => {
        for (const ch of d.toString('utf8')) {
          if (ch === '\r' || ch === '\n') return done(text);
          if (ch === '\u0003') return done(undefined);
          if (ch === '\u007f') text = text.slice(0, -1);
          else text += ch;
        }
      };
      const done = (v: string | undefined): void => {
        stdin.removeListener('data', onData);
        stdin.setRawMode(false);
        stdin.pause();
        process.stderr.write('\n');
        if (v === undefined) reject(new FerryError('usage', 'interrupted'));
        else resolve(v);
      };
      stdin.on('data', onData);
      stdin.resume();
    });
    return got;
  }
  const chunks: Buffer[] = [];
  for await (const c of stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
}

/** The users file's lines (none when it does not exist yet). */
function readLines(file: string): string[] {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new FerryError('config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

/** Replaces the file whole, keeping its owner and mode. */
function writeLines(file: string, lines: string[]): void {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.new`);
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, lines.length ? `${lines.join('\n')}\n` : '');
    if (st) {
      fs.fchmodSync(fd, st.mode & 0o7777);
      if (process.geteuid?.() === 0) fs.fchownSync(fd, st.uid, st.gid);
    }
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
}

/** Adds, changes or removes a user; asks a running daemon to reload. */
export async function changeUser(
  cfg: Config,
  op: 'add' | 'passwd' | 'rm',
  user: string,
  out: (s: string) => void,
): Promise<number> {
  const file = cfg.auth.users_file;
  if (!file) throw new FerryError('config', 'no auth.users_file is configured: set it to the users file to manage');
  if (!/^[^\s:]{1,64}$/.test(user))
    throw new FerryError('usage', 'a user name is 1 to 64 characters, without spaces or colons');
  const lines = readLines(file);
  const at = lines.findIndex((l) => l.slice(0, l.indexOf(':')) === user);
  if (op === 'add' && at >= 0)
    throw new FerryError('usage', `${user} is already in ${file} (ferrymail auth passwd changes the password)`);
  if (op !== 'add' && at < 0) throw new FerryError('usage', `${user} is not in ${file}`);
  if (op === 'rm') lines.splice(at, 1);
  else {
    const password = await readPassword(`password for ${user}: `);
    if (!password) throw new FerryError('usage', 'give the password on standard input (an empty one is not taken)');
    const line = `${user}:${await hashPassword(password)}`;
    if (at >= 0) lines[at] = line;
    else lines.push(line);
  }
  writeLines(file, lines);
  out(`${op === 'add' ? 'added' : op === 'rm' ? 'removed' : 'changed the password of'} ${user} in ${file}\n`);
  const res = await callDaemon(layoutOf(cfg.spool).control, { cmd: 'reload' }).catch(() => null);
  if (res?.ok) out('the daemon has reloaded: the change counts from its next session\n');
  return EX.OK;
}

/** `ferrymail auth list`: the users of the users file and the suspended ones, with since when and why. */
export function listUsers(cfg: Config, json: boolean, out: (s: string) => void): number {
  const names = cfg.auth.users_file ? readLines(cfg.auth.users_file).map((l) => l.slice(0, l.indexOf(':'))) : [];
  const suspended = suspendedList(cfg);
  const all = [...new Set([...names, ...Object.keys(suspended)])].sort();
  const rows = all.map((user) => ({
    user,
    known: names.includes(user),
    suspended: Object.hasOwn(suspended, user) ? suspended[user]! : null,
  }));
  if (json) {
    out(`${JSON.stringify(rows)}\n`);
    return EX.OK;
  }
  for (const r of rows)
    out(
      `${r.user}${r.known ? '' : ' (not in the users file)'}${r.suspended ? `: suspended since ${r.suspended.since}: ${safe(r.suspended.reason)}` : ''}\n`,
    );
  if (!rows.length) out('no users\n');
  return EX.OK;
}

/** `ferrymail auth suspend|release USER`: puts a user on the list of suspended users or takes them off. */
export function setSuspended(cfg: Config, op: 'suspend' | 'release', user: string, out: (s: string) => void): number {
  if (!/^[^\s:]{1,64}$/.test(user))
    throw new FerryError('usage', 'a user name is 1 to 64 characters, without spaces or colons');
  const file = suspendedFile(cfg.spool);
  const list = suspendedList(cfg);
  const there = Object.hasOwn(list, user);
  if (op === 'release') {
    if (!there) throw new FerryError('usage', `${user} is not suspended`);
    delete list[user];
  } else {
    if (there) throw new FerryError('usage', `${user} is already suspended since ${list[user]!.since}`);
    setSuspension(list, user, {
      since: new Date().toISOString(),
      reason: 'suspended by hand (ferrymail auth suspend)',
    });
  }
  try {
    writeSuspended(file, list);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FerryError(
      code === 'EACCES' || code === 'EPERM' ? 'spool-permission' : 'spool-io',
      `cannot write ${file}: ${code ?? (err as Error).message}`,
    );
  }
  out(
    `${user} ${op === 'release' ? 'released: may send mail again' : 'suspended: may send no mail'} from the next MAIL\n`,
  );
  return EX.OK;
}

/** The list of suspended users of the spool. */
function suspendedList(cfg: Config): SuspendedList {
  try {
    return readSuspended(suspendedFile(cfg.spool));
  } catch (err) {
    throw new FerryError('config', `cannot read the list of suspended users: ${(err as Error).message}`);
  }
}
