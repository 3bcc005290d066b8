// The logger keeps one event on one line whatever the fields hold.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log/logger.js';

/** A logger writing into a string. */
function capture(format: 'text' | 'json'): { log: ReturnType<typeof createLogger>; text: () => Promise<string>; writes: () => number } {
  let out = '';
  let writes = 0;
  const sink = new Writable({ write: (c, _e, cb) => ((out += c), writes++, cb()) });
  // lines are written at the end of the turn they were logged in
  return { log: createLogger(format, sink), text: () => new Promise((r) => setImmediate(() => r(out))), writes: () => writes };
}

test('text: marks, fields, quoting, and no forged lines', async () => {
  const c = capture('text');
  c.log.log('received', 'ID1', { from: '<a@b>', helo: 'x\r\n2026-01-01T00:00:00Z <= FORGED', note: 'two words', none: undefined });
  const lines = (await c.text()).split('\n').filter(Boolean);
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^\S+Z <= ID1 from=<a@b> helo="x\\\\x0d\\\\x0a2026/);
  assert.match(lines[0]!, /note="two words"$/);
});

test('json: one object per line', async () => {
  const c = capture('json');
  c.log.log('warn', 'message refused', { reason: 'bad\nline', size: 12 });
  const lines = (await c.text()).split('\n').filter(Boolean);
  assert.equal(lines.length, 1);
  const o = JSON.parse(lines[0]!);
  assert.equal(o.event, 'warn');
  assert.equal(o.reason, 'bad\nline');
  assert.equal(o.size, 12);
});

test('lines of one turn are written together, in order; lines pending when the process exits are written', async () => {
  const c = capture('text');
  for (let i = 0; i < 50; i++) c.log.log('delivered', `ID${i}`);
  assert.equal(c.writes(), 0, 'nothing written yet');
  const lines = (await c.text()).split('\n').filter(Boolean);
  assert.deepEqual(lines.map((l) => l.split(' ')[2]), Array.from({ length: 50 }, (_, i) => `ID${i}`));
  assert.equal(c.writes(), 1);
  const url = new URL('../../src/log/logger.js', import.meta.url).href;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `const { createLogger } = await import(${JSON.stringify(url)}); createLogger('text').log('failed', 'LAST'); process.exit(3);`], { encoding: 'utf8' });
  assert.equal(r.status, 3);
  assert.match(r.stderr, /^\S+Z \*\* LAST\n$/);
});
