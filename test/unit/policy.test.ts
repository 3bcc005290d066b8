// Relay policy, address ranges, session slots and the DATA deadline.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkAddress } from '../../src/domain/address.js';
import { ClientCounter, dataDeadline, inRanges, isLoopback, mayRelay, slotRefusal } from '../../src/receive/policy.js';

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
  for (const good of [
    'a@b.org',
    'a.b+c@x-y.example',
    '"quoted name"@x.org',
    'üser@exämple.org',
    'a@[192.0.2.1]',
    'a@[IPv6:2001:db8::1]',
  ]) {
    assert.ok(checkAddress(good).ok, good);
  }
  for (const bad of [
    '',
    'a',
    '@b.org',
    'a@',
    'a b@c.org',
    'a@-bad-.org',
    'a..b@c.org',
    'a@b..org',
    'a@b.org\r\nRCPT',
    `${'x'.repeat(65)}@b.org`,
  ]) {
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

test('an ASCII domain is its own lower-cased ASCII form; numeric last labels and A-labels go through the full conversion', () => {
  const norm = (a: string): string | false => {
    const r = checkAddress(a);
    return r.ok && r.address;
  };
  assert.equal(norm('User@Mail.Example.ORG'), 'User@mail.example.org');
  assert.equal(norm('u@ab--cd.example'), 'u@ab--cd.example');
  assert.equal(norm('u@XN--BCHER-KVA.example'), 'u@xn--bcher-kva.example');
  // a broken A-label is kept as written (the conversion refuses it)
  assert.equal(norm('u@xn--abc.example'), 'u@xn--abc.example');
  // a last label that is a number is read as an IPv4 address, as before
  assert.equal(norm('u@0x7f.1'), 'u@127.0.0.1');
  assert.equal(norm('u@foo.0x10'), 'u@foo.0x10');
  assert.equal(norm('u@host.0xbeef'), 'u@host.0xbeef');
  assert.equal(norm('u@host.beefy'), 'u@host.beefy');
});

test('session slots: clients that are not trusted leave limits.reserved_local free', () => {
  const limits = { connections: 4, reserved_local: 2, connections_per_client: 20 };
  const at = (total: number, trusted: boolean, perClient = 1, perClientExempt = false) =>
    slotRefusal({ total, perClient, trusted, perClientExempt }, limits);
  // total counts the new session itself
  assert.equal(at(1, false), undefined);
  assert.equal(at(2, false), undefined);
  assert.equal(at(3, false), 'full');
  assert.equal(at(3, true), undefined);
  assert.equal(at(4, true), undefined);
  assert.equal(at(5, true), 'full');
  assert.equal(at(2, false, 21), 'client');
  assert.equal(at(2, false, 21, true), undefined);
  assert.equal(at(5, true, 21, true), 'full');
  // a reservation as large as the whole limit serves trusted clients only
  assert.equal(
    slotRefusal({ total: 1, perClient: 1, trusted: false, perClientExempt: false }, { ...limits, reserved_local: 4 }),
    'full',
  );
  assert.equal(
    slotRefusal({ total: 1, perClient: 1, trusted: true, perClientExempt: false }, { ...limits, reserved_local: 4 }),
    undefined,
  );
  assert.equal(
    slotRefusal({ total: 4, perClient: 1, trusted: false, perClientExempt: false }, { ...limits, reserved_local: 0 }),
    undefined,
  );
});

test('the DATA deadline starts at the idle timeout and grows by a second per min_data_rate bytes', () => {
  const start = 1_000_000;
  assert.equal(dataDeadline(start, 0, 300_000, 500), start + 300_000);
  assert.equal(dataDeadline(start, 500, 300_000, 500), start + 301_000);
  assert.equal(dataDeadline(start, 1_000_000, 300_000, 500), start + 2_300_000);
  assert.equal(dataDeadline(start, 250, 3000, 1000), start + 3250);
  assert.equal(dataDeadline(start, 10 ** 9, 3000, 0), Infinity, 'no minimum');
  // a client that keeps the rate never reaches its deadline: at t seconds it has sent rate * t bytes
  for (const t of [1, 10, 100, 10_000]) assert.ok(start + t * 1000 < dataDeadline(start, 500 * t, 300_000, 500));
  // one that sends less falls behind once the head start of the idle timeout is used up
  assert.ok(start + 700_000 > dataDeadline(start, 250 * 700, 300_000, 500));
});
