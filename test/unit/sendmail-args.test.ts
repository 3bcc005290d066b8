// The sendmail argv parser against the real invocations of common callers and the odd flags.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSendmailArgs, personality, type SendmailRequest } from '../../src/cli/sendmail-args.js';
import { FerryError } from '../../src/errors.js';

/** Parses and returns the submission part. */
function submit(args: string[]) {
  const r = parseSendmailArgs(args);
  assert.equal(r.mode, 'submit');
  return (r as Extract<SendmailRequest, { mode: 'submit' }>).submit;
}

test('mutt: -oem -oi -B8BITMIME -f from -N -R -- rcpt', () => {
  const s = submit([
    '-oem',
    '-oi',
    '-B8BITMIME',
    '-f',
    'me@x.org',
    '-N',
    'failure,delay',
    '-R',
    'hdrs',
    '--',
    'a@y.org',
    '-b@z.org',
  ]);
  assert.equal(s.sender, 'me@x.org');
  assert.equal(s.dotEnds, false);
  assert.deepEqual(s.notify, ['FAILURE', 'DELAY']);
  assert.equal(s.ret, 'HDRS');
  assert.deepEqual(s.recipients, ['a@y.org', '-b@z.org']);
});

test('cron: -FCronDaemon -i -B8BITMIME -oem rcpt and -FCronDaemon -odi -oem -oi -t', () => {
  const a = submit(['-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'root']);
  assert.equal(a.fullName, 'CronDaemon');
  assert.deepEqual(a.recipients, ['root']);
  const b = submit(['-FCronDaemon', '-odi', '-oem', '-oi', '-t']);
  assert.equal(b.extract, true);
  assert.equal(b.deliveryMode, 'interactive');
  assert.deepEqual(b.recipients, []);
});

test('git send-email and nodemailer: -i -f from rcpt...; PHP: -t -i', () => {
  const g = submit(['-i', '-f', 'dev@x.org', 'a@y.org', 'b@y.org']);
  assert.deepEqual(g.recipients, ['a@y.org', 'b@y.org']);
  assert.equal(g.dotEnds, false);
  const p = submit(['-t', '-i']);
  assert.equal(p.extract, true);
  assert.equal(p.dotEnds, false);
  assert.equal(submit(['-ti']).extract, true);
});

test('attached values, null sender, -r, -F with spaces, -V envid, -C', () => {
  assert.equal(submit(['-fme@x.org', 'a@b.org']).sender, 'me@x.org');
  assert.equal(submit(['-f', '<>', 'a@b.org']).sender, '');
  assert.equal(submit(['-r', 'r@x.org', 'a@b.org']).sender, 'r@x.org');
  assert.equal(submit(['-F', 'Jane Doe', 'a@b.org']).fullName, 'Jane Doe');
  assert.equal(submit(['-V', 'env1', 'a@b.org']).envid, 'env1');
  const r = parseSendmailArgs(['-C', '/etc/x.yaml', 'a@b.org']);
  assert.equal(r.configPath, '/etc/x.yaml');
});

test('legacy flags are accepted and ignored', () => {
  const s = submit([
    '-oem',
    '-oee',
    '-om',
    '-m',
    '-v',
    '-oQ/var/spool',
    '-h',
    '17',
    '-L',
    'tag',
    '-U',
    '-n',
    'a@b.org',
  ]);
  assert.deepEqual(s.recipients, ['a@b.org']);
});

test('modes: -bp, -bs, -bV, -bi, -q, -q30m, -qo NAME, -qoNAME, -Mrm', () => {
  assert.equal(parseSendmailArgs(['-bp']).mode, 'list');
  assert.equal(parseSendmailArgs(['-bs']).mode, 'smtp-stdio');
  assert.equal(parseSendmailArgs(['-bV']).mode, 'version');
  assert.equal(parseSendmailArgs(['-bi']).mode, 'newaliases');
  assert.deepEqual(parseSendmailArgs(['-q']), { mode: 'run', connection: undefined, configPath: undefined });
  assert.equal(parseSendmailArgs(['-q30m']).mode, 'run');
  assert.equal((parseSendmailArgs(['-qo', 'home']) as { connection?: string }).connection, 'home');
  assert.equal((parseSendmailArgs(['-qohome']) as { connection?: string }).connection, 'home');
  assert.deepEqual((parseSendmailArgs(['-Mrm', 'A', 'B']) as { ids: string[] }).ids, ['A', 'B']);
});

test('personalities by name', () => {
  assert.equal(personality('/usr/sbin/mailq'), 'mailq');
  assert.equal(personality('runq'), 'runq');
  assert.equal(personality('/usr/bin/mailrm'), 'mailrm');
  assert.equal(personality('newaliases'), 'newaliases');
  assert.equal(personality('/usr/lib/sendmail'), 'sendmail');
  assert.equal(personality('/x/bin/sendmail.js'), 'sendmail');
  assert.equal(parseSendmailArgs([], 'mailq').mode, 'list');
  assert.equal(parseSendmailArgs([], 'runq').mode, 'run');
  assert.deepEqual((parseSendmailArgs(['X'], 'mailrm') as { ids: string[] }).ids, ['X']);
});

test('usage errors: unknown flag, no recipients, missing value, bad -N and -R', () => {
  for (const args of [
    ['-z', 'a@b'],
    [],
    ['-f'],
    ['-N', 'sometimes', 'a@b'],
    ['-N', 'never,success', 'a@b'],
    ['-R', 'body', 'a@b'],
    ['-bd'],
    ['-Mxx'],
  ]) {
    assert.throws(
      () => parseSendmailArgs(args),
      (e: unknown) => e instanceof FerryError && e.code === 'usage',
      args.join(' '),
    );
  }
  assert.throws(() => parseSendmailArgs([], 'mailrm'), /name the queue ids/);
});
