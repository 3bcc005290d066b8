// The session pool's shrink(): a delivery turned away by the server waits for a session in use or idle
// to the same server, and gives up only when there is none; the pool never goes below one slot.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pool, type Pooled } from '../../src/transport/pool.js';

/** A session stand-in for one server key. */
function fake(key: string): Pooled & { closed: boolean } {
  return {
    key,
    closed: false,
    usable: () => true,
    park: () => undefined,
    unpark: () => undefined,
    close: async function (this: { closed: boolean }) {
      this.closed = true;
    },
  };
}

test('shrink: nothing to wait for when the caller is alone; an idle session to the server, or one in use, is waited for', async () => {
  const pool = new Pool<ReturnType<typeof fake>>(2, 60_000);
  assert.equal(await pool.take(['a']), undefined, 'a slot to open a session');
  assert.equal(pool.shrink(['a']), false, 'alone: the refusal stands');

  // another session to the server waits idle: shrink gives the slot up and take() hands that one over
  const idle = fake('a');
  assert.equal(await pool.take(['a']), undefined, 'a second slot');
  pool.give(idle);
  assert.equal(pool.shrink(['a']), true);
  assert.equal(await pool.take(['a']), idle);
  pool.give(idle);

  // one in use elsewhere (a fresh pool of two): shrink, then the caller waits until it comes back
  const two = new Pool<ReturnType<typeof fake>>(2, 60_000);
  const busy = fake('a');
  assert.equal(await two.take(['a']), undefined);
  two.inUse(busy);
  assert.equal(await two.take(['a']), undefined, "the caller's slot");
  assert.equal(two.shrink(['a']), true, 'one slot fewer, the caller waits');
  let got: unknown = 'waiting';
  const waiter = two.take(['a']).then((s) => (got = s));
  await new Promise((r) => setImmediate(r));
  assert.equal(got, 'waiting', 'no slot left: it waits');
  two.give(busy);
  await waiter;
  assert.equal(got, busy, 'the session given back goes to the waiter');
  two.give(busy);
  await two.close();
  assert.equal(busy.closed, true);
  await pool.close();
  assert.equal(idle.closed, true);
});

test('shrink: sessions to other servers, or given back, do not count; one being opened to the same server does', async () => {
  const pool = new Pool<ReturnType<typeof fake>>(3, 60_000);
  const other = fake('b');
  assert.equal(await pool.take(['b']), undefined);
  pool.inUse(other);
  assert.equal(await pool.take(['a']), undefined);
  assert.equal(pool.shrink(['a']), false, 'only a session to b is in use: nothing to wait for');
  pool.opening(['a'], 1);
  assert.equal(pool.shrink(['a']), true, 'another delivery is opening a session to a');
  pool.opening(['a'], -1);
  const dead = fake('a');
  pool.inUse(dead);
  pool.discard(dead);
  assert.equal(dead.closed, true);
  assert.equal(await pool.take(['a']), undefined);
  assert.equal(pool.shrink(['a']), false, 'a discarded session is not waited for');
});
