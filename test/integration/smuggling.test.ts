// hannob/smtpsmug's cases against the real daemon, with a client of our own: every malformed end of
// DATA (bare LF or CR around the dot, a NUL before or after it) is refused and queues nothing, and so is
// input pipelined after DATA before the 354 (a second transaction in the same packet), as Postfix's
// smtpd_forbid_unauth_pipelining. The same cases on sendmail -bs, whose lines a local program writes.
// Also: invalid UTF-8 in addresses, NUL in commands, and a hook never seeing AUTH's credentials.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  makeConfig,
  queueJson,
  RawSmtp,
  sendmail,
  startDaemon,
  stopDaemon,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

let cfg: TestConfig;
let d: RunningDaemon;

before(async () => {
  cfg = await makeConfig();
  d = await startDaemon(cfg);
});
after(() => stopDaemon(d));

/** smtpsmug's malformed endings (its nullafter repeats nullbefore; here it is a NUL after the dot). */
const BAD_ENDS: Record<string, string> = {
  lflf: '\n.\n',
  crcr: '\r.\r',
  crlf: '\r.\n',
  lfcr: '\n.\r',
  lfcrlf: '\n.\r\n',
  crlflf: '\r\n.\n',
  crcrlf: '\r.\r\n',
  crlfcr: '\r\n.\r',
  nullbefore: '\r\n\0.\r\n',
  nullafter: '\r\n.\0\r\n',
};

/** A session up to the 354 of DATA. */
async function toData(c: RawSmtp, from = 'alice@example.org'): Promise<void> {
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.cmd('EHLO client.example'), /^250/);
  assert.match(await c.cmd(`MAIL FROM:<${from}>`), /^250 /);
  assert.match(await c.cmd('RCPT TO:<bob@example.org>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354/);
}

/** What a smuggled second message would look like after the malformed end. */
const SMUGGLED =
  'MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n.\r\n';

for (const [name, end] of Object.entries(BAD_ENDS)) {
  test(`smtpsmug ${name}: the malformed end is no end, the message is refused, nothing is queued`, async () => {
    const before = (await queueJson(cfg)).length;
    const c = await RawSmtp.connect(cfg.port);
    try {
      await toData(c);
      // the smuggled message's own end is the first real end of DATA: all of it is one message, refused
      c.send(
        `From: alice@example.org\r\nSubject: ${name}\r\n\r\nThis is a test mail with a bad ending.${end}${SMUGGLED}`,
      );
      const r = await c.reply();
      assert.match(r, /^550 5\.6\.0 /, r);
      assert.match(await c.cmd('QUIT'), /^221/);
    } finally {
      c.close();
    }
    const q = await queueJson(cfg);
    assert.equal(q.length, before, 'nothing queued');
    assert.ok(!q.some((e) => e.sender === 'admin@bank.example'));
  });
}

test('smtpsmug pipelining: input after DATA before the 354 gets 554 5.5.0 and the connection closes; nothing is queued', async () => {
  const before = (await queueJson(cfg)).length;
  const c = await RawSmtp.connect(cfg.port);
  try {
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    // RFC 2920 pipelining of MAIL, RCPT and DATA is fine; the message after DATA, in the same packet, is not
    c.send(
      'MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nSubject: 1/2\r\n\r\nmail 1\r\n.\r\n' +
        SMUGGLED,
    );
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.reply(), /^554 5\.5\.0 Error: SMTP protocol synchronization/);
    await c.waitClose();
  } finally {
    c.close();
  }
  assert.equal((await queueJson(cfg)).length, before);
});

test('the same in a later transaction of the session, as smtpsmug sends it: refused', async () => {
  const before = (await queueJson(cfg)).length;
  const c = await RawSmtp.connect(cfg.port);
  try {
    await toData(c);
    c.send(`Subject: 1/2\r\n\r\nmail 1\r\n.\r\n${SMUGGLED}`);
    assert.match(await c.reply(), /^250 .*queued as/);
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.reply(), /^250 /);
    assert.match(await c.reply(), /^554 5\.5\.0 /);
    await c.waitClose();
  } finally {
    c.close();
  }
  const q = await queueJson(cfg);
  assert.equal(q.length, before + 1, 'the first message only');
  assert.ok(!q.some((e) => e.sender === 'admin@bank.example'));
});

test('invalid UTF-8 in MAIL and RCPT is refused, never stored with a replacement character', async () => {
  const c = await RawSmtp.connect(cfg.port);
  try {
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    c.send(Buffer.from('MAIL FROM:<\xff\xfe@example.org>\r\n', 'latin1'));
    assert.match(await c.reply(), /^553 5\.1\.7 /);
    assert.match(await c.cmd('MAIL FROM:<alice@example.org>'), /^250 /);
    for (const bad of ['\xff\xfe', '\xc0\xaf', '\xed\xa0\x80', '\xfe\xff']) {
      c.send(Buffer.concat([Buffer.from('RCPT TO:<'), Buffer.from(bad, 'latin1'), Buffer.from('@example.org>\r\n')]));
      assert.match(await c.reply(), /^553 5\.1\.3 /, JSON.stringify(bad));
    }
    c.send(Buffer.from('NOOP a\0b\r\n', 'latin1'));
    assert.match(await c.reply(), /^500 5\.5\.2 /);
  } finally {
    c.close();
  }
});

test('sendmail -bs: NUL and bare line ends around the dot are refused too', async () => {
  for (const name of ['nullbefore', 'nullafter', 'lfcrlf']) {
    const session = `EHLO me\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: ${name}\r\n\r\nbody${BAD_ENDS[name]}${SMUGGLED}\r\n.\r\nQUIT\r\n`;
    const r = await sendmail(cfg, ['-bs'], session);
    assert.match(r.stdout, /550 5\.6\.0/, `${name}: ${r.stdout}`);
    assert.doesNotMatch(r.stdout, /queued as/, name);
  }
});

test('the sendmail command refuses a NUL in the message (65) and a CR or LF in -V (64)', async () => {
  const nul = await sendmail(cfg, ['-i', 'x@example.org'], 'Subject: s\n\nbody\0with a NUL\n');
  assert.equal(nul.code, 65, nul.stderr);
  assert.match(nul.stderr, /NUL/);
  const envid = await sendmail(
    cfg,
    ['-i', '-V', 'id\r\nContent-Type: text/html', 'x@example.org'],
    'Subject: s\n\nb\n',
  );
  assert.equal(envid.code, 64, envid.stderr);
  assert.equal(envid.stderr.trim().split('\n').length, 1);
});

test('an ENVID that decodes to anything but printable ASCII, or is too long, gets 501 5.5.4 and is not kept', async () => {
  const c = await RawSmtp.connect(cfg.port);
  try {
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(
      await c.cmd('MAIL FROM:<a@example.org> ENVID=abc+FF'),
      /^501 5\.5\.4 Bad ENVID parameter: not printable ASCII/,
    );
    assert.match(await c.cmd(`MAIL FROM:<a@example.org> ENVID=${'x'.repeat(101)}`), /^501 5\.5\.4 /);
    assert.match(await c.cmd('MAIL FROM:<a@example.org> ENVID=ok+2Bid'), /^250 /);
  } finally {
    c.close();
  }
});
