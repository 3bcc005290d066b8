// The built-in rate_limit and address_map hooks against the real daemon: a client's connections and
// messages limited (then refused with 451 4.7.1), and recipients accepted, refused or deferred by a map
// file that is read again when it changes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { makeConfig, RawSmtp, startDaemon, stopDaemon, waitUntil } from '../helpers.js';

test('rate_limit: connections and messages of a client past their limit get 451 4.7.1', async () => {
  const cfg = await makeConfig(
    'hooks:\n  - builtin: rate_limit\n    options: { client_connections: 3, client_messages: 2, window: 1h, exempt_trusted: false }\n',
  );
  const d = await startDaemon(cfg);
  try {
    const replies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const c = await RawSmtp.connectFrom(cfg.port, '127.0.0.1', '127.0.0.7');
      replies.push(await c.reply());
      c.close();
    }
    assert.deepEqual(
      replies.map((r) => r.slice(0, 9)),
      ['220 test.', '220 test.', '220 test.', '451 4.7.1'],
    );
    assert.match(replies[3]!, /Rate limit reached: 3 connections per 1h/);
    // another client has its own count; its third message in the window is deferred
    const c = await RawSmtp.connectFrom(cfg.port, '127.0.0.1', '127.0.0.8');
    assert.match(await c.reply(), /^220/);
    await c.cmd('EHLO client.example');
    assert.match(await c.cmd('MAIL FROM:<a@remote.example>'), /^250/);
    assert.match(await c.cmd('RSET'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<a@remote.example>'), /^250/);
    assert.match(await c.cmd('RSET'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<a@remote.example>'), /^451 4\.7\.1 Rate limit reached: 2 messages per 1h/);
    c.close();
    assert.match(d.log(), /rate_limit: client \[127\.0\.0\.7\] reached client_connections/);
  } finally {
    await stopDaemon(d);
  }
});

test('address_map: recipients accepted, refused with the map reply, deferred; a changed file is read again', async () => {
  const cfg = await makeConfig();
  const map = path.join(cfg.configDir, 'recipients.map');
  fs.writeFileSync(map, 'gone@remote.example reject 550 5.1.1 No longer here\n@slow.example defer\n');
  fs.appendFileSync(
    path.join(cfg.configDir, 'ferrymail.yaml'),
    `hooks:\n  - builtin: address_map\n    options: { file: ${JSON.stringify(map)} }\n`,
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    await c.reply();
    await c.cmd('EHLO client.example');
    await c.cmd('MAIL FROM:<a@remote.example>');
    assert.match(await c.cmd('RCPT TO:<gone@remote.example>'), /^550 5\.1\.1 No longer here/);
    assert.match(await c.cmd('RCPT TO:<x@slow.example>'), /^450 4\.7\.1 /);
    assert.match(await c.cmd('RCPT TO:<x@remote.example>'), /^250/);
    fs.writeFileSync(map, 'remote.example reject\n');
    assert.ok(
      await waitUntil(async () => /^554 5\.7\.1/.test(await c.cmd('RCPT TO:<y@remote.example>')), 5000),
      'the changed map is read again',
    );
    c.close();
  } finally {
    await stopDaemon(d);
  }
});

test('vet: a local client’s header checked (From, Date, repeated fields); with fix, a missing From is made of the sender', async () => {
  for (const fix of [false, true]) {
    const cfg = await makeConfig(`hooks:\n  - builtin: vet\n    options: { fix: ${fix} }\n`);
    const d = await startDaemon(cfg);
    try {
      const send = async (head: string): Promise<string> => {
        const c = await RawSmtp.connect(cfg.port);
        await c.reply();
        await c.cmd('EHLO client.example');
        await c.cmd('MAIL FROM:<ann@example.org>');
        await c.cmd('RCPT TO:<b@remote.example>');
        await c.cmd('DATA');
        c.send(`${head}\r\n\r\nbody\r\n.\r\n`);
        const r = await c.reply();
        c.close();
        return r;
      };
      const noFrom = await send('Subject: no from');
      if (fix) assert.match(noFrom, /^250 /);
      else assert.match(noFrom, /^550 5\.6\.0 Message header refused: the header has no From field/);
      assert.match(await send('From: a@example.org\r\nSubject: a\r\nSubject: b'), /^550 5\.6\.0 .*2 subject fields/);
      assert.match(await send('From: a@example.org\r\nDate: whenever'), /^550 5\.6\.0 .*Date field is no date/);
      assert.match(
        await send('From: Ann <ann@example.org>\r\nSubject: fine'),
        /^250 /,
        'Date and Message-ID added by the door',
      );
    } finally {
      await stopDaemon(d);
    }
  }
});
