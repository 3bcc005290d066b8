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
  c.log.log('received', 'ID1', { from: '<a@b>', helo: 'x\r\n2026-01-01T00:00:00Z <= FORGED', note: 'two words', none: undefined });
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
