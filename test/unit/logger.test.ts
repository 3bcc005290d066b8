// The logger keeps one event on one line whatever the fields hold.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';

/** A logger writing into a string. */
function capture(format: 'text' | 'json'): { log: ReturnType<typeof createLogger>; text: () => string } {
  let out = '';
  const sink = new Writable({ write: (c, _e, cb) => ((out += c), cb()) });
  return { log: createLogger(format, sink), text: () => out };
}

test('text: marks, fields, quoting, and no forged lines', () => {
  const c = capture('text');
  c.log.log('received', 'ID1', {
    from: '<a@b>',
    helo: 'x\r\n2026-01-01T00:00:00Z <= FORGED',
    note: 'two words',
    none: undefined,
  });
  const lines = c.text().split('\n').filter(Boolean);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^\S+Z <= ID1 from=<a@b> helo="x\\\\x0d\\\\x0a2026/);
  assert.match(lines[0]!, /note="two words"$/);
});

test('json: one object per line', () => {
  const c = capture('json');
  c.log.log('warn', 'message refused', { reason: 'bad\nline', size: 12 });
  const lines = c.text().split('\n').filter(Boolean);
  assert.equal(lines.length, 1);
  const o = JSON.parse(lines[0]!);
  assert.equal(o.event, 'warn');
  assert.equal(o.reason, 'bad\nline');
  assert.equal(o.size, 12);
});

test('text: C1 controls and Unicode line separators are escaped too', () => {
  const c = capture('text');
  c.log.log('warn', 'authentication failed', { peer: '[192.0.2.1]', user: 'bob\u2028x\u0085y\u009b1m\u2029z' });
  const out = c.text();
  assert.equal(out.split('\n').filter(Boolean).length, 1);
  assert.doesNotMatch(out, /[\u0080-\u009f\u2028\u2029]/);
  assert.match(out, / !! authentication failed peer=\[192\.0\.2\.1\] user=bob\\u2028x\\x85y\\x9b1m\\u2029z\n$/);
});
