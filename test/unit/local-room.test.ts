// The memory budget of local deliveries: a delivery waits for room before it reads its message, so that
// large messages delivered together never hold more than the budget at once (one larger than the whole
// budget runs alone), and room given back wakes the waiters.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LOCAL_MEMORY_BUDGET, room } from '../../src/transport/local/local.js';

test('local deliveries wait for room in memory: never more than the budget at once, a huge one alone', async () => {
  const big = Math.floor(LOCAL_MEMORY_BUDGET * 0.6);
  const order: string[] = [];
  const first = await room(big);
  order.push('first in');
  // a second large one must wait until the first gives its room back
  const second = room(big).then((give) => (order.push('second in'), give));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, ['first in']);
  order.push('first out');
  first();
  const giveSecond = await second;
  assert.deepEqual(order, ['first in', 'first out', 'second in']);
  // small ones fit beside it
  const small = await room(1024);
  small();
  // a message larger than the whole budget waits until nothing else is held, then runs alone
  const huge = room(LOCAL_MEMORY_BUDGET * 3).then((give) => (order.push('huge in'), give));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(order.at(-1), 'second in');
  giveSecond();
  const giveHuge = await huge;
  assert.equal(order.at(-1), 'huge in');
  // giving back twice gives back once
  giveHuge();
  giveHuge();
  const after = await room(big);
  const again = room(big);
  let got = false;
  void again.then(() => (got = true));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(got, false, 'a double give-back did not make room that was not there');
  after();
  (await again)();
});
