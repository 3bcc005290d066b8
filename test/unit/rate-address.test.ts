// Rate limit buckets (a burst, then only as fast as they refill) and per-user limits; the address map's
// file format and its most-specific-key lookup.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { lookup, parseMap } from '../../src/receive/address-map.js';
import { Buckets, rateLimit } from '../../src/receive/rate-limit.js';

test('a bucket gives its limit at once, then refills evenly over the window', () => {
  const b = new Buckets(3, 60_000);
  const t = 1_000_000;
  assert.deepEqual([b.take('k', t), b.take('k', t), b.take('k', t), b.take('k', t)], [true, true, true, false]);
  assert.equal(b.take('k', t + 10_000), false, 'a sixth of the window gives half a token');
  assert.equal(b.take('k', t + 20_000), true, 'a third of the window gives one');
  assert.equal(b.take('other', t), true, 'keys are counted apart');
});

test('per-user limits count authenticated users; trusted clients are exempt from the client limits', async () => {
  const logs: string[] = [];
  const h = rateLimit(
    { user_recipients: 2, client_messages: 1, window: '1h' },
    { log: (t) => logs.push(t), hostname: 'h' },
  );
  const s = { id: 'x', peer: '192.0.2.9', peerPort: 1, trusted: false, secure: true, user: 'ann', recipients: [] };
  const rcpt = { stage: 'rcpt' as const, verb: 'RCPT', arg: 'a@b' };
  const mail = { stage: 'mail' as const, verb: 'MAIL', arg: 'ann@b' };
  assert.equal((await h.rcpt!(s, rcpt)).action, 'continue');
  assert.equal((await h.rcpt!(s, rcpt)).action, 'continue');
  const third = await h.rcpt!(s, rcpt);
  assert.deepEqual(third, {
    action: 'defer',
    reply: { code: 451, enhanced: '4.7.1', text: 'Rate limit reached: 2 recipients per 1h; try again later' },
  });
  assert.match(logs[0]!, /user ann reached user_recipients \(2 per 1h\)/);
  assert.equal((await h.mail!(s, mail)).action, 'continue');
  assert.equal((await h.mail!(s, mail)).action, 'defer');
  const trusted = { ...s, peer: '127.0.0.1', trusted: true, user: undefined };
  for (let i = 0; i < 5; i++) assert.equal((await h.mail!(trusted, mail)).action, 'continue');
  assert.throws(() => rateLimit({}, { log: () => undefined, hostname: 'h' }), /at least one/);
  assert.throws(() => rateLimit({ user_messages: 0 }, { log: () => undefined, hostname: 'h' }), /whole number/);
});

test('address maps: every key form, replies of the right class, the most specific key first', () => {
  const map = parseMap(
    [
      '# recipients',
      'boss@example.org  accept',
      'sales@            reject 550 5.1.1 Sales is gone',
      '@example.org      defer',
      'example.net       reject',
      'ok.example.net    continue',
      '',
    ].join('\n'),
    'map',
  );
  assert.deepEqual(lookup(map, 'Boss@Example.org'), { action: 'accept' });
  assert.deepEqual(lookup(map, 'sales@anywhere.example'), {
    action: 'reject',
    reply: { code: 550, enhanced: '5.1.1', text: 'Sales is gone' },
  });
  assert.equal(lookup(map, 'x@example.org')?.action, 'defer');
  assert.equal(lookup(map, 'x@mail.example.net')?.action, 'reject', 'a domain covers its subdomains');
  assert.equal(lookup(map, 'x@a.ok.example.net')?.action, 'continue', 'the nearest domain wins');
  assert.equal(lookup(map, 'x@example.com'), undefined);
  assert.throws(() => parseMap('a@b maybe\n', 'm'), /m:1/);
  assert.throws(() => parseMap('a@b reject 450 4.7.1 soft\n', 'm'), /needs a 5xx reply/);
  assert.throws(() => parseMap('a@b accept 250 2.0.0 fine\n', 'm'), /m:1/);
});
