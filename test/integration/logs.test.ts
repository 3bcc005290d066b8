// Log lines: one per event, text by default, one JSON object per line with --log-format json; peer
// text cannot forge a second line.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeConfig, RawSmtp, startDaemon } from '../helpers.js';

/** Sends one message with a hostile HELO name; resolves with its queue id. */
async function sendOne(port: number): Promise<string> {
  const c = await RawSmtp.connect(port);
  await c.reply();
  await c.cmd('EHLO evil.example');
  await c.cmd('MAIL FROM:<a@example.com>');
  await c.cmd('RCPT TO:<b@example.org>');
  await c.cmd('DATA');
  const r = await c.cmd('Subject: x\r\n\r\nbody\r\n.');
  await c.cmd('QUIT');
  const id = /queued as (\S+)/.exec(r)?.[1];
  assert.ok(id, r);
  return id;
}

test('--log-format json writes one parseable object per line', async () => {
  const d = await startDaemon(await makeConfig(), ['--log-format', 'json']);
  try {
    const id = await sendOne(d.cfg.port);
    await new Promise((r) => setTimeout(r, 200));
    const lines = d.log().trim().split('\n');
    const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const rec = events.find((e) => e.event === 'received' && e.msg === id);
    assert.ok(rec, d.log());
    assert.equal(rec.from, '<a@example.com>');
    assert.equal(rec.peer, '[127.0.0.1]');
    assert.equal(rec.helo, 'evil.example');
    assert.ok(events.some((e) => e.event === 'info' && e.msg === 'ferrymail started'));
  } finally {
    await d.stop();
  }
});

test('text logs mark a received message with <= and its facts', async () => {
  const d = await startDaemon(await makeConfig());
  try {
    const id = await sendOne(d.cfg.port);
    await new Promise((r) => setTimeout(r, 200));
    assert.match(
      d.log(),
      new RegExp(
        `^\\S+ <= ${id} from=<a@example\\.com> size=\\d+ rcpts=1 proto=ESMTP peer=\\[127\\.0\\.0\\.1\\] helo=evil\\.example`,
        'm',
      ),
    );
  } finally {
    await d.stop();
  }
});

test('an IPv6 listen address the host does not have is skipped with a warning, the rest serves', async () => {
  const cfg = await makeConfig();
  const fs = await import('node:fs');
  const path = await import('node:path');
  const file = path.join(cfg.configDir, 'ferrymail.yaml');
  fs.writeFileSync(
    file,
    fs
      .readFileSync(file, 'utf8')
      .replace(
        /listen: \[(.*)\]/,
        'listen: [$1, "[2001:db8::1]:$${cfg.port}"]'.replace('$${cfg.port}', String(cfg.port)),
      ),
  );
  const d = await startDaemon(cfg);
  try {
    assert.match(d.log(), /cannot listen on \[2001:db8::1\]:\d+: EADDRNOTAVAIL; going on without it/);
    await sendOne(cfg.port);
  } finally {
    await d.stop();
  }
});
