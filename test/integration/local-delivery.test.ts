// Local delivery with the host's real accounts and real readers: two users made for the test (removed
// after), an aliases file with every feature (nesting, :include:, a glob, a file, a command, a loop), a
// .forward into a Maildir; the SMTP dialogue refuses unknown users and loops at RCPT and never takes a
// quoted |command local part for a command; bsd-mailx and Python's mailbox module read the mbox, mutt the
// Maildir; commands run as nobody; cron's and at's sendmail calls land in a mailbox with no route at all;
// a group-writable .forward and a planted symbolic link make delivery wait, never write where they point;
// procmail and maildrop run as the user's delivery agent.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  queueJson,
  RawSmtp,
  sendmail,
  startDaemon,
  stopDaemon,
  tempDir,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

const root = process.getuid?.() === 0;
const tools = ['mail', 'mutt', 'procmail', 'maildrop', 'python3', 'script'].filter(
  (t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0,
);
const skip = !root ? 'needs root to deliver as other users' : tools.length ? `missing: ${tools.join(' ')}` : false;

const tag = randomBytes(3).toString('hex');
const A = `fma${tag}`;
const B = `fmb${tag}`;
let base = '';
let _cfgDir = '';
const made: string[] = [];

/** Runs a command, failing the test with its output when it fails. */
function sh(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000, ...opts });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}${r.error ?? ''}`);
  return r.stdout;
}

/** The home directory of a test user. */
const home = (u: string): string => path.join(base, 'home', u);
const uidOf = (u: string): number => Number(sh('id', ['-u', u]).trim());

before(() => {
  if (skip) return;
  base = tempDir('ferrymail-local-');
  fs.chmodSync(base, 0o755);
  for (const u of [A, B]) {
    sh('useradd', ['-M', '-d', home(u), '-s', '/bin/sh', u]);
    made.push(u);
    fs.mkdirSync(home(u), { recursive: true });
    fs.chmodSync(path.join(base, 'home'), 0o755);
    fs.chownSync(home(u), uidOf(u), Number(sh('id', ['-g', u]).trim()));
    fs.chmodSync(home(u), 0o755);
  }
  // files and the output of commands, written as nobody
  fs.mkdirSync(path.join(base, 'files'));
  fs.chownSync(path.join(base, 'files'), 65534, 65534);
  fs.mkdirSync(path.join(base, 'bin'));
  fs.chmodSync(path.join(base, 'bin'), 0o755);
  fs.writeFileSync(path.join(base, 'bin', 'record'), '#!/bin/sh\nid -u > "$1"\ncat > "$1.msg"\n', { mode: 0o755 });
  // B reads mail in a Maildir, by .forward
  const fwd = path.join(home(B), '.forward');
  fs.writeFileSync(fwd, `${home(B)}/Maildir/\n`);
  fs.chownSync(fwd, uidOf(B), uidOf(B));
});

after(() => {
  // a delivery agent of the user may still be on its way out: userdel refuses a user with processes
  for (const u of made) {
    spawnSync('pkill', ['-KILL', '-u', u]);
    for (let i = 0; i < 50 && spawnSync('userdel', [u]).status === 8; i++) spawnSync('sleep', ['0.1']);
  }
});

/** A configuration whose local section uses the test's users and aliases; extra: more local.* lines. */
async function config(extra: string[] = []): Promise<TestConfig> {
  const cfg = await makeConfig(
    [
      'local:',
      `  root: ${A}`,
      `  aliases: ${JSON.stringify(path.join(base, 'aliases'))}`,
      `  mail_dir: ${JSON.stringify(path.join(base, 'mail'))}`,
      '  forward: true',
      ...extra.map((l) => `  ${l}`),
    ].join('\n'),
  );
  _cfgDir = cfg.configDir;
  return cfg;
}

/** Writes the aliases file (and its include) with every feature. */
function writeAliases(): void {
  const files = path.join(base, 'files');
  fs.writeFileSync(path.join(base, 'staff.list'), `# included\n${B}\n`);
  fs.writeFileSync(
    path.join(base, 'aliases'),
    [
      '# every feature of the format',
      'postmaster: root',
      `team: ${A},`,
      `  ${B}`,
      `staff: :include:${path.join(base, 'staff.list')}`,
      `archive: ${path.join(files, 'archive.mbox')}`,
      `recorder: "|${path.join(base, 'bin', 'record')} ${path.join(files, 'ran')}"`,
      `dev-*: ${B}`,
      'loopa: loopb',
      'loopb: loopa',
      '',
    ].join('\n'),
  );
}

/** The mail folder of the mbox files, as Debian's /var/mail. */
function mailDir(): string {
  const d = path.join(base, 'mail');
  fs.mkdirSync(d, { recursive: true });
  fs.chownSync(d, 0, Number(sh('getent', ['group', 'mail']).split(':')[2]));
  fs.chmodSync(d, 0o2775);
  return d;
}

/** The messages of an mbox file as Python's mailbox module reads them: their subjects. */
function mboxSubjects(file: string): string[] {
  const out = sh('python3', [
    '-c',
    'import mailbox,sys,json\nprint(json.dumps([m["subject"] for m in mailbox.mbox(sys.argv[1])]))',
    file,
  ]);
  return JSON.parse(out) as string[];
}

/** What bsd-mailx prints of the first message of a user's mbox, read as that user. */
function mailxFirst(user: string, file: string): string {
  return sh('su', [user, '-s', '/bin/sh', '-c', `mail -N -f ${file}`], { input: 'p\nq\n' });
}

/** What mutt shows of a Maildir, read as its user without a terminal: the message count and the index. */
function muttIndex(user: string, maildir: string): string {
  const out = path.join(home(user), `mutt-${randomBytes(3).toString('hex')}`);
  const cmd = `mutt -n -F /dev/null -R -e 'set folder=${maildir}' -e 'set quit=yes' -e 'push <quit>' -f ${maildir}`;
  const r = spawnSync(
    'su',
    [user, '-s', '/bin/sh', '-c', `TERM=xterm HOME=${home(user)} timeout 10 script -qfc "${cmd}" ${out}`],
    {
      encoding: 'utf8',
      timeout: 20_000,
      input: '',
    },
  );
  assert.equal(r.error, undefined);
  return fs.existsSync(out) ? fs.readFileSync(out, 'latin1') : '';
}

test('the SMTP dialogue: unknown users and loops are refused at RCPT, a quoted |command is only an unknown user', {
  skip,
}, async () => {
  writeAliases();
  mailDir();
  const cfg = await config();
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<sender@client.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<nosuch-user@test.example>'), /^550 5\.1\.1 /);
    assert.match(await c.cmd('RCPT TO:<loopa@test.example>'), /^5\d\d 5\.4\.6 .*loop/i);
    const pwned = path.join(base, 'files', 'pwned');
    assert.match(await c.cmd(`RCPT TO:<"|/usr/bin/touch ${pwned}"@test.example>`), /^5\d\d 5\.1\.[13] /);
    assert.match(await c.cmd(`RCPT TO:<"${pwned}"@test.example>`), /^5\d\d 5\.1\.[13] /);
    assert.match(await c.cmd('RCPT TO:<team@test.example>'), /^250/);
    c.send('QUIT\r\n');
    c.close();
    assert.equal(fs.existsSync(pwned), false, 'no command ran and no file was written');
  } finally {
    await stopDaemon(d);
  }
});

test('one message to aliases: the mbox for one user (mail -f, Python mailbox), the Maildir by .forward (mutt), a file, a command as nobody, each target once', {
  skip,
}, async () => {
  writeAliases();
  mailDir();
  const cfg = await config();
  const d: RunningDaemon = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    await c.reply();
    await c.cmd('EHLO client.example');
    assert.match(await c.cmd('MAIL FROM:<sender@client.example>'), /^250/);
    for (const r of ['team', 'staff', 'dev-ops', 'archive', 'recorder', 'postmaster'])
      assert.match(await c.cmd(`RCPT TO:<${r}@test.example>`), /^250/, r);
    assert.match(await c.cmd('DATA'), /^354/);
    c.send('From: sender@client.example\r\nSubject: to the aliases\r\n\r\nFrom here on\r\nhello\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    c.send('QUIT\r\n');
    c.close();
    const mbox = path.join(base, 'mail', A);
    const maildirNew = path.join(home(B), 'Maildir', 'new');
    const ran = path.join(base, 'files', 'ran');
    const archive = path.join(base, 'files', 'archive.mbox');
    const done = await waitUntil(
      async () =>
        fs.existsSync(mbox) &&
        fs.existsSync(ran) &&
        fs.existsSync(archive) &&
        fs.existsSync(maildirNew) &&
        fs.readdirSync(maildirNew).length > 0 &&
        (await queueJson(cfg)).length === 0,
      20_000,
    );
    assert.ok(done, `delivered; log:\n${d.log()}`);
    // A: team and postmaster (root is A) are one target: one copy, in an mbox A owns, group mail
    const st = fs.statSync(mbox);
    assert.equal(st.uid, uidOf(A));
    assert.equal(st.mode & 0o777, 0o660);
    assert.deepEqual(mboxSubjects(mbox), ['to the aliases']);
    const text = fs.readFileSync(mbox, 'latin1');
    assert.match(text, /^From sender@client\.example /);
    assert.match(text, /^>From here on$/m, 'a From line in the body is escaped');
    assert.match(text, /^Return-Path: <sender@client\.example>$/m);
    assert.match(text, new RegExp(`^Delivered-To: ${A}@test\\.example$`, 'm'));
    const shown = mailxFirst(A, mbox);
    assert.match(shown, /Subject: to the aliases/);
    assert.match(shown, /hello/);
    // B: team, staff (include) and dev-ops (glob) are one target, the Maildir of B's .forward
    const files = fs.readdirSync(maildirNew);
    assert.equal(files.length, 1, files.join(' '));
    assert.equal(fs.statSync(path.join(maildirNew, files[0]!)).uid, uidOf(B));
    assert.match(muttIndex(B, path.join(home(B), 'Maildir')), /to the aliases/);
    // the file target and the command ran as nobody (the aliases file is root's)
    assert.deepEqual(mboxSubjects(archive), ['to the aliases']);
    assert.equal(fs.statSync(archive).uid, 65534);
    assert.equal(fs.readFileSync(ran, 'utf8').trim(), '65534');
    assert.match(fs.readFileSync(`${ran}.msg`, 'latin1'), /^Subject: to the aliases$/m);
    // explain says the same
    const x = await ferrymail(cfg, ['aliases', 'explain', 'team@test.example']);
    assert.equal(x.code, 0, x.stderr);
    assert.match(x.stdout, new RegExp(A));
    assert.match(x.stdout, /Maildir/);
  } finally {
    await stopDaemon(d);
  }
});

test("cron's and at's mail with no route and no daemon running: it lands in the mailbox once the daemon starts", {
  skip,
}, async () => {
  writeAliases();
  mailDir();
  const cfg = await config();
  // Debian's cron: sendmail -FCronDaemon -i -B8BITMIME -oem root; at: sendmail -i USER
  const cron = await sendmail(
    cfg,
    ['-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'root'],
    `From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@test> run-parts ${tag}\n\nthe job said: caf\xe9\n`,
  );
  assert.equal(cron.code, 0, cron.stderr);
  const at = await sendmail(cfg, ['-i', B], `Subject: Output from your job ${tag}\nTo: ${B}\n\ndone\n`);
  assert.equal(at.code, 0, at.stderr);
  assert.equal((await queueJson(cfg)).length, 2, 'both wait for the daemon');
  const d = await startDaemon(cfg);
  try {
    const mbox = path.join(base, 'mail', A);
    const got = await waitUntil(
      () => fs.existsSync(mbox) && mboxSubjects(mbox).some((s) => s.includes(`run-parts ${tag}`)),
      20_000,
    );
    assert.ok(got, `cron's mail reached root's person; log:\n${d.log()}`);
    const box = path.join(home(B), 'Maildir', 'new');
    assert.ok(
      await waitUntil(
        () =>
          fs.existsSync(box) &&
          fs.readdirSync(box).some((f) => fs.readFileSync(path.join(box, f), 'latin1').includes(`job ${tag}`)),
        20_000,
      ),
      `at's mail reached B; log:\n${d.log()}`,
    );
    assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === 0, 10_000));
  } finally {
    await stopDaemon(d);
  }
});

test('a .forward others may write makes delivery wait with the reason; a planted symbolic link as the mbox is never written through', {
  skip,
}, async () => {
  writeAliases();
  const md = mailDir();
  const cfg = await config();
  const fwd = path.join(home(B), '.forward');
  fs.chmodSync(fwd, 0o664);
  // A's mbox replaced by a link to a file A may not write
  const secret = path.join(base, 'secret');
  fs.writeFileSync(secret, 'root only\n', { mode: 0o600 });
  fs.rmSync(path.join(md, A), { force: true });
  fs.symlinkSync(secret, path.join(md, A));
  try {
    const s = await sendmail(cfg, ['-i', '-f', 'sender@client.example', B, A], `Subject: wait ${tag}\n\nx\n`);
    assert.equal(s.code, 0, s.stderr);
    const f = await ferrymail(cfg, ['flush']);
    assert.equal(f.code, 0, f.stderr);
    const q = await queueJson(cfg);
    assert.equal(q.length, 1, JSON.stringify(q));
    const rs = q[0]!.recipients as Array<Record<string, string>>;
    assert.ok(
      rs.every((r) => r.state === 'deferred'),
      JSON.stringify(rs),
    );
    assert.ok(
      rs.some((r) => /\.forward/.test(r.last_error ?? '') && /writ/.test(r.last_error ?? '')),
      JSON.stringify(rs),
    );
    assert.ok(
      rs.some((r) => /symbolic link/.test(r.last_error ?? '')),
      JSON.stringify(rs),
    );
    assert.equal(fs.readFileSync(secret, 'utf8'), 'root only\n');
    // put right: both delivered on the next run
    fs.chmodSync(fwd, 0o644);
    fs.rmSync(path.join(md, A));
    const f2 = await ferrymail(cfg, ['flush']);
    assert.equal(f2.code, 0, f2.stderr);
    assert.equal((await queueJson(cfg)).length, 0, f2.stdout);
    assert.ok(mboxSubjects(path.join(md, A)).includes(`wait ${tag}`));
  } finally {
    fs.chmodSync(fwd, 0o644);
    fs.rmSync(path.join(md, A), { force: true });
  }
});

test('procmail and maildrop as the delivery agent, run as the user with its own rc file', { skip }, async () => {
  writeAliases();
  mailDir();
  // procmail reads ~/.procmailrc, maildrop ~/.mailfilter (600, the user's); both as Postfix's mailbox_command
  const pm = path.join(home(A), '.procmailrc');
  fs.writeFileSync(pm, `DEFAULT=${home(A)}/procmail.mbox\nLOGFILE=${home(A)}/procmail.log\n`);
  const mf = path.join(home(A), '.mailfilter');
  fs.writeFileSync(mf, `to "${home(A)}/maildrop.mbox"\n`, { mode: 0o600 });
  for (const f of [pm, mf]) fs.chownSync(f, uidOf(A), uidOf(A));
  for (const [mda, file] of [
    ['[/usr/bin/procmail, -a, "${extension}"]', 'procmail.mbox'],
    ['[/usr/bin/maildrop]\n  mda_from_line: false', 'maildrop.mbox'],
  ] as const) {
    const cfg = await config(['mailbox: mda', `mda: ${mda}`]);
    const s = await sendmail(cfg, ['-i', '-f', 'sender@client.example', `${A}+lists`], `Subject: via ${file}\n\nx\n`);
    assert.equal(s.code, 0, s.stderr);
    const f = await ferrymail(cfg, ['flush']);
    assert.equal(f.code, 0, f.stderr);
    assert.equal((await queueJson(cfg)).length, 0, `${file}: ${f.stdout}`);
    const box = path.join(home(A), file);
    assert.deepEqual(mboxSubjects(box), [`via ${file}`], fs.readFileSync(box, 'latin1'));
    assert.equal(fs.statSync(box).uid, uidOf(A), 'written as the user');
  }
});

test('notices land locally: a local sender gets its failure notice in its mailbox; a notice to a remote sender that no route can carry also goes to the submitting user', {
  skip,
}, async () => {
  writeAliases();
  const md = mailDir();
  fs.rmSync(path.join(md, A), { force: true });
  const cfg = await config();
  // the sendmail door cannot refuse an unknown user: it is bounced, to the local sender
  const s1 = await sendmail(
    cfg,
    ['-i', '-f', `${A}@test.example`, `nobody-here-${tag}@test.example`],
    `Subject: lost ${tag}\n\nx\n`,
  );
  assert.equal(s1.code, 0, s1.stderr);
  // a remote sender, submitted by root (whose mail is A's): the notice waits for a route, a copy lands here
  const s2 = await sendmail(
    cfg,
    ['-i', '-f', 'someone@remote.example', `gone-${tag}@test.example`],
    `Subject: far ${tag}\n\ny\n`,
  );
  assert.equal(s2.code, 0, s2.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  const mbox = path.join(md, A);
  const subjects = mboxSubjects(mbox);
  assert.equal(subjects.length, 2, subjects.join(' | '));
  const text = fs.readFileSync(mbox, 'latin1');
  assert.match(text, new RegExp(`Final-Recipient: rfc822; ?nobody-here-${tag}@test\\.example`, 'i'));
  assert.match(text, new RegExp(`Final-Recipient: rfc822; ?gone-${tag}@test\\.example`, 'i'));
  assert.match(text, /550 5\.1\.1/);
  assert.match(text, /^From MAILER-DAEMON /m);
  // the notice to the remote sender still waits for a route
  const q = await queueJson(cfg);
  assert.equal(q.length, 1, JSON.stringify(q));
  assert.equal(q[0]!.sender, '');
  // (with no route files at all, remote recipients are left as they are: queued)
  assert.deepEqual(
    (q[0]!.recipients as Array<Record<string, string>>).map((r) => `${r.address} ${r.state}`),
    ['someone@remote.example queued', `${A}@test.example delivered`],
  );
});

/** The pids of a process's children (the delivery agents of a daemon). */
function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

test('SIGKILL of the daemon and its agents during local deliveries, 50 times: each mbox parses, no Maildir message twice, none lost', {
  skip,
  timeout: 600_000,
}, async () => {
  writeAliases();
  const md = mailDir();
  fs.rmSync(path.join(md, A), { force: true });
  fs.rmSync(path.join(home(B), 'Maildir'), { recursive: true, force: true });
  const cfg = await config();
  const total = 120;
  const body = `${'x'.repeat(76)}\n`.repeat(400); // 30 KB, so that kills land inside writes too
  for (let i = 0; i < total; i++) {
    const s = await sendmail(cfg, ['-i', '-f', 'sender@client.example', A, B], `Subject: kill-${tag}-${i}\n\n${body}`);
    assert.equal(s.code, 0, s.stderr);
  }
  const mbox = path.join(md, A);
  const box = path.join(home(B), 'Maildir', 'new');
  const progress = (): string => {
    const size = fs.existsSync(mbox) ? fs.statSync(mbox).size : 0;
    const n = fs.existsSync(box) ? fs.readdirSync(box).length : 0;
    return `${size}/${n}`;
  };
  let kills = 0;
  const logs: string[] = [];
  for (let round = 0; round < 50; round++) {
    if (!(await queueJson(cfg)).length) break;
    const d = await startDaemon(cfg);
    const before = progress();
    // kill once something moved, a little later each time (0 to 24 ms), agents and daemon at once
    await waitUntil(() => progress() !== before, 10_000, 2);
    await new Promise((r) => setTimeout(r, round % 25));
    const pids = [...childrenOf(d.child.pid!), d.child.pid!];
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
    await d.kill();
    logs.push(d.log());
    kills++;
  }
  assert.ok(kills >= 30, `only ${kills} kills before the queue was empty`);
  // a manual run finishes what waits, deferred ones included (uncertain deliveries are checked, not repeated)
  let last = '';
  for (let i = 0; i < 5 && (await queueJson(cfg)).length; i++) {
    const f = await ferrymail(cfg, ['flush']);
    last = f.stdout + f.stderr;
  }
  const debugInfo = (): string => {
    const j = path.join(cfg.spool, 'inflight');
    const notes = fs.existsSync(j) ? fs.readFileSync(j, 'latin1') : '(none)';
    const size = fs.existsSync(mbox) ? fs.statSync(mbox).size : -1;
    const m = /"offset":(\d+)/.exec(notes);
    const around = m ? fs.readFileSync(mbox, 'latin1').slice(Number(m[1]) - 200, Number(m[1]) + 300) : '';
    return `${last}\nnotes: ${notes}\nmbox size ${size}\naround: ${JSON.stringify(around)}`;
  };
  const ids = (await queueJson(cfg)).map((e) => e.id as string);
  const related = logs
    .join('\n')
    .split('\n')
    .filter((l) => ids.some((id) => l.includes(id)) || /warn|error|unknown|lost/.test(l));
  assert.deepEqual(ids, [], `${debugInfo()}\n${related.join('\n')}`);
  const want = Array.from({ length: total }, (_, i) => `kill-${tag}-${i}`).sort();
  // the mbox: every message exactly once, whole (Python reads each with its body)
  const subjects = mboxSubjects(mbox).sort();
  assert.deepEqual(subjects, want);
  const sizes = JSON.parse(
    sh('python3', [
      '-c',
      'import mailbox,sys,json\nprint(json.dumps(sorted({len(m.get_payload()) for m in mailbox.mbox(sys.argv[1])})))',
      mbox,
    ]),
  ) as number[];
  assert.deepEqual(sizes, [body.length], 'every body whole');
  const mailx = sh('su', [A, '-s', '/bin/sh', '-c', `mail -f ${mbox}`], { input: 'q\n' });
  assert.match(mailx, new RegExp(`: ${total} messages`), 'mail -f counts every message');
  // the Maildir: every message exactly once
  const got = fs
    .readdirSync(box)
    .map((f) => /^Subject: (.*)$/m.exec(fs.readFileSync(path.join(box, f), 'latin1'))?.[1] ?? '?')
    .sort();
  assert.deepEqual(got, want);
  assert.deepEqual(fs.readdirSync(path.join(home(B), 'Maildir', 'tmp')), [], 'no leftovers in tmp/');
});

test("a user's .forward cannot read root's files through the daemon, nor make it write into the mail folder", {
  skip,
}, async () => {
  writeAliases();
  const md = mailDir();
  const cfg = await config(['allow_files: [aliases, forward, include]']);
  const secret = path.join(base, 'root-only');
  fs.writeFileSync(secret, 'TOPSECRET_line\n', { mode: 0o600 });
  const fwd = path.join(home(B), '.forward');
  const d = await startDaemon(cfg);
  try {
    const rcpt = async (): Promise<string> => {
      const c = await RawSmtp.connect(cfg.port);
      await c.reply();
      await c.cmd('EHLO client.example');
      await c.cmd('MAIL FROM:<sender@client.example>');
      const r = await c.cmd(`RCPT TO:<${B}@test.example>`);
      c.send('QUIT\r\n');
      c.close();
      return r;
    };
    // an include of a file only root may read: not used, and its words never in the reply
    fs.writeFileSync(fwd, `:include:${secret}\n`);
    let r = await rcpt();
    assert.match(r, /^451 4\.3\.0 /);
    assert.match(r, new RegExp(`${B} may not read it`));
    assert.doesNotMatch(r, /TOPSECRET/);
    // .forward itself a link to that file
    fs.rmSync(fwd);
    fs.symlinkSync(secret, fwd);
    fs.lchownSync(fwd, uidOf(B), uidOf(B));
    r = await rcpt();
    assert.match(r, /^451 4\.3\.0 /);
    assert.doesNotMatch(r, /TOPSECRET/);
    // a file target in the mail folder (another user's mailbox or lock): refused, nothing made there
    fs.rmSync(fwd);
    // (A's own mailbox and its lock come and go: the failure notice's copy for root lands there)
    const others = (): string[] =>
      fs
        .readdirSync(md)
        .filter((n) => !n.startsWith(A))
        .sort();
    const before = others();
    fs.writeFileSync(fwd, `${path.join(md, `victim${tag}.lock`)}\n${path.join(md, `nobody${tag}`)}\n`);
    fs.chownSync(fwd, uidOf(B), uidOf(B));
    const s = await sendmail(
      cfg,
      ['-i', '-f', 'sender@client.example', B],
      `Subject: into the mail folder ${tag}\n\nx\n`,
    );
    assert.equal(s.code, 0, s.stderr);
    assert.ok(await waitUntil(async () => (await queueJson(cfg)).every((m) => m.sender === ''), 15_000), d.log());
    assert.deepEqual(others(), before, 'nothing new in the mail folder');
    assert.match(d.log(), /550 5\.7\.1 .*is in the mail folder/);
  } finally {
    fs.rmSync(fwd, { force: true });
    fs.writeFileSync(fwd, `${home(B)}/Maildir/\n`);
    fs.chownSync(fwd, uidOf(B), uidOf(B));
    await stopDaemon(d);
  }
});

test('a user who stops their own delivery agent (SIGSTOP from a .forward command) does not hold up the queue run', {
  skip,
  timeout: 120_000,
}, async () => {
  writeAliases();
  mailDir();
  const cfg = await config(['command_time_limit: 2s']);
  const stopper = path.join(base, 'bin', 'stopper');
  fs.writeFileSync(stopper, '#!/bin/sh\nkill -STOP $PPID\nsleep 5\n', { mode: 0o755 });
  const fwd = path.join(home(B), '.forward');
  fs.writeFileSync(fwd, `|${stopper}\n`);
  fs.chownSync(fwd, uidOf(B), uidOf(B));
  try {
    const s = await sendmail(cfg, ['-i', '-f', 'sender@client.example', B, A], `Subject: stopped ${tag}\n\nx\n`);
    assert.equal(s.code, 0, s.stderr);
    // the run ends (the helper's own limit would fail it otherwise); A's copy is delivered, B's waits
    const f = await ferrymail(cfg, ['flush']);
    assert.equal(f.code, 0, f.stderr);
    const q = await queueJson(cfg);
    const rs = q.flatMap((m) => m.recipients as Array<Record<string, string>>);
    const b = rs.find((r) => (r.address ?? '').includes(stopper));
    assert.ok(b, JSON.stringify(rs));
    assert.notEqual(b.state, 'delivered');
    assert.match(b.last_error ?? '', /did not answer within/);
    assert.ok(mboxSubjects(path.join(base, 'mail', A)).includes(`stopped ${tag}`));
  } finally {
    fs.writeFileSync(fwd, `${home(B)}/Maildir/\n`);
    fs.chownSync(fwd, uidOf(B), uidOf(B));
  }
});

test('one user reached by several spellings of this host in one message gets one copy', { skip }, async () => {
  writeAliases();
  const md = mailDir();
  fs.rmSync(path.join(md, A), { force: true });
  const cfg = await config();
  const s = await sendmail(
    cfg,
    ['-i', '-f', 'sender@client.example', A, `${A}@localhost`, `${A}@[127.0.0.1]`, `${A.toUpperCase()}@test.example`],
    `Subject: spellings ${tag}\n\nx\n`,
  );
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  assert.deepEqual(mboxSubjects(path.join(md, A)), [`spellings ${tag}`]);
});
