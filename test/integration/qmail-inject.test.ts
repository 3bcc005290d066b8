// The sendmail command called as qmail-inject (a symlink of that name), as programs written for qmail run
// it: recipients from the header or the arguments (-a, -h, -H), -f, the From and envelope sender parts
// from QMAIL* variables, QMAILINJECT letters, -n printing instead of queueing, and the exit codes 100
// (permanent) and 111 (temporary) with one "qmail-inject: fatal:" line.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, test } from 'node:test';
import {
  makeConfig,
  messageData,
  queueJson,
  run,
  SENDMAIL,
  tempDir,
  type RunResult,
  type TestConfig,
} from '../helpers.js';

const LOGIN = os.userInfo().username;
let cfg: TestConfig;
let program: string;

before(async () => {
  cfg = await makeConfig();
  const bin = path.join(cfg.dir, 'bin');
  fs.mkdirSync(bin);
  program = path.join(bin, 'qmail-inject');
  fs.symlinkSync(SENDMAIL, program);
});

/** The variables qmail-inject reads, all unset, with USER and LOGNAME the real login. */
const CLEAN: NodeJS.ProcessEnv = Object.fromEntries(
  [
    'QMAILINJECT',
    'QMAILUSER',
    'MAILUSER',
    'QMAILNAME',
    'MAILNAME',
    'NAME',
    'QMAILHOST',
    'MAILHOST',
    'QMAILSUSER',
    'QMAILSHOST',
    'QMAILMFTFILE',
  ].map((k) => [k, undefined]),
);

/** Runs qmail-inject for a configuration with argv, input and variables. */
function inject(args: string[], input: string, env: NodeJS.ProcessEnv = {}, config = cfg): Promise<RunResult> {
  return run(process.execPath, [program, ...args], {
    input,
    env: { ...CLEAN, USER: LOGIN, LOGNAME: LOGIN, FERRYMAIL_CONFIG_DIR: config.configDir, ...env },
  });
}

/** The queue ids in the spool. */
function ids(config = cfg): Set<string> {
  const dir = path.join(config.spool, 'queue');
  return new Set(fs.existsSync(dir) ? fs.readdirSync(dir) : []);
}

/** Runs qmail-inject, expects exit 0 and one new queue entry; resolves with its envelope and data. */
async function queued(
  args: string[],
  input: string,
  env: NodeJS.ProcessEnv = {},
): Promise<{ e: Record<string, any>; data: string; head: string; r: RunResult }> {
  const before = ids();
  const r = await inject(args, input, env);
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  const fresh = [...ids()].filter((x) => !before.has(x));
  assert.equal(fresh.length, 1, `one new entry, got ${fresh.join(',')}`);
  const e = (await queueJson(cfg)).find((x) => x.id === fresh[0])!;
  const data = messageData(cfg, fresh[0]!);
  return { e, data, head: data.slice(0, data.indexOf('\r\n\r\n') + 2), r };
}

/** Runs qmail-inject, expects the exit code, one fatal line and nothing queued. */
async function refused(args: string[], input: string, code: number, env: NodeJS.ProcessEnv = {}, config = cfg) {
  const before = ids(config);
  const r = await inject(args, input, env, config);
  assert.equal(r.code, code, `exit ${r.code}, stderr: ${r.stderr}`);
  assert.match(r.stderr, /^qmail-inject: fatal: \S.*\n$/);
  assert.deepEqual(ids(config), before, 'nothing queued');
  return r;
}

/** The unfolded value of every header field called name. */
function values(head: string, name: string): string[] {
  const re = new RegExp(`^${name}:[ \\t]*((?:.*)(?:\\r\\n[ \\t].*)*)`, 'gim');
  return [...head.matchAll(re)].map((m) => m[1]!.replace(/\r\n[ \t]+/g, ' ').trim());
}

/** Recipient addresses of an envelope. */
function rcpts(e: Record<string, any>): string[] {
  return e.recipients.map((r: any) => r.address);
}

test('no arguments: recipients from To, Cc, Bcc and Apparently-To; Bcc removed; the envelope sender is the user', async () => {
  const { e, head, data, r } = await queued(
    [],
    [
      'To: Bob <bob@example.org>, carol',
      'Cc: dave@example.org',
      'Bcc: eve@example.org',
      'Apparently-To: frank@example.org',
      'Subject: from the header',
      '',
      'body',
      '.',
      'after a lone dot',
      '',
    ].join('\n'),
  );
  assert.deepEqual(rcpts(e).sort(), [
    'bob@example.org',
    'carol@test.example',
    'dave@example.org',
    'eve@example.org',
    'frank@example.org',
  ]);
  assert.equal(e.sender, `${LOGIN}@test.example`);
  assert.deepEqual(values(head, 'Bcc'), []);
  assert.deepEqual(values(head, 'To'), ['Bob <bob@example.org>, carol@test.example']);
  assert.deepEqual(values(head, 'From'), [`${LOGIN}@test.example`]);
  assert.deepEqual(values(head, 'Message-ID'), [`<${e.id}@test.example>`]);
  assert.equal(values(head, 'Date').length, 1);
  assert.deepEqual(values(head, 'Cc'), ['dave@example.org'], 'no "recipient list not shown" with To and Cc');
  // a lone dot does not end the message: qmail-inject reads to the end of its input
  assert.ok(data.endsWith('\r\n\r\nbody\r\n.\r\nafter a lone dot\r\n'), data);
  // no daemon serves this spool: one warning line, exit 0
  assert.match(r.stderr, /^qmail-inject: warning: queued as \S+, but no ferrymail daemon serves /);
});

test('only Bcc: "Cc: recipient list not shown: ;" is added; a resent message uses Resent-To, Resent-Cc, Resent-Bcc', async () => {
  const a = await queued([], 'Bcc: hidden@example.org\nSubject: hidden\n\nbody\n');
  assert.deepEqual(rcpts(a.e), ['hidden@example.org']);
  assert.deepEqual(values(a.head, 'Cc'), ['recipient list not shown: ;']);
  const b = await queued(
    [],
    'From: a@example.org\nTo: original@example.org\nDate: Mon, 4 Mar 2024 10:00:00 +0000\nMessage-ID: <o@x>\nResent-To: new@example.org\nResent-Bcc: hid@example.org\nSubject: fwd\n\nbody\n',
  );
  assert.deepEqual(rcpts(b.e).sort(), ['hid@example.org', 'new@example.org']);
  assert.deepEqual(values(b.head, 'Resent-Bcc'), []);
  assert.deepEqual(values(b.head, 'Resent-From'), [`${LOGIN}@test.example`]);
  assert.deepEqual(values(b.head, 'Resent-Message-ID'), [`<${b.e.id}@test.example>`]);
  assert.equal(values(b.head, 'Resent-Date').length, 1);
  assert.deepEqual(values(b.head, 'Message-ID'), ['<o@x>'], 'the original Message-ID stays');
});

test('arguments override the header (-A); -a, -h and -H choose; -a without addresses is exit 100', async () => {
  const input = 'To: header@example.org\nSubject: s\n\nbody\n';
  assert.deepEqual(rcpts((await queued(['arg@example.org'], input)).e), ['arg@example.org']);
  assert.deepEqual(rcpts((await queued(['-a', 'arg@example.org'], input)).e), ['arg@example.org']);
  assert.deepEqual(rcpts((await queued(['-h', 'arg@example.org'], input)).e), ['header@example.org']);
  assert.deepEqual(rcpts((await queued(['-H', 'arg@example.org'], input)).e).sort(), [
    'arg@example.org',
    'header@example.org',
  ]);
  await refused(['-a'], input, 100);
});

test('-f sets the envelope sender over Return-Path; without -f an incoming Return-Path does, unless QMAILINJECT=s', async () => {
  const input = 'Return-Path: <rp@example.org>\nTo: a@example.org\nSubject: s\n\nbody\n';
  const f = await queued(['-f', 'me@example.net'], input);
  assert.equal(f.e.sender, 'me@example.net');
  assert.deepEqual(values(f.head, 'Return-Path'), [], 'Return-Path is removed in any case');
  assert.deepEqual(values(f.head, 'From'), [`${LOGIN}@test.example`], '-f does not change From');
  assert.equal((await queued([], input)).e.sender, 'rp@example.org');
  assert.equal((await queued([], 'Return-Path: <>\nTo: a@example.org\n\nbody\n')).e.sender, '');
  const s = await queued([], input, { QMAILINJECT: 's' });
  assert.equal(s.e.sender, `${LOGIN}@test.example`);
  assert.deepEqual(values(s.head, 'Return-Path'), []);
  assert.equal((await queued(['-f<>', 'a@example.org'], 'Subject: s\n\nbody\n')).e.sender, '');
});

test('QMAILUSER, QMAILNAME and QMAILHOST make the From; QMAILSUSER and QMAILSHOST the envelope sender', async () => {
  const a = await queued(['a@example.org'], 'Subject: s\n\nbody\n', {
    QMAILUSER: 'ann',
    QMAILNAME: 'Ann Example',
    QMAILHOST: 'ann.example',
  });
  assert.deepEqual(values(a.head, 'From'), ['Ann Example <ann@ann.example>']);
  assert.equal(a.e.sender, 'ann@ann.example', 'the envelope sender follows the From parts');
  const b = await queued(['a@example.org'], 'Subject: s\n\nbody\n', {
    MAILUSER: 'bob',
    MAILNAME: 'Bob (B.) Example',
    MAILHOST: 'bob.example',
    QMAILSUSER: 'bounces',
    QMAILSHOST: 'lists.example',
    QMAILINJECT: 'c',
  });
  assert.deepEqual(values(b.head, 'From'), ['bob@bob.example (Bob \\(B.\\) Example)']);
  assert.equal(b.e.sender, 'bounces@lists.example');
  // m: per-message VERP, the time and the process id after the user
  const m = await queued(['a@example.org'], 'Subject: s\n\nbody\n', { QMAILINJECT: 'm', QMAILSHOST: 'v.example' });
  assert.match(m.e.sender, new RegExp(`^${LOGIN}-\\d{10}\\.\\d+@v\\.example$`));
  // a message's own From stays
  const own = await queued(['a@example.org'], 'From: me@mine.example\nSubject: s\n\nbody\n', { QMAILUSER: 'ann' });
  assert.deepEqual(values(own.head, 'From'), ['me@mine.example']);
});

test('QMAILINJECT=f replaces an incoming From, i an incoming Message-ID', async () => {
  const input = 'From: forged@example.org\nMessage-ID: <dup@example.org>\nTo: a@example.org\nSubject: s\n\nbody\n';
  const kept = await queued([], input);
  assert.deepEqual(values(kept.head, 'From'), ['forged@example.org']);
  assert.deepEqual(values(kept.head, 'Message-ID'), ['<dup@example.org>']);
  const f = await queued([], input, { QMAILINJECT: 'f', QMAILNAME: 'Real Me' });
  assert.deepEqual(values(f.head, 'From'), [`Real Me <${LOGIN}@test.example>`]);
  assert.deepEqual(values(f.head, 'Message-ID'), ['<dup@example.org>']);
  const i = await queued([], input, { QMAILINJECT: 'i' });
  assert.deepEqual(values(i.head, 'Message-ID'), [`<${i.e.id}@test.example>`]);
  assert.equal(i.e.message_id, `<${i.e.id}@test.example>`);
  assert.deepEqual(values(i.head, 'From'), ['forged@example.org']);
});

test('QMAILMFTFILE: a To or Cc naming a list adds Mail-Followup-To', async () => {
  const file = path.join(cfg.dir, 'lists');
  fs.writeFileSync(file, 'dev@lists.example\n');
  const r = await queued([], 'To: dev@lists.example\nCc: me@example.org\nSubject: s\n\nbody\n', { QMAILMFTFILE: file });
  assert.deepEqual(values(r.head, 'Mail-Followup-To'), ['dev@lists.example, me@example.org']);
});

test('-n prints the message with the header it would get and a Return-Path, and queues nothing', async () => {
  const before = ids();
  const r = await inject(['-n'], 'To: bob\nBcc: secret@example.org\nSubject: printed\n\nbody\n', {
    QMAILUSER: 'ann',
    QMAILHOST: 'ann.example',
    QMAILNAME: 'Ann',
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.deepEqual(ids(), before);
  const lines = r.stdout.split('\n');
  assert.equal(lines[0], 'Return-Path: <ann@ann.example>');
  assert.ok(lines.includes('To: bob@test.example'), r.stdout);
  assert.ok(lines.includes('From: Ann <ann@ann.example>'), r.stdout);
  assert.ok(
    lines.some((l) => /^Message-ID: <\w+@test\.example>$/.test(l)),
    r.stdout,
  );
  assert.ok(
    lines.some((l) => l.startsWith('Date: ')),
    r.stdout,
  );
  assert.ok(!r.stdout.includes('secret') && !r.stdout.includes('Received:') && !r.stdout.includes('\r'), r.stdout);
  assert.ok(r.stdout.endsWith('\n\nbody\n'), r.stdout);
});

test('exit 100 for a bad address, an unknown flag, no recipients or a bad Return-Path', async () => {
  const bad = await refused(['not an address@'], 'Subject: s\n\nbody\n', 100);
  assert.match(bad.stderr, /bad address/);
  await refused(['-t', 'a@example.org'], 'Subject: s\n\nbody\n', 100);
  await refused([], 'Subject: nobody\n\nbody\n', 100);
  await refused([], 'To: a@example.org\nCc: bad@@example.org\n\nbody\n', 100);
  await refused(['-f', 'bad@@example.org', 'a@example.org'], 'Subject: s\n\nbody\n', 100);
  await refused([], 'Return-Path: <bad@@x>\nTo: a@example.org\n\nbody\n', 100);
  await refused(['a@example.org'], 'Subject: s\n\nbody\n', 100, { QMAILUSER: 'two words', QMAILHOST: 'x.org' });
});

test('exit 111 when the spool cannot be written, with nothing left behind', async () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'file'), '');
  const broken = await makeConfig('', { spool: path.join(dir, 'file', 'spool') });
  const r = await refused(['a@example.org'], 'Subject: s\n\nbody\n', 111, {}, broken);
  assert.equal(r.stderr, `qmail-inject: fatal: spool error: cannot look at the spool ${broken.spool} (ENOTDIR)\n`);
  // the same spool is exit 74 (IOERR) for sendmail
  const s = await run(process.execPath, [SENDMAIL, 'a@example.org'], {
    input: 'Subject: s\n\nbody\n',
    env: { FERRYMAIL_CONFIG_DIR: broken.configDir },
  });
  assert.equal(s.code, 74, s.stderr);
  assert.match(s.stderr, /^sendmail: spool error: .*\(ENOTDIR\)\n$/);
  // an unreadable QMAILMFTFILE is temporary too
  const dirFile = tempDir();
  await refused(['a@example.org'], 'Subject: s\n\nbody\n', 111, { QMAILMFTFILE: dirFile });
});
