// procmail behind the pipe transport: hostile recipients taken in by the sendmail command and the SMTP
// door reach procmail as plain argv text (a canary file a shell would create never appears) and each
// message lands in a maildir; one run per message into an mbox with the From_ line; procmail's exit
// codes (67, 75) through sysexits, its stderr as the reason; procmail -d with a dash-led local part.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  queueJson,
  sendmail,
  smtpSend,
  startDaemon,
  stopDaemon,
  waitUntil,
  type TestConfig,
} from '../helpers.js';

/** A configuration with one permanent pipe route to procmail running rcfile text; DEST is a temp dir. */
async function setup(rc: string, transport: string[] = []): Promise<TestConfig & { dest: string }> {
  const cfg = await makeConfig();
  const dest = path.join(cfg.dir, 'dest');
  fs.mkdirSync(dest);
  const rcfile = path.join(cfg.dir, 'procmailrc');
  fs.writeFileSync(rcfile, rc);
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  const command = [
    'procmail',
    '-m',
    `DEST=${dest}`,
    rcfile,
    '${recipient}',
    '${local_part}',
    '${domain}',
    '${sender}',
    '${id}',
    '${route}',
  ];
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '10-local.yaml'),
    [
      'name: local',
      'permanent: true',
      'transport:',
      '  type: pipe',
      `  command: ${JSON.stringify(command)}`,
      ...transport.map((l) => `  ${l}`),
      '',
    ].join('\n'),
  );
  return { ...cfg, dest };
}

/** Logs the arguments procmail got, one line per run, then delivers to DEST/Maildir/. */
const MAILDIR_RC = `LOGFILE=$DEST/log
LOGABSTRACT=no
LOG="rcpt=[$1] local=[$2] domain=[$3] sender=[$4] id=[$5] route=[$6]
"
:0
$DEST/Maildir/
`;

/** Hostile but valid recipients: quoted local parts with shell syntax, backticks, a leading dash. */
function hostile(canary: string): string[] {
  return [
    '"a b"@x.example',
    `"a;touch ${canary}"@x.example`,
    `"$(touch ${canary})"@x.example`,
    `\`touch\${IFS}${canary}\`@x.example`,
    `-oQ${canary}@x.example`,
    "'$HOME'|x@x.example",
  ];
}

/** The procmail log lines and the messages in the maildir. */
function landed(dest: string): { log: string[]; messages: string[] } {
  const log = fs.existsSync(path.join(dest, 'log'))
    ? fs.readFileSync(path.join(dest, 'log'), 'latin1').split('\n').filter(Boolean)
    : [];
  const dir = path.join(dest, 'Maildir', 'new');
  const messages = fs.existsSync(dir)
    ? fs.readdirSync(dir).map((f) => fs.readFileSync(path.join(dir, f), 'latin1'))
    : [];
  return { log, messages };
}

test('sendmail: hostile recipients reach procmail as plain text, nothing runs a shell, each message lands', async () => {
  const cfg = await setup(MAILDIR_RC);
  const canary = path.join(cfg.dir, 'canary');
  const rcpts = hostile(canary);
  const s = await sendmail(
    cfg,
    ['-i', '-f', 'alice@laptop.local', '--', ...rcpts],
    'From: alice@laptop.local\nSubject: hostile\n\nFrom the body\nbye\n',
  );
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, new RegExp(`${rcpts.length} delivered`));
  const { log, messages } = landed(cfg.dest);
  const id = /id=\[(\w+)\]/.exec(log[0] ?? '')?.[1];
  assert.ok(id, log.join('\n'));
  assert.deepEqual(
    log,
    rcpts.map(
      (r) =>
        `rcpt=[${r}] local=[${r.slice(0, r.lastIndexOf('@'))}] domain=[x.example] sender=[alice@laptop.local] id=[${id}] route=[local]`,
    ),
  );
  assert.equal(messages.length, rcpts.length);
  for (const m of messages) {
    assert.match(m, /^Subject: hostile\n/m);
    assert.doesNotMatch(m, /\r/, 'LF line ends');
    assert.match(m, /\n\n>?From the body\nbye\n$/);
  }
  assert.equal(fs.existsSync(canary), false, 'no shell ever ran');
  assert.deepEqual(await queueJson(cfg), []);
});

test('the SMTP door: hostile recipients delivered by the daemon through procmail, no shell', async () => {
  const cfg = await setup(MAILDIR_RC);
  const canary = path.join(cfg.dir, 'canary');
  // smtp-server splits RCPT TO at spaces, so the door refuses quoted local parts with spaces (501 5.1.3)
  const rcpts = [
    ...hostile(canary).filter((r) => !r.includes(' ')),
    `"a;touch\${IFS}${canary}"@x.example`,
    `"$(touch\${IFS}${canary})"@x.example`,
  ];
  const d = await startDaemon(cfg);
  try {
    const r = await smtpSend(cfg.port, {
      from: 'bob@remote.example',
      to: rcpts,
      data: 'Subject: by smtp\r\n\r\nhello\r\n',
    });
    assert.match(r.reply, /^250 /);
    assert.ok(
      await waitUntil(() => landed(cfg.dest).messages.length === rcpts.length, 15_000),
      `landed: ${landed(cfg.dest).log.join('\n')}\n${d.log()}`,
    );
    assert.deepEqual(
      landed(cfg.dest).log.map((l) => /^rcpt=\[(.*?)\] local=/.exec(l)?.[1]),
      rcpts,
    );
    assert.equal(fs.existsSync(canary), false, 'no shell ever ran');
  } finally {
    await stopDaemon(d);
  }
});

test('once per message into an mbox: the From_ line first, every recipient an argument', async () => {
  const rc = `LOGFILE=$DEST/log
LOGABSTRACT=no
LOG="args=[$1][$2][$3][$4][$5][$6][$7][$8][$9]
"
:0:
$DEST/mbox
`;
  const cfg = await setup(rc, ['per_recipient: false', 'from_line: true']);
  const s = await sendmail(
    cfg,
    ['-i', '-f', 'alice@laptop.local', '--', 'b@x.example', '-c@y.example'],
    'Subject: mbox\n\nFrom me\nok\n',
  );
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.match(f.stdout, /2 delivered/);
  const log = fs.readFileSync(path.join(cfg.dest, 'log'), 'latin1').trim().split('\n');
  assert.equal(log.length, 1, 'one run');
  // ${recipient}, ${local_part} and ${domain} each became one argument per recipient
  assert.match(
    log[0]!,
    /^args=\[b@x\.example\]\[-c@y\.example\]\[b\]\[-c\]\[x\.example\]\[y\.example\]\[alice@laptop\.local\]\[\w+\]\[local\]$/,
  );
  const mbox = fs.readFileSync(path.join(cfg.dest, 'mbox'), 'latin1');
  assert.match(
    mbox,
    /^From alice@laptop\.local (Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}\n/,
  );
  assert.equal(mbox.match(/^From /gm)?.length, 1, 'one message, the body line escaped');
  assert.match(mbox, /\n\n>From me\nok\n/);
});

test("procmail's exit codes: 67 fails with its stderr as the reason, 75 defers, 0 delivers", async () => {
  const rc = `RCPT=$1
:0
* RCPT ?? ^^nobody@
{
  LOG="no such user here
"
  EXITCODE=67
  :0
  /dev/null
}
:0
* RCPT ?? ^^later@
{
  EXITCODE=75
  :0
  /dev/null
}
LOGFILE=$DEST/log
LOGABSTRACT=no
LOG="sender=[$4]
"
:0
$DEST/Maildir/
`;
  const cfg = await setup(rc);
  const s = await sendmail(
    cfg,
    ['-i', '-f', '<>', 'nobody@x.example', 'later@x.example', 'ok@x.example'],
    'Subject: codes\n\nhi\n',
  );
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.match(f.stdout, /1 delivered, 1 deferred, 1 failed/);
  assert.equal(landed(cfg.dest).messages.length, 1);
  const [q] = await queueJson(cfg);
  const by = Object.fromEntries(q!.recipients.map((r: Record<string, string>) => [r.address, r]));
  assert.equal(by['nobody@x.example'].state, 'failed');
  assert.equal(by['nobody@x.example'].last_error, '550 5.1.1 procmail exited 67: no such user here');
  assert.equal(by['later@x.example'].state, 'deferred');
  assert.match(by['later@x.example'].last_error, /^451 4\.3\.0 procmail exited 75$/);
  assert.equal(by['ok@x.example'].state, 'delivered');
  assert.match(fs.readFileSync(path.join(cfg.dest, 'log'), 'latin1'), /sender=\[MAILER-DAEMON\]/, 'the null sender');
});

test('procmail -d: a local part with a leading dash is a user name to procmail, not an option', async () => {
  const cfg = await makeConfig();
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '50-procmail.yaml'),
    [
      'name: local-procmail',
      'permanent: true',
      'allowed_recipients: ["*@x.example"]',
      'transport:',
      '  type: pipe',
      '  command: [procmail, -d, "${local_part}"]',
      '',
    ].join('\n'),
  );
  // users that do not exist: procmail refuses them before it writes anything
  const rcpts = ['-ferrymail-no-user@x.example', '"ferrymail no;user"@x.example'];
  const s = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', '--', ...rcpts], 'Subject: d\n\nhi\n');
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  // both fail; the notice (same run) waits for a route to alice, its copy to root (who ran sendmail) is here
  assert.match(f.stdout, /1 delivered, 1 deferred, 2 failed/);
  const original = (await queueJson(cfg)).filter((q) => q.sender !== '');
  assert.deepEqual(original, [], 'both final');
  const notice = (await queueJson(cfg)).find((q) => q.sender === '');
  assert.ok(notice, 'the sender is told');
  const text = fs.readFileSync(path.join(cfg.spool, 'msg', notice.id), 'latin1');
  assert.match(text, /550 5\.1\.1 procmail exited 67: procmail: Unknown user "-ferrymail-no-user"/);
  assert.match(text, /550 5\.1\.1 procmail exited 67: procmail: Unknown user ""ferrymail no;user""/);
});
