// Rate limit buckets (a burst, then only as fast as they refill) and per-user limits; the address map's
// file format and its most-specific-key lookup.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { addressMap, answers, lookup, parseMap } from '../../src/receive/address-map.js';
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

test('address maps: relay and backup_mx lines, and their checks', () => {
  const map = parseMap(
    'relay.example relay\nbackup.example backup_mx\n@b2.example backup_mx [::1]:2526\nb3.example backup_mx mx.b3.example\n',
    'm',
  );
  assert.deepEqual(lookup(map, 'x@a.relay.example'), { action: 'relay' });
  assert.deepEqual(lookup(map, 'x@backup.example'), { action: 'backup_mx', port: 25 });
  assert.deepEqual(lookup(map, 'x@b2.example'), { action: 'backup_mx', host: '::1', port: 2526 });
  assert.deepEqual(lookup(map, 'x@b3.example'), { action: 'backup_mx', host: 'mx.b3.example', port: 25 });
  assert.throws(() => parseMap('a.example relay 550 5.7.1 no\n', 'm'), /m:1: relay takes nothing/);
  assert.throws(() => parseMap('a.example backup_mx host:99999\n', 'm'), /m:1: .* is no HOST/);
});

/** A server on 127.0.0.1 that greets each connection with `greeting` (or says nothing when it is ""). */
async function greeter(greeting: string): Promise<{ port: number; close(): void; seen: () => number }> {
  let seen = 0;
  const server = net.createServer((s) => {
    seen++;
    s.on('error', () => undefined);
    if (greeting) s.write(`${greeting}\r\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    seen: () => seen,
    close: () => {
      server.close();
      server.unref();
    },
  };
}

test('a primary answers only with a 220 greeting within the time limit', async () => {
  const up = await greeter('220 primary.example ESMTP');
  const busy = await greeter('554 5.3.2 not now');
  const silent = await greeter('');
  const gone = await greeter('220 x');
  gone.close();
  try {
    assert.equal(await answers('127.0.0.1', up.port, 2000), true);
    assert.equal(await answers('127.0.0.1', busy.port, 2000), false, 'a 554 greeting is no answer');
    assert.equal(await answers('127.0.0.1', silent.port, 300), false, 'silence past the limit is no answer');
    assert.equal(await answers('127.0.0.1', gone.port, 2000), false, 'a refused connection is no answer');
  } finally {
    for (const s of [up, busy, silent]) s.close();
  }
});

test('the relay stage: relay domains granted, a backup MX deferred while its primary answers', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-map-'));
  const primary = await greeter('220 primary.example ESMTP');
  const file = path.join(dir, 'map');
  fs.writeFileSync(
    file,
    `relay.example relay\nbackup.example backup_mx 127.0.0.1:${primary.port}\nrefused.example reject\n`,
  );
  const h = addressMap({ file, probe_cache: '1s' }, { log: () => undefined, hostname: 'h' });
  const facts = { id: 's', peer: '192.0.2.9', peerPort: 1, trusted: false, secure: false, recipients: [] };
  const relay = (to: string) => h.relay!(facts, { stage: 'relay', verb: 'RCPT', arg: to });
  try {
    assert.deepEqual(await relay('x@relay.example'), { action: 'accept' });
    assert.deepEqual(
      await relay('x@other.example'),
      { action: 'continue' },
      'not in the map: the relay policy says no',
    );
    assert.equal((await relay('x@refused.example')).action, 'continue', 'only relay lines grant');
    const busy = await relay('x@backup.example');
    assert.equal(busy.action, 'defer');
    assert.match(JSON.stringify(busy), /451.*4\.7\.1.*answers: deliver there/);
    assert.deepEqual(await relay('y@backup.example'), busy, 'the answer is kept');
    assert.equal(primary.seen(), 1, 'one probe for both recipients');
    primary.close();
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual(await relay('x@backup.example'), { action: 'accept' }, 'a primary that is down: taken');
    assert.deepEqual(
      await h.rcpt!(facts, { stage: 'rcpt', verb: 'RCPT', arg: 'x@relay.example' }),
      { action: 'continue' },
      'at RCPT a relay line is no verdict',
    );
  } finally {
    primary.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
