// Local notices: the mbox entry (From line, >From escaping, one append per notice, 0600, no symlinks)
// and the notify command (argv without a shell, clean environment, stdin, failures and timeouts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { Notice } from '../../src/queue/bounce.js';
import { appendMbox, localNoticeDelivery, mboxEntry, runNotifyCommand } from '../../src/queue/local-notice.js';
import { tempDir } from '../helpers.js';

/** A notice whose text and summary hold hostile peer text (shell syntax that must stay plain text). */
function notice(summary = '<a@x.org>: 550 5.1.1 $(echo hi) `id`; "quoted" * ~'): Notice {
  const text = [
    'From: MAILER-DAEMON@h',
    'Subject: s',
    '',
    'From the server: no',
    '>From quoted already',
    'From',
    '',
  ].join('\r\n');
  return {
    sender: '',
    recipient: 'me@laptop.local',
    text,
    kind: 'failed',
    id: '01M8487W0B5M96XK',
    subject: 'Undelivered Mail Returned to Sender: message 01M8487W0B5M96XK',
    summary,
  };
}

test('an mbox entry: From_ line, LF line ends, every From_ in the body escaped one level more, a blank line at the end', () => {
  const e = mboxEntry(notice().text, new Date('2026-11-03T05:08:09Z'));
  assert.equal(
    e,
    'From MAILER-DAEMON Tue Nov  3 05:08:09 2026\nFrom: MAILER-DAEMON@h\nSubject: s\n\n>From the server: no\n>>From quoted already\nFrom\n\n',
  );
});

test('appends go to the end, one whole notice each, in a 0600 file; a symbolic link is refused', async () => {
  const dir = tempDir();
  const box = path.join(dir, 'notices');
  await Promise.all(Array.from({ length: 20 }, () => appendMbox(box, notice())));
  const text = fs.readFileSync(box, 'utf8');
  assert.equal(text.match(/^From MAILER-DAEMON /gm)!.length, 20);
  // every entry is whole: split at the From_ lines, each part is exactly one escaped notice
  const one = mboxEntry(notice().text, new Date(0)).split('\n').slice(1).join('\n');
  for (const part of text.split(/^From MAILER-DAEMON .*\n/m).slice(1)) assert.equal(part, one);
  assert.equal(fs.statSync(box).mode & 0o777, 0o600);
  const target = path.join(dir, 'elsewhere');
  fs.writeFileSync(target, '');
  fs.symlinkSync(target, path.join(dir, 'link'));
  await assert.rejects(appendMbox(path.join(dir, 'link'), notice()), /ELOOP/);
  assert.equal(fs.readFileSync(target, 'utf8'), '');
});

test('the notify command gets its arguments as whole words, the summary on stdin, and a clean environment', async () => {
  const dir = tempDir();
  const out = path.join(dir, 'out.json');
  const script = `const fs=require('fs');let i='';process.stdin.on('data',d=>i+=d).on('end',()=>fs.writeFileSync(${JSON.stringify(out)},JSON.stringify({argv:process.argv.slice(1),stdin:i,env:Object.keys(process.env).sort()})))`;
  process.env.FERRYMAIL_TEST_SECRET = 'nope';
  try {
    await runNotifyCommand(
      [process.execPath, '-e', script, '${subject}', '--sum=${summary}', '${sender}', '${id}', '${unknown}'],
      notice(),
    );
  } finally {
    delete process.env.FERRYMAIL_TEST_SECRET;
  }
  const got = JSON.parse(fs.readFileSync(out, 'utf8'));
  assert.deepEqual(got.argv, [
    notice().subject,
    `--sum=${notice().summary}`,
    'me@laptop.local',
    '01M8487W0B5M96XK',
    '${unknown}',
  ]);
  assert.equal(got.stdin, `${notice().subject}\n${notice().summary}\n`);
  assert.ok(!got.env.includes('FERRYMAIL_TEST_SECRET'), 'the environment is not passed on');
  assert.ok(got.env.includes('PATH'));
});

test('a failing, missing or hanging notify command rejects with a readable reason', async () => {
  await assert.rejects(
    runNotifyCommand([process.execPath, '-e', 'console.error("no display"); process.exit(3)'], notice()),
    /notify_command .*: exit 3: no display/,
  );
  await assert.rejects(
    runNotifyCommand(['/nonexistent/notify'], notice()),
    /notify_command \/nonexistent\/notify: ENOENT/,
  );
  await assert.rejects(
    runNotifyCommand([process.execPath, '-e', 'setInterval(() => {}, 1000)'], notice(), 300),
    /notify_command \S+: timed out/,
  );
});

test('both ways together; one failing does not stop the other, and the failure is reported', async () => {
  assert.equal(localNoticeDelivery({ command: [] }), undefined, 'nothing configured: no local delivery');
  const dir = tempDir();
  const box = path.join(dir, 'box');
  const deliver = localNoticeDelivery({ mailbox: box, command: ['/nonexistent/notify'] })!;
  await assert.rejects(deliver(notice()), /ENOENT/);
  assert.match(fs.readFileSync(box, 'utf8'), /^From MAILER-DAEMON /);
});
