// sendmail -bs fed by a local program that ends its lines with LF alone, and a UTF-8 recipient given
// without the SMTPUTF8 parameter: the message is taken and flagged for SMTPUTF8.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { makeConfig, queueJson, sendmail } from '../helpers.js';

test('-bs with LF line ends ends DATA at the lone dot and flags UTF-8 addresses', async () => {
  const cfg = await makeConfig();
  const session =
    'EHLO me\nMAIL FROM:<a@example.org>\nRCPT TO:<jürgen@example.org>\nDATA\nSubject: lf\n\nbody\n.\nQUIT\n';
  const r = await sendmail(cfg, ['-bs'], session);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /250 2\.0\.0 Ok: queued as [0-9A-Z]{16}/);
  assert.match(r.stdout, /221 /);
  const q = await queueJson(cfg);
  assert.equal(q.length, 1);
  assert.equal(q[0]!.smtputf8, true);
  assert.equal(q[0]!.recipients[0].address, 'jürgen@example.org');
});

test('-bs in CRLF with a bare-LF dot inside DATA: no second message is smuggled in', async () => {
  const cfg = await makeConfig();
  const session =
    'EHLO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\n.\n' +
    'MAIL FROM:<ceo@bank.example>\nRCPT TO:<victim@example.com>\nDATA\nforged\r\n.\r\nQUIT\r\n';
  const r = await sendmail(cfg, ['-bs'], session);
  assert.doesNotMatch(r.stdout, /queued as[\s\S]*queued as/);
  const q = await queueJson(cfg);
  assert.ok(!q.some((e) => e.sender === 'ceo@bank.example'), 'no smuggled message');
  assert.match(r.stdout, /550 5\.6\.0/);
});

test('RCPT TO:<postmaster> is accepted (and is root); an IDN recipient is stored in A-labels without SMTPUTF8', async () => {
  const cfg = await makeConfig();
  const session =
    'EHLO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<Postmaster@TEST.example>\r\nRCPT TO:<u@xn--bcher-kva.example>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n';
  const r = await sendmail(cfg, ['-bs'], session);
  assert.match(r.stdout, /queued as/);
  const q = await queueJson(cfg);
  assert.deepEqual(
    q[0]!.recipients.map((x: { address: string; orig: string | null }) => [x.address, x.orig]),
    [
      ['root@test.example', 'postmaster@test.example'],
      ['u@xn--bcher-kva.example', null],
    ],
  );
  assert.equal(q[0]!.smtputf8, false);
});

test('-bs input that ends in the middle of DATA: exit 75, nothing queued, no temporary file left', async () => {
  const cfg = await makeConfig();
  const session =
    'EHLO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: cut\r\n\r\nhalf a bo';
  const r = await sendmail(cfg, ['-bs'], session);
  assert.equal(r.code, 75, r.stderr);
  assert.match(r.stderr, /ended in the middle of a message/);
  assert.deepEqual(await queueJson(cfg), []);
  assert.deepEqual(fs.readdirSync(path.join(cfg.spool, 'tmp')), []);
});
