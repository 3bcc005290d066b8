// Relay policy edge cases: who counts as loopback, range boundaries, mapped and long IPv6 forms.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientCounter, inRanges, isLoopback, mayRelay } from '../../src/receive/policy.js';

test('loopback is 127.0.0.0/8 and ::1 in every spelling, and nothing else', () => {
  for (const ip of ['127.0.0.1', '127.255.255.254', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::FFFF:127.1.2.3']) {
    assert.ok(isLoopback(ip), ip);
  }
  for (const ip of [
    '128.0.0.1',
    '126.255.255.255',
    '::',
    '::2',
    '::ffff:10.0.0.1',
    '10.250.1.1',
    'fe80::1',
    '',
    'localhost',
    '127.0.0.1/8',
  ]) {
    assert.ok(!isLoopback(ip), ip);
  }
});

test('loopback may always relay, whatever local_nets says; others only from local_nets or authenticated', () => {
  for (const localNets of [[], ['127.0.0.0/8'], ['10.0.0.0/8']]) {
    assert.ok(mayRelay({ peer: '::1', authenticated: false, localNets }), `::1 with ${localNets}`);
    assert.ok(mayRelay({ peer: '127.0.0.1', authenticated: false, localNets }), `127.0.0.1 with ${localNets}`);
  }
  assert.ok(!mayRelay({ peer: '10.250.1.1', authenticated: false, localNets: ['127.0.0.0/8'] }));
  assert.ok(!mayRelay({ peer: '10.250.1.1', authenticated: false, localNets: [] }));
  assert.ok(mayRelay({ peer: '10.250.1.1', authenticated: false, localNets: ['10.250.0.0/16'] }));
  assert.ok(mayRelay({ peer: '::ffff:10.250.1.1', authenticated: false, localNets: ['10.250.0.0/16'] }));
  assert.ok(mayRelay({ peer: '10.250.1.1', authenticated: true, localNets: [] }));
  assert.ok(!mayRelay({ peer: 'not an address', authenticated: false, localNets: ['0.0.0.0/0', '::/0'] }));
});

test('range boundaries', () => {
  assert.ok(inRanges('10.250.7.1', ['10.250.7.0/30']) && inRanges('10.250.7.3', ['10.250.7.0/30']));
  assert.ok(!inRanges('10.250.7.4', ['10.250.7.0/30']));
  assert.ok(inRanges('192.0.2.1', ['192.0.2.1/32']) && !inRanges('192.0.2.2', ['192.0.2.1/32']));
  assert.ok(inRanges('2001:db8::1', ['2001:db8::1/128']) && !inRanges('2001:db8::2', ['2001:db8::1/128']));
  assert.ok(inRanges('2001:db8:0:0:0:0:0:ff', ['2001:db8::/120']) && !inRanges('2001:db8::1:0', ['2001:db8::/120']));
  assert.ok(inRanges('::1', ['::/0']) && !inRanges('10.0.0.1', ['::/0']));
  assert.ok(!inRanges('10.0.0.1', []));
  // an unparsable range is skipped, the others still count
  assert.ok(inRanges('10.0.0.1', ['garbage/8', '10.0.0.0/8']));
});

test('a local_nets entry written in IPv4-mapped form covers the IPv4 range it maps', () => {
  assert.ok(inRanges('10.1.2.3', ['::ffff:10.0.0.0/104']));
  assert.ok(inRanges('::ffff:10.1.2.3', ['::ffff:10.0.0.0/104']));
  assert.ok(!inRanges('11.1.2.3', ['::ffff:10.0.0.0/104']));
  assert.ok(inRanges('192.0.2.9', ['::ffff:192.0.2.9/128']) && !inRanges('192.0.2.8', ['::ffff:192.0.2.9/128']));
});

test('the connection counter never goes below zero and forgets clients at zero', () => {
  const c = new ClientCounter();
  c.remove('10.0.0.1');
  assert.equal(c.total, 0);
  assert.equal(c.add('10.0.0.1'), 1);
  c.remove('10.0.0.1');
  c.remove('10.0.0.1');
  assert.equal(c.total, 0);
  assert.equal(c.add('10.0.0.1'), 1, 'counting starts afresh');
  assert.equal(c.add('10.0.0.2'), 1);
  assert.equal(c.total, 2);
});
