// SIGTERM: the transaction in flight finishes with 250, idle sessions get 421, new ones are refused,
// and the daemon exits 0 with the message durable.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { makeConfig, queueJson, RawSmtp, startDaemon } from '../helpers.js';

test('graceful shutdown on SIGTERM', async () => {
  const d = await startDaemon(await makeConfig());
  try {
    const busy = await RawSmtp.connect(d.cfg.port);
    const idle = await RawSmtp.connect(d.cfg.port);
    for (const c of [busy, idle]) {
      await c.reply();
      await c.cmd('EHLO x.example');
    }
    await busy.cmd('MAIL FROM:<a@example.com>');
    await busy.cmd('RCPT TO:<b@example.org>');
    assert.match(await busy.cmd('DATA'), /^354/);
    busy.send('Subject: in flight\r\n\r\nfirst half\r\n');
    await new Promise((r) => setTimeout(r, 100));
    d.child.kill('SIGTERM');
    assert.match(await idle.reply(), /^421 4\.3\.2 /);
    busy.send('second half\r\n.\r\n');
    const done = await busy.reply();
    assert.match(done, /^250 2\.0\.0 Ok: queued as /);
    const refused = await new Promise<boolean>((resolve) => {
      const s = net.connect(d.cfg.port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(false)));
      s.once('error', () => resolve(true));
    });
    assert.ok(refused, 'no new connections once shutting down');
    assert.match(await busy.cmd('QUIT').catch(() => '421 closed'), /^(221|421)/);
    const code = d.child.exitCode ?? (await new Promise<number | null>((resolve) => d.child.once('exit', resolve)));
    assert.equal(code, 0);
    const id = /queued as (\S+)/.exec(done)![1];
    const q = await queueJson(d.cfg);
    assert.ok(
      q.some((e) => e.id === id),
      'the message that got 250 is queued',
    );
  } finally {
    d.child.kill('SIGKILL');
  }
});
