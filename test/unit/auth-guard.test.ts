// Counting failed AUTH attempts per client and per user name, with a fake clock: the growing delay,
// the lockout and its end, parallel checks, the reset after a success, and the bounded memory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientNetwork } from '../../src/domain/ip.js';
import { AuthGuard, failureDelay, FIRST_DELAY_MS, MAX_DELAY_MS } from '../../src/receive/auth-guard.js';

/** A guard on a clock the test moves by hand. */
function guard(maxFailures = 3, windowMs = 60_000, maxEntries?: number): { g: AuthGuard; clock: { t: number } } {
  const clock = { t: 1_000_000 };
  return { g: new AuthGuard({ maxFailures, windowMs, maxEntries, now: () => clock.t }), clock };
}

/** One attempt that begin() lets through and that fails; returns settle()'s answer. */
function failOnce(g: AuthGuard, peer: string, user: string): NonNullable<ReturnType<AuthGuard['settle']>> {
  assert.deepEqual(g.begin(peer, user), { ok: true });
  const r = g.settle(peer, user, false);
  assert.ok(r);
  return r;
}

test('the delay before a failure is answered doubles per recent failure, up to the cap', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 20].map(failureDelay), [500, 1000, 2000, 4000, 4000, 4000]);
  assert.equal(failureDelay(1), FIRST_DELAY_MS);
  assert.equal(failureDelay(99), MAX_DELAY_MS);
  const { g } = guard(10);
  assert.deepEqual(
    [1, 2, 3].map(() => failOnce(g, '203.0.113.5', 'bob').delayMs),
    [500, 1000, 2000],
  );
  // another name from the same address: the address's failures count
  assert.equal(failOnce(g, '203.0.113.5', 'carol').delayMs, 4000);
  // the same name from elsewhere: the name's failures count
  assert.equal(failOnce(g, '198.51.100.7', 'bob').delayMs, 4000);
  // a fresh address and name start again
  assert.equal(failOnce(g, '198.51.100.8', 'dave').delayMs, 500);
});

test('max failures from one address lock it for one window; a refused attempt is not counted', () => {
  const { g, clock } = guard(3, 60_000);
  const peer = '203.0.113.5';
  assert.deepEqual(failOnce(g, peer, 'a').locks, []);
  clock.t += 10_000;
  assert.deepEqual(failOnce(g, peer, 'b').locks, []);
  clock.t += 10_000;
  const third = failOnce(g, peer, 'c');
  assert.deepEqual(third.locks, [{ by: 'address', until: clock.t + 60_000 }]);
  const lockedAt = clock.t;
  // any name, right password or not: refused before any check
  assert.deepEqual(g.begin(peer, 'someone-else'), { ok: false, by: 'address', until: lockedAt + 60_000 });
  clock.t = lockedAt + 59_999;
  assert.equal(g.begin(peer, 'a').ok, false);
  // other addresses are not affected
  assert.deepEqual(g.begin('203.0.113.6', 'z'), { ok: true });
  clock.t = lockedAt + 60_000;
  assert.deepEqual(g.begin(peer, 'a'), { ok: true });
  // the lock is reported once, when it starts: the failures that made it have left the window
  assert.deepEqual(g.settle(peer, 'a', false)!.locks, []);
});

test('max failures for one name, from any addresses, lock the name', () => {
  const { g, clock } = guard(3, 60_000);
  failOnce(g, '203.0.113.1', 'bob');
  failOnce(g, '203.0.113.2', 'bob');
  const r = failOnce(g, '203.0.113.3', 'bob');
  assert.deepEqual(r.locks, [{ by: 'user', until: clock.t + 60_000 }]);
  assert.deepEqual(g.begin('192.0.2.99', 'bob'), { ok: false, by: 'user', until: clock.t + 60_000 });
  assert.deepEqual(g.begin('203.0.113.1', 'carol'), { ok: true }, 'the addresses themselves are not locked');
});

test('failures older than the window do not count', () => {
  const { g, clock } = guard(3, 60_000);
  failOnce(g, '203.0.113.5', 'bob');
  failOnce(g, '203.0.113.5', 'bob');
  clock.t += 60_001;
  assert.equal(failOnce(g, '203.0.113.5', 'bob').locks.length, 0);
  assert.equal(failOnce(g, '203.0.113.5', 'bob').locks.length, 0);
  assert.equal(failOnce(g, '203.0.113.5', 'bob').locks.length, 2, 'address and name reach the limit together');
});

test('a success resets its address, not the name or other addresses', () => {
  const { g } = guard(3);
  failOnce(g, '203.0.113.5', 'bob');
  failOnce(g, '203.0.113.5', 'bob');
  failOnce(g, '198.51.100.1', 'eve');
  failOnce(g, '198.51.100.1', 'eve');
  assert.deepEqual(g.begin('203.0.113.5', 'bob'), { ok: true });
  assert.equal(g.settle('203.0.113.5', 'bob', true), null);
  // the address starts again (one failure is its first); the name still holds its two and is now locked
  const r = failOnce(g, '203.0.113.5', 'bob');
  assert.deepEqual(
    r.locks.map((l) => l.by),
    ['user'],
  );
  // the other address still holds its two failures: one more locks it
  assert.deepEqual(
    failOnce(g, '198.51.100.1', 'eve').locks.map((l) => l.by),
    ['address', 'user'],
  );
});

test('checks under way count: parallel attempts get no more than max failures of checks', () => {
  const { g } = guard(3);
  const peer = '203.0.113.5';
  const admitted = Array.from({ length: 10 }, (_, i) => g.begin(peer, `user${i}`)).filter((a) => a.ok).length;
  assert.equal(admitted, 3);
  for (let i = 0; i < 3; i++) g.settle(peer, `user${i}`, false);
  assert.equal(g.begin(peer, 'user9').ok, false);
});

test('IPv6 clients are counted by their /64, IPv4-mapped ones as IPv4', () => {
  assert.equal(clientNetwork('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
  assert.equal(clientNetwork('2001:DB8:1:2::ffff'), '2001:db8:1:2::/64');
  assert.equal(clientNetwork('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(clientNetwork('192.0.2.7'), '192.0.2.7');
  assert.equal(clientNetwork('not an address'), 'not an address');
  const { g } = guard(2);
  failOnce(g, '2001:db8:1:2::1', 'a');
  assert.deepEqual(
    failOnce(g, '2001:db8:1:2::2', 'b').locks.map((l) => l.by),
    ['address'],
  );
  assert.equal(g.begin('2001:db8:1:2:ffff::9', 'c').ok, false);
  assert.equal(g.begin('2001:db8:1:3::1', 'c').ok, true);
});

test('memory is bounded: idle entries go first, then the least recently changed', () => {
  const { g, clock } = guard(2, 60_000, 100);
  for (let i = 0; i < 1000; i++) failOnce(g, `10.0.${i >> 8}.${i & 255}`, `name${i}`);
  assert.ok(g.size.clients <= 100 && g.size.names <= 100, JSON.stringify(g.size));
  // the most recent ones are still there: one more failure locks them
  assert.equal(failOnce(g, '10.0.3.231', 'x').locks[0]?.by, 'address');
  // once their failures are older than the window, a full map drops the idle entries
  clock.t += 60_001;
  failOnce(g, '192.0.2.1', 'new');
  assert.ok(g.size.clients <= 2, JSON.stringify(g.size));
  // very long names are counted by their start
  const long = 'n'.repeat(300);
  failOnce(g, '192.0.2.50', long);
  assert.deepEqual(
    failOnce(g, '192.0.2.51', `${long}tail`).locks.map((l) => l.by),
    ['user'],
  );
});
