// swaks against the real daemon on loopback: submission, several recipients, PIPELINING, 8-bit and UTF-8
// mail, ESMTP parameters in the envelope, the size limit, local domains and SMTP AUTH.
//
// swaks 20201014 (the Debian package) has no options for MAIL/RCPT parameters (SIZE, BODY, SMTPUTF8, RET,
// ENVID, NOTIFY, ORCPT); those cases speak the exact protocol with the raw client instead.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  messageData,
  queueJson,
  queueShowJson,
  RawSmtp,
  run,
  startDaemon,
  stopDaemon,
  tempDir,
  type RunResult,
  type RunningDaemon,
} from '../helpers.js';

const SIZE_LIMIT = 10_240;
const LOCAL_DOMAIN = 'local.example';

/** What one swaks run printed, with the queue id it was given (if any). */
interface SwaksResult extends RunResult {
  out: string;
  id?: string;
}

const swaksHome = tempDir('ferrymail-swaks-');

/** Runs swaks against a loopback port; no configuration file of the user is read. */
async function swaks(port: number, args: string[], env: NodeJS.ProcessEnv = {}): Promise<SwaksResult> {
  const r = await run(
    'swaks',
    [
      '--server',
      '127.0.0.1',
      '--port',
      String(port),
      '--helo',
      'client.example',
      '--timeout',
      '10',
      ...args,
      '--config',
    ],
    {
      env: { SWAKS_HOME: swaksHome, ...env },
      timeoutMs: 20_000,
    },
  );
  const out = r.stdout + r.stderr;
  const id = /<-\s+250 .*queued as ([0-9A-Z]{16})/.exec(out)?.[1];
  return id ? { ...r, out, id } : { ...r, out };
}

/** Reads one message's envelope and header through `ferrymail queue show --json`. */
function show(d: RunningDaemon, id: string): Promise<Record<string, any>> {
  return queueShowJson(d.cfg, id);
}

/** A header section with folded lines joined. */
function unfold(header: string): string {
  return header.replace(/\r\n[ \t]+/g, ' ');
}

/** Runs a raw SMTP dialogue: each line is sent and its reply read; returns the replies. */
async function dialogue(port: number, lines: string[]): Promise<string[]> {
  const c = await RawSmtp.connect(port);
  try {
    const replies = [await c.reply()];
    for (const line of lines) replies.push(await c.cmd(line));
    return replies;
  } finally {
    c.close();
  }
}

/** The queue id in a "250 ... queued as ID" reply. */
function queuedId(reply: string | undefined): string {
  const id = /^250 2\.0\.0 .*queued as ([0-9A-Z]{16})/.exec(reply ?? '')?.[1];
  assert.ok(id, `not accepted: ${reply}`);
  return id;
}

describe('swaks against a daemon without AUTH', () => {
  let d: RunningDaemon;
  before(async () => {
    d = await startDaemon(await makeConfig(`local_domains: [${LOCAL_DOMAIN}]\nlimits:\n  message_size: ${SIZE_LIMIT}`));
  });
  after(async () => {
    await stopDaemon(d);
  });

  test('a plain submission is queued with its envelope, Received header and body', async () => {
    const body = `plain body ${randomBytes(4).toString('hex')}`;
    const r = await swaks(d.cfg.port, [
      '--from',
      'alice@example.com',
      '--to',
      'bob@example.org',
      '--header',
      'Subject: plain swaks',
      '--body',
      body,
    ]);
    assert.equal(r.code, 0, r.out);
    assert.ok(r.id, r.out);
    const e = await show(d, r.id);
    assert.equal(e.sender, 'alice@example.com');
    assert.deepEqual(
      e.recipients.map((x: any) => [x.address, x.state]),
      [['bob@example.org', 'queued']],
    );
    assert.equal(e.origin.door, 'smtp');
    assert.equal(e.origin.helo, 'client.example');
    assert.equal(e.body, '7BIT');
    assert.match(
      unfold(e.header),
      new RegExp(
        `^Received: from client\\.example \\(\\[127\\.0\\.0\\.1\\]\\) by test\\.example \\(ferrymail\\) with ESMTP id ${r.id} for <bob@example\\.org>;`,
      ),
    );
    assert.match(e.header, /\r\nSubject: plain swaks\r\n/);
    const data = messageData(d.cfg, r.id);
    assert.ok(data.includes(`\r\n\r\n${body}\r\n`), JSON.stringify(data));
    assert.match(d.log(), new RegExp(`<= ${r.id} from=<alice@example.com>`));
  });

  test('several recipients end up in one entry, in order, each queued', async () => {
    const rcpts = ['one@example.org', 'two@example.net', 'three@example.com'];
    const r = await swaks(d.cfg.port, ['--from', 'alice@example.com', '--to', rcpts.join(',')]);
    assert.equal(r.code, 0, r.out);
    assert.equal((r.out.match(/<-\s+250 2\.1\.5/g) ?? []).length, rcpts.length, r.out);
    const e = await show(d, r.id!);
    assert.deepEqual(
      e.recipients.map((x: any) => x.address),
      rcpts,
    );
    assert.ok(e.recipients.every((x: any) => x.state === 'queued'));
    // "for <...>" names a recipient only when there is exactly one
    assert.doesNotMatch(unfold(e.header).split('\r\n')[0]!, / for </);
  });

  test('PIPELINING: swaks sends MAIL, RCPT and DATA before reading a reply, and the message is queued', async () => {
    const r = await swaks(d.cfg.port, [
      '--pipeline',
      '--from',
      'alice@example.com',
      '--to',
      'p1@example.org,p2@example.org',
    ]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /<-\s+250-PIPELINING/);
    const lines = r.stdout.split('\n');
    const sentData = lines.findIndex((l) => /^ -> DATA/.test(l));
    const mailOk = lines.findIndex((l) => /^<-\s+250 2\.1\.0/.test(l));
    assert.ok(sentData >= 0 && mailOk >= 0, r.stdout);
    assert.ok(sentData < mailOk, `DATA was sent before the MAIL reply arrived:\n${r.stdout}`);
    const e = await show(d, r.id!);
    assert.deepEqual(
      e.recipients.map((x: any) => x.address),
      ['p1@example.org', 'p2@example.org'],
    );
  });

  test('an 8-bit body passes byte for byte', async () => {
    const body = 'Grüße aus Köln – 8bit ✓ ½';
    const r = await swaks(d.cfg.port, [
      '--from',
      'alice@example.com',
      '--to',
      'bob@example.org',
      '--header',
      'Content-Type: text/plain; charset=utf-8',
      '--body',
      body,
    ]);
    assert.equal(r.code, 0, r.out);
    const data = fs.readFileSync(path.join(d.cfg.spool, 'msg', r.id!));
    assert.ok(data.includes(Buffer.from(`\r\n\r\n${body}\r\n`, 'utf8')), data.toString('utf8'));
  });

  test('BODY=8BITMIME is recorded in the envelope', async () => {
    const body = 'Ünïcödé 8-bit line';
    const replies = await dialogue(d.cfg.port, [
      'EHLO client.example',
      'MAIL FROM:<alice@example.com> BODY=8BITMIME',
      'RCPT TO:<bob@example.org>',
      'DATA',
      `Subject: 8bit\r\n\r\n${body}\r\n.`,
      'QUIT',
    ]);
    assert.match(replies[1]!, /\n250-8BITMIME\n/);
    assert.match(replies[2]!, /^250 2\.1\.0/);
    const id = queuedId(replies[5]);
    const e = await show(d, id);
    assert.equal(e.body, '8BITMIME');
    assert.ok(fs.readFileSync(path.join(d.cfg.spool, 'msg', id)).includes(Buffer.from(body, 'utf8')));
  });

  test('UTF-8 addresses and a UTF-8 message from swaks are kept as sent', async () => {
    const r = await swaks(d.cfg.port, [
      '--from',
      'zoë@example.com',
      '--to',
      'jürgen@example.org',
      '--header',
      'Subject: Grüße',
      '--body',
      'Straße',
    ]);
    assert.equal(r.code, 0, r.out);
    const e = await show(d, r.id!);
    assert.equal(e.sender, 'zoë@example.com');
    assert.deepEqual(
      e.recipients.map((x: any) => x.address),
      ['jürgen@example.org'],
    );
    const data = fs.readFileSync(path.join(d.cfg.spool, 'msg', r.id!));
    assert.ok(data.includes(Buffer.from('\r\nSubject: Grüße\r\n', 'utf8')));
    assert.ok(data.includes(Buffer.from('\r\n\r\nStraße\r\n', 'utf8')));
  });

  test('SMTPUTF8 with a UTF-8 local part is recorded in the envelope', async () => {
    const replies = await dialogue(d.cfg.port, [
      'EHLO client.example',
      'MAIL FROM:<zoë@example.com> SMTPUTF8 BODY=8BITMIME',
      'RCPT TO:<jürgen@example.org>',
      'DATA',
      'From: zoë@example.com\r\nTo: jürgen@example.org\r\nSubject: Grüße\r\n\r\nStraße\r\n.',
      'QUIT',
    ]);
    assert.match(replies[1]!, /\n250-SMTPUTF8\n/);
    assert.match(replies[2]!, /^250 2\.1\.0/);
    assert.match(replies[3]!, /^250 2\.1\.5/);
    const id = queuedId(replies[5]);
    const e = await show(d, id);
    assert.equal(e.smtputf8, true);
    assert.equal(e.sender, 'zoë@example.com');
    assert.deepEqual(
      e.recipients.map((x: any) => x.address),
      ['jürgen@example.org'],
    );
    const text = await ferrymail(d.cfg, ['queue', 'show', id]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^protocol: .*SMTPUTF8/m);
  });

  test('DSN parameters (RET, ENVID, NOTIFY, ORCPT) end up in the envelope', async () => {
    const replies = await dialogue(d.cfg.port, [
      'EHLO client.example',
      'MAIL FROM:<alice@example.com> RET=HDRS ENVID=swaks+2Bdsn-1',
      'RCPT TO:<bob@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.org',
      'RCPT TO:<carol@example.org> NOTIFY=NEVER',
      'RCPT TO:<dave@example.org>',
      'DATA',
      'Subject: dsn\r\n\r\nbody\r\n.',
      'QUIT',
    ]);
    assert.match(replies[1]!, /\n250-DSN\n/);
    assert.deepEqual(
      replies.slice(2, 6).map((x) => x.slice(0, 9)),
      ['250 2.1.0', '250 2.1.5', '250 2.1.5', '250 2.1.5'],
    );
    const id = queuedId(replies[7]);
    const e = await show(d, id);
    assert.equal(e.ret, 'HDRS');
    assert.equal(e.envid, 'swaks+dsn-1'); // xtext "+2B" decoded
    assert.deepEqual(
      e.recipients.map((x: any) => [x.address, x.notify, x.orcpt]),
      [
        ['bob@example.org', ['SUCCESS', 'FAILURE'], 'rfc822;bob@example.org'],
        ['carol@example.org', ['NEVER'], null],
        ['dave@example.org', null, null],
      ],
    );
    const text = await ferrymail(d.cfg, ['queue', 'show', id]);
    assert.match(text.stdout, /^dsn: +ret=HDRS envid=swaks\+dsn-1$/m);
    assert.match(text.stdout, /<bob@example\.org> queued attempts=0 notify=SUCCESS,FAILURE/);
  });

  test('SIZE above the limit gets 552 5.3.4; the limit is advertised; a message over it is refused after DATA', async () => {
    const ehlo = await swaks(d.cfg.port, ['--quit-after', 'EHLO']);
    assert.equal(ehlo.code, 0, ehlo.out);
    assert.match(ehlo.out, new RegExp(`<-\\s+250 SIZE ${SIZE_LIMIT}\\b`));
    const replies = await dialogue(d.cfg.port, [
      'EHLO client.example',
      `MAIL FROM:<alice@example.com> SIZE=${SIZE_LIMIT + 1}`,
      `MAIL FROM:<alice@example.com> SIZE=${SIZE_LIMIT - 100}`,
      'QUIT',
    ]);
    assert.match(replies[2]!, /^552 5\.3\.4 /);
    assert.match(replies[3]!, /^250 2\.1\.0/);

    const before = (await queueJson(d.cfg)).length;
    const big = path.join(swaksHome, 'big-body.txt');
    fs.writeFileSync(big, `${'x'.repeat(99)}\n`.repeat(Math.ceil((SIZE_LIMIT + 500) / 100)));
    const r = await swaks(d.cfg.port, ['--from', 'alice@example.com', '--to', 'bob@example.org', '--body', `@${big}`]);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /<\*\*\s+552 5\.3\.4 /);
    assert.equal(r.id, undefined);
    assert.equal((await queueJson(d.cfg)).length, before, 'nothing was queued');
  });

  test('recipients in local_domains and in the host name are accepted when they exist; postmaster is root', async () => {
    const r = await swaks(d.cfg.port, [
      '--from',
      'alice@example.com',
      '--to',
      `postmaster@${LOCAL_DOMAIN},nobody@test.example`,
    ]);
    assert.equal(r.code, 0, r.out);
    const e = await show(d, r.id!);
    assert.deepEqual(
      e.recipients.map((x: any) => [x.address, x.orig]),
      [
        ['root@test.example', `postmaster@${LOCAL_DOMAIN}`],
        ['nobody@test.example', null],
      ],
    );
    const unknown = await swaks(d.cfg.port, ['--from', 'alice@example.com', '--to', 'someone@test.example']);
    assert.notEqual(unknown.code, 0, unknown.out);
    assert.match(unknown.out, /<\*\*\s+550 5\.1\.1 <someone@test\.example>: no such user here/);
  });

  test('AUTH is not offered without a users file, and swaks cannot authenticate', async () => {
    const ehlo = await swaks(d.cfg.port, ['--quit-after', 'EHLO']);
    assert.equal(ehlo.code, 0, ehlo.out);
    assert.match(ehlo.out, /<-\s+250-ENHANCEDSTATUSCODES/);
    assert.doesNotMatch(ehlo.out, /AUTH/);
    const r = await swaks(
      d.cfg.port,
      ['--from', 'alice@example.com', '--to', 'bob@example.org', '--auth', 'PLAIN', '--auth-user', 'alice'],
      { SWAKS_OPT_auth_password: 'unused' },
    );
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /did not advertise authentication/);
    assert.equal(r.id, undefined);
    const raw = await dialogue(d.cfg.port, [
      'EHLO client.example',
      `AUTH PLAIN ${Buffer.from('\0alice\0unused').toString('base64')}`,
      'QUIT',
    ]);
    assert.match(raw[2]!, /^5\d\d 5\.\d\.\d /);
  });
});

describe('swaks against a daemon with SMTP AUTH', () => {
  let d: RunningDaemon;
  const password = `pw-${randomBytes(12).toString('base64url')}`;
  const wrong = `wrong-${randomBytes(6).toString('hex')}`;
  before(async () => {
    const cfg = await makeConfig('auth:\n  users_file: users');
    const h = await ferrymail(cfg, ['auth', 'hash', 'alice'], `${password}\n`);
    assert.equal(h.code, 0, h.stderr);
    assert.match(h.stdout, /^alice:scrypt\$/);
    assert.ok(!h.stdout.includes(password), 'the users line holds a hash, not the password');
    fs.writeFileSync(path.join(cfg.configDir, 'users'), h.stdout, { mode: 0o600 });
    d = await startDaemon(cfg);
  });
  after(async () => {
    await stopDaemon(d);
  });

  test('EHLO offers AUTH PLAIN LOGIN on loopback', async () => {
    const r = await swaks(d.cfg.port, ['--quit-after', 'EHLO']);
    assert.match(r.out, /<-\s+250-AUTH PLAIN LOGIN/);
  });

  for (const mech of ['PLAIN', 'LOGIN']) {
    test(`AUTH ${mech} with the right password gets 235 and the message records the user`, async () => {
      const r = await swaks(
        d.cfg.port,
        ['--from', 'alice@example.com', '--to', 'bob@example.org', '--auth', mech, '--auth-user', 'alice'],
        {
          SWAKS_OPT_auth_password: password,
        },
      );
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /<-\s+235 2\.7\.0 /);
      const e = await show(d, r.id!);
      assert.equal(e.origin.user, 'alice');
      assert.match(unfold(e.header), /^Received: .* with ESMTPA id /);
    });

    test(`AUTH ${mech} with a wrong password gets 535 5.7.8`, async () => {
      const r = await swaks(
        d.cfg.port,
        ['--from', 'alice@example.com', '--to', 'bob@example.org', '--auth', mech, '--auth-user', 'alice'],
        {
          SWAKS_OPT_auth_password: wrong,
        },
      );
      assert.notEqual(r.code, 0, r.out);
      assert.match(r.out, /<\*\*\s+535 5\.7\.8 /);
      assert.equal(r.id, undefined);
    });
  }

  test('an unknown user gets 535 5.7.8 too', async () => {
    const r = await swaks(
      d.cfg.port,
      ['--from', 'alice@example.com', '--to', 'bob@example.org', '--auth', 'PLAIN', '--auth-user', 'mallory'],
      {
        SWAKS_OPT_auth_password: password,
      },
    );
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /<\*\*\s+535 5\.7\.8 /);
  });

  test('no password, right or wrong, in any form, appears in the daemon log', async () => {
    const log = d.log();
    assert.match(log, /authenticated .*user=alice/, 'the log does record the logins');
    const forms = [password, wrong].flatMap((p) => [
      p,
      Buffer.from(p).toString('base64'),
      Buffer.from(`\0alice\0${p}`).toString('base64'),
      Buffer.from(`\0mallory\0${p}`).toString('base64'),
    ]);
    for (const f of forms) assert.ok(!log.includes(f), `log contains a secret: ${f}`);
  });
});
