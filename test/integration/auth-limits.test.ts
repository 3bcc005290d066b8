// Password guessing against the real daemon on loopback, with a users file: failed AUTH attempts are
// answered late, counted per client address and per user name across sessions, and once
// auth.max_failures is reached the address and the name get 454 4.7.0 without a password check, the
// right password included, until auth.failure_window has passed. Every failure is one log line in a
// fixed form; a user name cannot forge lines, and no password reaches the log.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { ferrymail, makeConfig, RawSmtp, startDaemon, stopDaemon, waitUntil, type RunningDaemon } from '../helpers.js';

const MAX_FAILURES = 3;
const WINDOW_S = 5;
const passwords = {
  alice: `a-${randomBytes(9).toString('base64url')}`,
  carol: `c-${randomBytes(9).toString('base64url')}`,
};
const wrong = `wrong-${randomBytes(6).toString('hex')}`;

/** Every connection a test opened; closed after it. */
const opened = new Set<RawSmtp>();
afterEach(() => {
  for (const c of opened) c.close();
  opened.clear();
});

/** A greeted session from a loopback address that has said EHLO. */
async function session(port: number, from = '127.0.0.1'): Promise<RawSmtp> {
  const c = await RawSmtp.connectFrom(port, '127.0.0.1', from);
  opened.add(c);
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.cmd('EHLO client.example'), /AUTH PLAIN LOGIN/);
  return c;
}

/** AUTH PLAIN in one line; the reply. */
function plain(c: RawSmtp, user: string, password: string): Promise<string> {
  return c.cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`);
}

/** One AUTH PLAIN attempt on a new session; the reply. */
async function attempt(port: number, from: string, user: string, password: string): Promise<string> {
  const c = await session(port, from);
  try {
    return await plain(c, user, password);
  } finally {
    c.close();
    opened.delete(c);
  }
}

describe('AUTH failure limits', () => {
  let d: RunningDaemon;
  before(async () => {
    const cfg = await makeConfig(
      `auth:\n  users_file: users\n  max_failures: ${MAX_FAILURES}\n  failure_window: ${WINDOW_S}s`,
    );
    const lines: string[] = [];
    for (const [user, pw] of Object.entries(passwords)) {
      const h = await ferrymail(cfg, ['auth', 'hash', user], `${pw}\n`);
      assert.equal(h.code, 0, h.stderr);
      lines.push(h.stdout.trim());
    }
    fs.writeFileSync(path.join(cfg.configDir, 'users'), `${lines.join('\n')}\n`, { mode: 0o600 });
    d = await startDaemon(cfg);
  });
  after(async () => {
    await stopDaemon(d);
  });

  test('a user name cannot forge log lines', async () => {
    // control characters never reach the check (smtp-server refuses them), line separators are escaped
    const crlf = 'mallory\r\n2026-01-01T00:00:00.000Z !! authentication failed peer=[192.0.2.66] user=x';
    assert.match(await attempt(d.cfg.port, '127.0.0.3', crlf, wrong), /^501 /);
    const forged = 'mallory\u20282026-01-01T00:00:00.000Z !! authentication failed peer=[192.0.2.66] user="x';
    assert.match(await attempt(d.cfg.port, '127.0.0.3', forged, wrong), /^535 5\.7\.8 /);
    assert.ok(await waitUntil(() => /authentication failed peer=\[127\.0\.0\.3\]/.test(d.log()), 5000));
    const lines = d.log().split(/\n|\u2028/);
    assert.ok(!lines.some((l) => l.startsWith('2026-01-01')), "no line of the client's making");
    const mine = lines.filter((l) => l.includes('authentication failed'));
    assert.equal(mine.length, 1, mine.join('\n'));
    // the address comes first, in brackets; the name after it, escaped and quoted
    assert.match(
      mine[0]!,
      /^\S+Z !! authentication failed peer=\[127\.0\.0\.3\] user="mallory\\\\u20282026-01-01T00:00:00\.000Z !! authentication failed peer=\[192\.0\.2\.66\] user=\\"x" session=/,
    );
  });

  test('failures are answered late; at max_failures the address and the name get 454, even with the right password, until the window has passed', async () => {
    const c = await session(d.cfg.port);
    const took: number[] = [];
    for (let i = 0; i < MAX_FAILURES; i++) {
      const t = Date.now();
      assert.match(await plain(c, 'alice', wrong), /^535 5\.7\.8 Authentication credentials invalid/);
      took.push(Date.now() - t);
    }
    // 0.5 s, 1 s, 2 s nominal; only lower bounds are asserted
    assert.ok(took[0]! >= 400 && took[MAX_FAILURES - 1]! >= 1500, `answered after ${took.join(', ')} ms`);
    const locked = /^454 4\.7\.0 Too many failed authentication attempts, try again later/;
    const t454 = Date.now();
    assert.match(await plain(c, 'alice', passwords.alice), locked, 'the address is locked, the right password too');
    assert.ok(Date.now() - t454 < 1000, 'a refusal is not delayed');
    assert.match(
      await attempt(d.cfg.port, '127.0.0.1', 'carol', passwords.carol),
      locked,
      'any name from the locked address',
    );
    assert.match(
      await attempt(d.cfg.port, '127.0.0.2', 'alice', passwords.alice),
      locked,
      'the locked name from any address',
    );
    assert.match(
      await attempt(d.cfg.port, '127.0.0.2', 'carol', passwords.carol),
      /^235 2\.7\.0 /,
      'other addresses and names are not affected',
    );
    // after the window, the right password gets in again
    let last = '';
    const back = await waitUntil(
      async () => (last = await attempt(d.cfg.port, '127.0.0.1', 'alice', passwords.alice)).startsWith('235'),
      (WINDOW_S + 10) * 1000,
      500,
    );
    assert.ok(back, `still refused: ${last}`);
    assert.ok(Date.now() - t454 >= 1000, 'not before the window has passed');

    const log = d.log();
    const failed = log
      .split('\n')
      .filter((l) => / !! authentication failed peer=\[127\.0\.0\.1\] user=alice session=/.test(l));
    assert.equal(failed.length, MAX_FAILURES, 'one line per failure, none for a refusal without a check');
    const locks = log.split('\n').filter((l) => / !! authentication locked /.test(l));
    assert.equal(locks.length, 2, locks.join('\n'));
    assert.match(locks[0]!, /authentication locked peer=\[127\.0\.0\.1\] user=alice by=address until=\S+Z/);
    assert.match(locks[1]!, /authentication locked peer=\[127\.0\.0\.1\] user=alice by=user until=\S+Z/);
    assert.match(log, /authenticated session=\S+ user=alice peer=127\.0\.0\.1/);
  });

  test('no password, right or wrong, in any form, appears in the log', () => {
    const log = d.log();
    for (const p of [...Object.values(passwords), wrong]) {
      for (const f of [
        p,
        Buffer.from(p).toString('base64'),
        Buffer.from(`\0alice\0${p}`).toString('base64'),
        Buffer.from(`\0carol\0${p}`).toString('base64'),
      ]) {
        assert.ok(!log.includes(f), `the log holds a secret: ${f}`);
      }
    }
  });
});

describe('auth.check_command', () => {
  let d: RunningDaemon | undefined;
  let port = 0;
  let seen = '';
  before(async () => {
    const cfg = await makeConfig();
    // the command sees the login on stdin; it records the argv and environment it was given
    seen = path.join(cfg.configDir, 'seen');
    const script = path.join(cfg.configDir, 'check.py');
    fs.writeFileSync(
      script,
      [
        'import os, sys',
        `open(${JSON.stringify(seen)}, "a").write(repr(sys.argv) + repr(sorted(os.environ)) + "\\n")`,
        'user, password, _ = sys.stdin.buffer.read().split(b"\\0")',
        'if user == b"down": sys.exit(2)',
        `sys.exit(0 if (user, password) == (b"dan", ${JSON.stringify(passwords.carol)}.encode()) else 1)`,
        '',
      ].join('\n'),
    );
    fs.appendFileSync(
      path.join(cfg.configDir, 'ferrymail.yaml'),
      `auth:\n  check_command: [/usr/bin/python3, ${JSON.stringify(script)}]\n  max_failures: 10\n`,
    );
    d = await startDaemon(cfg);
    port = cfg.port;
  });
  after(async () => stopDaemon(d));

  test('the command decides: 0 logs in, 1 is a wrong password, anything else is 454; the secret only on its stdin', async () => {
    const c = await session(port);
    assert.match(await plain(c, 'dan', wrong), /^535 5\.7\.8 /);
    assert.match(await plain(c, 'down', 'x'), /^454 4\.7\.0 Temporary authentication failure/);
    assert.match(await plain(c, 'dan', passwords.carol), /^235 /);
    assert.match(d!.log(), /authentication not checked session=\S+ user=down peer=127\.0\.0\.1 error="exit 2"/);
    const calls = fs.readFileSync(seen, 'utf8');
    assert.equal(calls.trim().split('\n').length, 3);
    assert.ok(!calls.includes(passwords.carol) && !calls.includes(wrong), 'no password in argv or environment');
    assert.ok(!d!.log().includes(passwords.carol));
  });
});
