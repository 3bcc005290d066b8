// The SMTP door end to end: the real daemon, a raw client, the queue listing.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { makeConfig, messageData, queueJson, RawSmtp, startDaemon, type RunningDaemon } from '../helpers.js';

let d: RunningDaemon;
before(async () => {
  d = await startDaemon(await makeConfig());
});
after(async () => {
  await d.stop();
});

test('a message accepted with 250 is in the queue with its envelope and a Received header', async () => {
  const c = await RawSmtp.connect(d.cfg.port);
  assert.match(await c.reply(), /^220 test\.example ESMTP/);
  const ehlo = await c.cmd('EHLO client.example');
  for (const ext of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'DSN', 'SIZE 52428800']) {
    assert.ok(ehlo.includes(ext), `EHLO offers ${ext}: ${ehlo}`);
  }
  assert.match(await c.cmd('MAIL FROM:<alice@example.com> RET=HDRS ENVID=abc'), /^250 2\.1\.0/);
  assert.match(await c.cmd('RCPT TO:<bob@example.org> NOTIFY=FAILURE,DELAY'), /^250 2\.1\.5/);
  assert.match(await c.cmd('DATA'), /^354/);
  const reply = await c.cmd('Subject: hello\r\n\r\nbody line\r\n.');
  const id = /queued as ([0-9A-Z]{16})/.exec(reply)?.[1];
  assert.ok(id, reply);
  assert.match(reply, /^250 2\.0\.0/);
  assert.match(await c.cmd('QUIT'), /^221/);
  const q = await queueJson(d.cfg);
  const e = q.find((x) => x.id === id);
  assert.ok(e, 'entry listed');
  assert.equal(e.sender, 'alice@example.com');
  assert.deepEqual(
    e.recipients.map((r: { address: string; state: string }) => [r.address, r.state]),
    [['bob@example.org', 'queued']],
  );
  const data = messageData(d.cfg, id);
  assert.match(
    data,
    /^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n?\s*by test\.example|^Received: from client\.example \(\[127\.0\.0\.1\]\) by test\.example/,
  );
  assert.ok(data.endsWith('body line\r\n'), JSON.stringify(data.slice(-20)));
  assert.match(data, /\r\nSubject: hello\r\n/);
  assert.match(d.log(), new RegExp(`<= ${id} from=<alice@example.com>`));
});
