// qmail-inject's flags and environment as qmail-inject(8) documents them, its header rules, and its exit
// codes: the parser, the variables' fallbacks, the header edits and the 100/111 mapping.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import {
  parseQmailInjectArgs,
  printWriter,
  qmailEnvironment,
  qmailFail,
  type QmailContext,
} from '../../src/cli/qmail-inject.js';
import { personality } from '../../src/cli/sendmail-args.js';
import { FerryError, qmailExitCodeFor, type FerryErrorCode } from '../../src/errors.js';
import { localHeaders } from '../../src/receive/local.js';
import { qmailHeaders, recipientFields, returnPathOf, type QmailRules } from '../../src/receive/qmail-rules.js';
import { parseHeaderBlock } from '../../src/scan/headers.js';
import { ROOT } from '../helpers.js';

const NOW = new Date('2024-03-01T12:00:00Z');

/** A context with exactly the given variables. */
function ctx(env: Record<string, string> = {}): QmailContext {
  return { env, login: 'alice', now: NOW, pid: 4242 };
}

/** Parses argv under an environment. */
function parse(args: string[], env: Record<string, string> = {}) {
  return parseQmailInjectArgs(args, ctx(env));
}

/** The FerryError code a call throws. */
function codeOf(f: () => unknown): FerryErrorCode {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof FerryError, String(err));
    return err.code;
  }
  assert.fail('expected a FerryError');
}

test('the qmail-inject name is its own personality, with or without a .js ending', () => {
  assert.equal(personality('/usr/bin/qmail-inject'), 'qmail-inject');
  assert.equal(personality('qmail-inject.js'), 'qmail-inject');
  assert.equal(personality('/var/qmail/bin/qmail-injectx'), 'sendmail');
});

test('npm installs every name of the sendmail command, qmail-inject included, and each is its personality', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  const names = Object.keys(pkg.bin).filter((n) => pkg.bin[n] === 'bin/sendmail.js');
  assert.ok(names.includes('qmail-inject'), names.join(' '));
  for (const n of names) assert.equal(personality(`/usr/bin/${n}`), n);
});

test('recipients: arguments alone when given (-A), else the header; -a, -h and -H', () => {
  const args = parse(['a@x.org', 'b@x.org']);
  assert.deepEqual(args.submit.recipients, ['a@x.org', 'b@x.org']);
  assert.equal(args.submit.extract, false, 'the header is not read for recipients');
  const header = parse([]);
  assert.equal(header.submit.extract, true);
  assert.deepEqual(header.submit.recipients, []);
  assert.equal(parse(['-A', 'a@x.org']).submit.extract, false);
  // -a: the arguments only, and then there must be some
  assert.equal(parse(['-a', 'a@x.org']).submit.extract, false);
  assert.equal(
    codeOf(() => parse(['-a'])),
    'usage',
  );
  // -h: the header only; the arguments are not read at all (qmail does not parse them either)
  const h = parse(['-h', 'not an address']);
  assert.equal(h.submit.extract, true);
  assert.deepEqual(h.submit.recipients, []);
  // -H: both
  const both = parse(['-H', 'a@x.org']);
  assert.equal(both.submit.extract, true);
  assert.deepEqual(both.submit.recipients, ['a@x.org']);
  // the last of the strategy flags wins, as with getopt
  assert.equal(parse(['-h', '-a', 'a@x.org']).submit.extract, false);
});

test('getopt rules: clustered flags, -f attached or as the next word, -- and the first address end the options', () => {
  const r = parse(['-nHfme@x.org', 'a@x.org']);
  assert.equal(r.print, true);
  assert.equal(r.submit.sender, 'me@x.org');
  assert.equal(r.submit.extract, true);
  assert.equal(parse(['-f', 'me@x.org', 'a@x.org']).submit.sender, 'me@x.org');
  assert.equal(parse(['-f', '<me@x.org>', 'a@x.org']).submit.sender, 'me@x.org');
  assert.equal(parse(['-f', '<>', 'a@x.org']).submit.sender, '');
  assert.equal(parse(['-f', '', 'a@x.org']).submit.sender, '');
  assert.equal(parse(['-n', '-N', 'a@x.org']).print, false);
  assert.deepEqual(parse(['--', '-odd@x.org']).submit.recipients, ['-odd@x.org']);
  // after the first address, a word starting with - is an address too
  const after = parse(['a@x.org', '-n']);
  assert.equal(after.print, false);
  assert.deepEqual(after.submit.recipients, ['a@x.org', '-n']);
  assert.equal(
    codeOf(() => parse(['-t', 'a@x.org'])),
    'usage',
  );
  assert.equal(
    codeOf(() => parse(['-f'])),
    'usage',
  );
  // qmail-inject reads to the end: a lone dot does not end the message
  assert.equal(r.submit.dotEnds, false);
});

test('-f, and no -f: the sender from the environment, and whether a Return-Path may name it', () => {
  const plain = parse(['a@x.org']);
  assert.equal(plain.submit.sender, undefined);
  assert.equal(plain.submit.qmail!.returnPath, true);
  assert.equal(parse(['-fme@x.org', 'a@x.org']).submit.qmail!.returnPath, false, '-f overrides Return-Path');
  assert.equal(parse(['a@x.org'], { QMAILINJECT: 's' }).submit.qmail!.returnPath, false, 's: Return-Path ignored');
});

test('From user: QMAILUSER, MAILUSER, USER, LOGNAME, whichever comes first, else the login; host QMAILHOST, MAILHOST', () => {
  assert.equal(qmailEnvironment(ctx()).from, 'alice');
  assert.equal(qmailEnvironment(ctx({ LOGNAME: 'l' })).from, 'l');
  assert.equal(qmailEnvironment(ctx({ LOGNAME: 'l', USER: 'u' })).from, 'u');
  assert.equal(qmailEnvironment(ctx({ LOGNAME: 'l', USER: 'u', MAILUSER: 'm' })).from, 'm');
  assert.equal(qmailEnvironment(ctx({ LOGNAME: 'l', USER: 'u', MAILUSER: 'm', QMAILUSER: 'q' })).from, 'q');
  assert.equal(qmailEnvironment(ctx({ USER: 'u', MAILHOST: 'mh.org' })).from, 'u@mh.org');
  assert.equal(qmailEnvironment(ctx({ USER: 'u', MAILHOST: 'mh.org', QMAILHOST: 'qh.org' })).from, 'u@qh.org');
  // an empty variable counts as unset
  assert.equal(qmailEnvironment(ctx({ QMAILUSER: '', USER: 'u' })).from, 'u');
});

test('full name: QMAILNAME, MAILNAME, NAME', () => {
  assert.equal(qmailEnvironment(ctx()).fullName, undefined);
  assert.equal(qmailEnvironment(ctx({ NAME: 'N' })).fullName, 'N');
  assert.equal(qmailEnvironment(ctx({ NAME: 'N', MAILNAME: 'M' })).fullName, 'M');
  assert.equal(qmailEnvironment(ctx({ NAME: 'N', MAILNAME: 'M', QMAILNAME: 'Q' })).fullName, 'Q');
  assert.equal(parse(['a@x.org'], { QMAILNAME: 'Ann Example' }).submit.fullName, 'Ann Example');
});

test('envelope sender: QMAILSUSER and QMAILSHOST, falling back to the From parts; m appends time and pid', () => {
  assert.equal(qmailEnvironment(ctx({ USER: 'u' })).sender, 'u');
  assert.equal(qmailEnvironment(ctx({ USER: 'u', QMAILHOST: 'h.org' })).sender, 'u@h.org');
  assert.equal(qmailEnvironment(ctx({ USER: 'u', QMAILSUSER: 'bounces', QMAILHOST: 'h.org' })).sender, 'bounces@h.org');
  const both = qmailEnvironment(ctx({ QMAILUSER: 'u', QMAILHOST: 'h.org', QMAILSUSER: 's', QMAILSHOST: 'sh.org' }));
  assert.equal(both.sender, 's@sh.org');
  assert.equal(both.from, 'u@h.org', 'the From header keeps QMAILUSER@QMAILHOST');
  const verp = qmailEnvironment(ctx({ USER: 'u', QMAILINJECT: 'm', QMAILSHOST: 'h.org' }));
  assert.equal(verp.sender, `u-${NOW.getTime() / 1000}.4242@h.org`);
});

test('QMAILINJECT letters: c, s, f, i; unknown letters are ignored as qmail-inject does', () => {
  const none = qmailEnvironment(ctx());
  assert.deepEqual(
    [none.comment, none.ignoreReturnPath, none.deleteFrom, none.deleteMessageId],
    [false, false, false, false],
  );
  const all = qmailEnvironment(ctx({ QMAILINJECT: 'csfirxyz' }));
  assert.deepEqual([all.comment, all.ignoreReturnPath, all.deleteFrom, all.deleteMessageId], [true, true, true, true]);
  assert.equal(all.sender, 'alice', 'r (per-recipient VERP) does not change the sender');
});

test('QMAILMFTFILE is carried to the request; no variable, no file', () => {
  assert.equal(parse(['a@x.org'], { QMAILMFTFILE: '/x/lists' }).listsFile, '/x/lists');
  assert.equal(parse(['a@x.org']).listsFile, undefined);
});

/** Header fields from text lines. */
function fields(...lines: string[]) {
  return parseHeaderBlock(`${lines.join('\r\n')}\r\n\r\n`).fields;
}

const RULES: QmailRules = {
  from: 'ann@a.example',
  sender: 'ann@a.example',
  comment: false,
  returnPath: true,
  deleteFrom: false,
  deleteMessageId: false,
};

/** The qmail header edit of a header for rules. */
function edit(f: ReturnType<typeof fields>, rules: Partial<QmailRules> = {}, fullName?: string) {
  return qmailHeaders(f, {
    id: 'ID1',
    now: NOW,
    hostname: 'test.example',
    from: 'ann@a.example',
    fullName,
    rules: { ...RULES, ...rules },
  });
}

test('recipient fields: To, Cc, Bcc, Apparently-To; a resent message: Resent-To, Resent-Cc, Resent-Bcc', () => {
  assert.deepEqual(recipientFields(fields('To: a@x.org', 'Subject: s')), ['to', 'cc', 'bcc', 'apparently-to']);
  assert.deepEqual(recipientFields(fields('To: a@x.org', 'Resent-From: r@x.org')), [
    'resent-to',
    'resent-cc',
    'resent-bcc',
  ]);
});

test('Return-Path: the first one, brackets, comments and source route removed; <> is the null sender', () => {
  assert.equal(returnPathOf(fields('Subject: s')), undefined);
  assert.equal(returnPathOf(fields('Return-Path: <rp@x.org>', 'Return-Path: <other@x.org>')), 'rp@x.org');
  assert.equal(returnPathOf(fields('Return-Path: <>')), '');
  assert.equal(returnPathOf(fields('Return-Path: rp@x.org (bounces)')), 'rp@x.org');
  assert.equal(returnPathOf(fields('Return-Path: <@relay.org:rp@x.org>')), 'rp@x.org');
});

test('added fields: Date, Message-ID, From and "Cc: recipient list not shown: ;" when missing; removed ones', () => {
  const e = edit(fields('Bcc: b@x.org', 'Return-Path: <r@x.org>', 'Content-Length: 12', 'Subject: s'), {}, 'Ann Ex');
  assert.match(e.append, /^Date: .+\r\nMessage-ID: <ID1@test\.example>\r\nFrom: Ann Ex <ann@a\.example>\r\n/);
  assert.match(e.append, /\r\nCc: recipient list not shown: ;\r\n$/);
  assert.deepEqual([...e.drop].sort(), ['bcc', 'content-length', 'resent-bcc', 'return-path']);
  assert.equal(e.added.messageId, '<ID1@test.example>');
  // the message's own fields stay, and nothing is added for them
  const own = edit(
    fields('From: me@x.org', 'To: a@x.org', 'Date: Fri, 1 Mar 2024 12:00:00 +0000', 'Message-ID: <m@x>'),
  );
  assert.equal(own.append, '');
  assert.equal(own.added.messageId, undefined);
});

test('f and i remove From and Message-ID and add new ones; c writes the name as a comment', () => {
  const f = fields('From: me@x.org', 'To: a@x.org', 'Date: d', 'Message-ID: <m@x>');
  const e = edit(f, { deleteFrom: true, deleteMessageId: true }, 'Ann (the) Ex');
  assert.ok(e.drop.has('from') && e.drop.has('message-id'));
  assert.match(e.append, /^Message-ID: <ID1@test\.example>\r\nFrom: "Ann \(the\) Ex" <ann@a\.example>\r\n$/);
  const c = edit(fields('To: a@x.org'), { comment: true }, 'Ann (the) Ex');
  assert.match(c.append, /\r\nFrom: ann@a\.example \(Ann \\\(the\\\) Ex\)\r\n/);
});

test('a resent message gets Resent-Date, Resent-Message-ID, Resent-From and Resent-Cc instead', () => {
  const e = edit(fields('From: me@x.org', 'To: a@x.org', 'Date: d', 'Message-ID: <m@x>', 'Resent-Bcc: z@x.org'));
  assert.match(
    e.append,
    /^Resent-Date: .+\r\nResent-Message-ID: <ID1@test\.example>\r\nResent-From: ann@a\.example\r\nResent-Cc: recipient list not shown: ;\r\n$/,
  );
});

test('QMAILMFTFILE lists: Mail-Followup-To with every To and Cc address when one is a list, unless present', () => {
  const lists = ['List@Lists.example'];
  const f = fields('To: list@lists.example', 'Cc: Bob <bob@x.org>, carol');
  assert.match(edit(f, { lists }).append, /Mail-Followup-To: list@lists\.example, bob@x\.org, carol@test\.example\r\n/);
  assert.doesNotMatch(edit(fields('To: a@x.org'), { lists }).append, /Mail-Followup-To/);
  assert.doesNotMatch(
    edit(fields('To: list@lists.example', 'Mail-Followup-To: a@x.org'), { lists }).append,
    /Mail-Followup-To/,
  );
});

test('localHeaders with qmail rules keeps the Received line and qualifies bare names', () => {
  const f = fields('To: bob', 'Subject: s');
  const e = localHeaders(f, {
    id: 'ID1',
    now: NOW,
    sender: 'ann@a.example',
    hostname: 'test.example',
    user: { name: 'ann', uid: 1000 },
    recipients: ['bob@test.example'],
    qmail: { rules: RULES, from: 'ann@a.example' },
  });
  assert.match(e.prepend, /^Received: by test\.example/);
  assert.equal(e.replace(f[0]!), 'To: bob@test.example\r\n');
  assert.ok(e.drop.has('return-path'));
  assert.match(e.append, /From: ann@a\.example\r\n/);
});

test('exit codes: 100 for what a retry cannot fix, 111 for the rest', () => {
  for (const c of ['usage', 'data', 'no-recipients', 'not-allowed', 'not-found'] as const)
    assert.equal(qmailExitCodeFor(c), 100, c);
  for (const c of ['config', 'spool-full', 'spool-io', 'spool-permission', 'locked', 'control', 'internal'] as const)
    assert.equal(qmailExitCodeFor(c), 111, c);
});

/** A writable that keeps what it gets. */
function sink(): Writable & { text: () => string } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  return Object.assign(w, { text: () => Buffer.concat(chunks).toString('latin1') });
}

test('errors print one "qmail-inject: fatal:" line', () => {
  const out = sink();
  assert.equal(qmailFail(new FerryError('usage', 'bad address "x@"'), out), 100);
  assert.equal(qmailFail(new FerryError('spool-io', 'spool error'), out), 111);
  assert.equal(qmailFail(new Error('boom'), out), 111);
  assert.equal(
    out.text(),
    'qmail-inject: fatal: bad address "x@"\nqmail-inject: fatal: spool error\nqmail-inject: fatal: internal error: boom\n',
  );
});

test('-n: the writer prints Return-Path and the message with LF line ends and stores nothing', async () => {
  const out = sink();
  const w = await printWriter('/nonexistent/spool', out).begin();
  w.stream.write('Subject: s\r\n\r\nbody\r\n');
  const env = await w.commit({
    version: 1,
    arrival: NOW.toISOString(),
    sender: 'ann@a.example',
    recipients: [],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  assert.equal(out.text(), 'Return-Path: <ann@a.example>\nSubject: s\n\nbody\n');
  assert.equal(env.id, w.id);
});
