/**
 * SMTP AUTH credentials: a users file of "name:scrypt$N$r$p$salt$hash" lines, and hashing for
 * `ferrymail auth hash`.
 *
 * The users file is trusted to be the administrator's; its lines are checked and bad ones ignored with a
 * warning. Passwords are compared in constant time and never logged or put in errors.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

/** Derives a key with scrypt. */
function derive(password: string, salt: Buffer, n: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, KEYLEN, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** Hashes a password for the users file. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Checks a password against a stored hash; false for any malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [n, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![n, r, p].every((x) => Number.isInteger(x) && x > 0) || n > 1 << 20) return false;
  const salt = Buffer.from(parts[4]!, 'base64');
  const want = Buffer.from(parts[5]!, 'base64');
  if (want.length !== KEYLEN) return false;
  const got = await derive(password, salt, n, r, p);
  return timingSafeEqual(got, want);
}

/** Reads the users file into a map of name to hash. */
export function readUsers(file: string): Map<string, string> {
  const users = new Map<string, string>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    const colon = t.indexOf(':');
    if (colon > 0) users.set(t.slice(0, colon), t.slice(colon + 1));
  }
  return users;
}
