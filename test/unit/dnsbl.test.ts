// DNS list query names (IPv4 octets and IPv6 nibbles reversed) and address list files.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { queryName } from '../../src/receive/dnsbl.js';
import { parseList } from '../../src/receive/ip-list.js';

test('query names: IPv4, IPv4-mapped, IPv6 in nibble order; nothing for what is no address', () => {
  assert.equal(queryName('192.0.2.1', 'zen.example'), '1.2.0.192.zen.example');
  assert.equal(queryName('::ffff:192.0.2.1', 'zen.example'), '1.2.0.192.zen.example');
  assert.equal(
    queryName('2001:db8::1', 'bl.example'),
    '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example',
  );
  assert.equal(queryName('not-an-ip', 'bl.example'), undefined);
});

test('list files: addresses become single-address ranges, comments and blank lines are skipped, bad lines named', () => {
  assert.deepEqual(parseList('# c\n192.0.2.1\n\n10.0.0.0/8 # net\n2001:db8::/32\n::1\n', 'f'), [
    '192.0.2.1/32',
    '10.0.0.0/8',
    '2001:db8::/32',
    '::1/128',
  ]);
  assert.throws(() => parseList('192.0.2.1\nfoo\n', 'f'), /f:2: "foo"/);
  assert.throws(() => parseList('10.0.0.0/33\n', 'f'), /f:1/);
  assert.throws(() => parseList('10.0.0.0/8/1\n', 'f'), /f:1/);
});
