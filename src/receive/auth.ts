/**
 * SMTP AUTH credentials: a users file of "name:scrypt$N$r$p$salt$hash" lines, and hashing for
 * `ferrymail auth hash`.
 *
 * Or a check command (auth.check_command), given "USER\0PASSWORD\0" on its standard input (never in
 * argv or its environment), whose exit status is the answer: 0 good, 1 bad, anything else (or no answer
 * within 10 s) "cannot tell now".
 *
 * The users file is trusted to be the administrator's; its lines are checked and bad ones ignored with a
 * warning. Passwords are compared in constant time, unknown users cost as much as known ones, and
 * passwords are never logged or put in errors.
 */
import { cryptoModule } from '../lazy-node.js';
import fs from 'node:fs';
import { runCommand } from '../proc/run.js';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;
/** Cost limits: a users-file line beyond them could make each login attempt very expensive. */
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;

/**
 * scrypt runs in the thread pool that also does every spool write: one derivation at a time, so that a
 * flood of AUTH attempts queues up behind itself instead of starving the spool.
 */
let queue: Promise<unknown> = Promise.resolve();

/** Derives a key with scrypt, one derivation at a time. */
function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  const run = (): Promise<Buffer> =>
    new Promise((resolve, reject) =>
      cryptoModule().scrypt(password, salt, KEYLEN, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) =>
        err ? reject(err) : resolve(key),
      ),
    );
  const next = queue.then(run, run);
  queue = next.catch(() => undefined);
  return next;
}

/** Hashes a password for the users file. */
export async function hashPassword(password: string): Promise<string> {
  const salt = cryptoModule().randomBytes(16);
  const key = await derive(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Checks a password against a stored hash; false for any malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [n, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![n, r, p].every((x) => Number.isInteger(x) && x > 0) || n > MAX_N || r > MAX_R || p > MAX_P) return false;
  const salt = Buffer.from(parts[4]!, 'base64');
  const want = Buffer.from(parts[5]!, 'base64');
  if (want.length !== KEYLEN) return false;
  const got = await derive(password, salt, n, r, p);
  return cryptoModule().timingSafeEqual(got, want);
}

/** A hash for unknown users, so that a wrong name costs as much time as a wrong password. */
let decoy: string | undefined;

/** Checks a user's password; unknown users take the same time and fail. */
export async function checkLogin(users: Map<string, string>, user: string, password: string): Promise<boolean> {
  const stored = users.get(user);
  if (stored) return verifyPassword(password, stored);
  decoy ??= await hashPassword(cryptoModule().randomBytes(16).toString('hex'));
  await verifyPassword(password, decoy);
  return false;
}

/** Reads the users file into a map of name to hash; lines it cannot use are returned as warnings. */
export function readUsers(file: string): { users: Map<string, string>; warnings: string[] } {
  const users = new Map<string, string>();
  const warnings: string[] = [];
  if (!fs.existsSync(file))
    return { users, warnings: [`${file} does not exist yet: no one can log in (ferrymail auth add USER makes it)`] };
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      const t = line.trim();
      if (!t || t.startsWith('#')) return;
      const colon = t.indexOf(':');
      const m = colon > 0 ? /^scrypt\$(\d+)\$(\d+)\$(\d+)\$[^$]+\$[^$]+$/.exec(t.slice(colon + 1)) : null;
      if (m && Number(m[1]) <= MAX_N && Number(m[2]) <= MAX_R && Number(m[3]) <= MAX_P)
        users.set(t.slice(0, colon), t.slice(colon + 1));
      else
        warnings.push(
          `${file}:${i + 1}: not a "user:scrypt$..." line within the cost limits (make one with 'ferrymail auth hash USER'); ignored`,
        );
    });
  return { users, warnings };
}

/** Check commands running at once, at most: a flood of logins from many addresses cannot start more. */
const MAX_CHECKS = 8;
let checking = 0;

/** A check command's answer: good, bad, or cannot tell (with why, for the log). */
export type CommandAnswer = { ok: boolean } | { error: string };

/** Asks the check command about a login. */
export async function checkByCommand(argv: readonly string[], user: string, password: string): Promise<CommandAnswer> {
  if (user.includes('\0') || password.includes('\0')) return { ok: false };
  if (checking >= MAX_CHECKS) return { error: `${MAX_CHECKS} checks already running` };
  checking++;
  const r = await runCommand(argv, {
    env: { PATH: '/usr/local/bin:/usr/bin:/bin' },
    timeoutMs: 10_000,
    stdin: `${user}\0${password}\0`,
    capture: { stdout: false, stderr: false },
  }).finally(() => checking--);
  if (r.code === 0) return { ok: true };
  if (r.code === 1) return { ok: false };
  // only how it ended: what it printed might hold what it was given
  const why = r.error ?? (r.timedOut ? 'no answer within 10 s' : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`);
  return { error: why };
}
