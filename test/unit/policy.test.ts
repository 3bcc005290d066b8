// Relay policy and address ranges.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkAddress } from '../../src/domain/address.js';
import { ClientCounter, inRanges, isLocalRecipient, isLoopback, mayRelay } from '../../src/receive/policy.js';

test('address ranges, IPv4, IPv6 and mapped forms', () => {
  assert.ok(inRanges('192.168.1.7', ['192.168.1.0/24']));
  assert.ok(!inRanges('192.168.2.7', ['192.168.1.0/24']));
  assert.ok(inRanges('::ffff:10.1.2.3', ['10.0.0.0/8']));
  assert.ok(inRanges('fd00::1', ['fd00::/8']));
  assert.ok(!inRanges('fe80::1', ['fd00::/8']));
  assert.ok(inRanges('2001:db8::5', ['2001:db8::/32']));
  assert.ok(!inRanges('10.0.0.1', ['fd00::/8']));
  assert.ok(inRanges('0.0.0.0', ['0.0.0.0/0']));
  assert.ok(!inRanges('garbage', ['0.0.0.0/0']));
  assert.ok(isLoopback('127.0.0.1') && isLoopback('127.8.9.1') && isLoopback('::1') && isLoopback('::ffff:127.0.0.1'));
  assert.ok(!isLoopback('10.0.0.1'));
});

test('who may relay', () => {
  const localNets = ['192.168.1.0/24'];
  assert.ok(mayRelay({ peer: '127.0.0.1', authenticated: false, localNets }));
  assert.ok(mayRelay({ peer: '192.168.1.20', authenticated: false, localNets }));
  assert.ok(!mayRelay({ peer: '203.0.113.9', authenticated: false, localNets }));
  assert.ok(mayRelay({ peer: '203.0.113.9', authenticated: true, localNets }));
  assert.ok(isLocalRecipient('root@Host.Example', ['host.example']));
  assert.ok(!isLocalRecipient('root@other.example', ['host.example']));
});

test('connection counter per client', () => {
  const c = new ClientCounter();
  assert.equal(c.add('a'), 1);
  assert.equal(c.add('a'), 2);
  assert.equal(c.add('b'), 1);
  assert.equal(c.total, 3);
  c.remove('a');
  assert.equal(c.add('a'), 2);
});

test('address syntax', () => {
  for (const good of ['a@b.org', 'a.b+c@x-y.example', '"quoted name"@x.org', 'üser@exämple.org', 'a@[192.0.2.1]', 'a@[IPv6:2001:db8::1]']) {
    assert.ok(checkAddress(good).ok, good);
  }
  for (const bad of ['', 'a', '@b.org', 'a@', 'a b@c.org', 'a@-bad-.org', 'a..b@c.org', 'a@b..org', 'a@b.org\r\nRCPT', `${'x'.repeat(65)}@b.org`]) {
    assert.equal(checkAddress(bad).ok, false, bad);
  }
  assert.equal((checkAddress('üser@ExÄmple.org') as { utf8: boolean }).utf8, true);
});

test('international domains are kept in A-labels; only a UTF-8 local part needs SMTPUTF8', () => {
  const idn = checkAddress('u@Bücher.example');
  assert.deepEqual(idn, { ok: true, address: 'u@xn--bcher-kva.example', utf8: false });
  const ace = checkAddress('u@xn--bcher-kva.example');
  assert.deepEqual(ace, { ok: true, address: 'u@xn--bcher-kva.example', utf8: false });
  const local = checkAddress('jürgen@example.org');
  assert.deepEqual(local, { ok: true, address: 'jürgen@example.org', utf8: true });
});
