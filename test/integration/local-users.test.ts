// Local users who may not write the system spool: their messages go through the spool's drop folder,
// whose files the kernel says are theirs. The envelope, queue show, the log and the Received header name
// the submitter's uid; submission.local_senders limits -f; nobody who squats the SMTP port gets a message;
// forged and planted drop files are refused; the sendmail command needs neither the TLS key nor the
// users file, which only root may read.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  messageData,
  queueJson,
  ROOT,
  run,
  SENDMAIL,
  startDaemon,
  tempDir,
  stopDaemon,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

const NOBODY = 65534;
const root = process.getuid?.() === 0;
const skip = !root && 'needs root to run as another user';
let cfg: TestConfig;
let d: RunningDaemon | undefined;
let program: string;

before(async () => {
  if (!root) return;
  cfg = await makeConfig(
    [
      'tls:\n  cert: cert.pem\n  key: key.pem',
      'auth:\n  users_file: users',
      'submission:\n  local_senders:\n    - user: "*"\n      senders: ["${user}@test.example", "<>"]\n    - user: nobody\n      senders: ["*@nobody.example"]',
    ].join('\n'),
  );
  for (const p of [cfg.dir, cfg.configDir]) fs.chmodSync(p, 0o755);
  fs.chmodSync(path.join(cfg.configDir, 'ferrymail.yaml'), 0o644);
  // the multi-user setup: the TLS key and the users file are root's alone
  const { execFileSync } = await import('node:child_process');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      '/CN=test.example',
      '-days',
      '2',
      '-keyout',
      path.join(cfg.configDir, 'key.pem'),
      '-out',
      path.join(cfg.configDir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  );
  fs.writeFileSync(path.join(cfg.configDir, 'users'), '', { mode: 0o600 });
  fs.chmodSync(path.join(cfg.configDir, 'key.pem'), 0o600);
  // the unprivileged user may not be able to read the checkout: run a copy of the bundled command
  const app = path.join(cfg.dir, 'app');
  fs.cpSync(path.join(ROOT, 'dist', 'bundle'), path.join(app, 'dist', 'bundle'), { recursive: true });
  fs.mkdirSync(path.join(app, 'bin'));
  fs.cpSync(path.join(ROOT, 'bin'), path.join(app, 'bin'), { recursive: true });
  for (const p of [app, path.join(app, 'bin'), path.join(app, 'dist'), path.join(app, 'dist', 'bundle')])
    fs.chmodSync(p, 0o755);
  program = path.join(app, 'bin', 'sendmail.js');
});
after(async () => {
  await stopDaemon(d);
});

/** Runs a program as the unprivileged user. */
function asNobody(
  args: string[],
  input: string,
  file = program,
  vars: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [file, ...args], {
      uid: NOBODY,
      gid: NOBODY,
      env: {
        FERRYMAIL_CONFIG_DIR: cfg.configDir,
        TMPDIR: '/tmp',
        HOME: '/tmp',
        XDG_CACHE_HOME: '/tmp/ferrymail-nobody-cache',
        ...vars,
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => (stdout += b));
    child.stderr.on('data', (b) => (stderr += b));
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(t), resolve({ code, stdout, stderr })));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** Drop files waiting in the spool. */
function drops(): string[] {
  return fs.readdirSync(path.join(cfg.spool, 'drop'));
}

test('no daemon and nobody on its port: the message waits in the drop folder, and no squatter of the port gets it', {
  skip,
}, async () => {
  // the spool as a daemon leaves it (made once), the daemon stopped
  d = await startDaemon(cfg);
  await stopDaemon(d);
  d = undefined;
  // another user binds the daemon's port while it is down
  const squatter = net.createServer((c) => {
    got.push('connection');
    c.destroy();
  });
  const got: string[] = [];
  await new Promise<void>((r) => squatter.listen(cfg.port, '127.0.0.1', () => r()));
  try {
    const r = await asNobody(['-i', '-F', 'No Body', 'x@example.org'], 'Subject: dropped\n\nbody\n');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(got, [], 'nothing was handed to whoever listens on the port');
  } finally {
    await new Promise((r) => squatter.close(r));
  }
  const [file] = drops();
  assert.match(file!, /^D\.[0-9a-f]{32}$/);
  const st = fs.statSync(path.join(cfg.spool, 'drop', file!));
  assert.equal(st.uid, NOBODY, "the drop file is the submitter's");
  assert.equal(st.mode & 0o077, 0, 'no other user may read it');
  // the daemon takes it when it starts
  d = await startDaemon(cfg);
  assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === 1, 10_000), d.log());
  assert.deepEqual(drops(), []);
  const [e] = await queueJson(cfg);
  assert.equal(e!.sender, 'nobody@test.example');
  assert.deepEqual(e!.origin, { door: 'sendmail', user: 'nobody', uid: NOBODY });
  const data = messageData(cfg, e!.id);
  assert.match(data, /^Received: by test\.example \(ferrymail\) \(uid 65534, nobody\) with local id\s/);
  assert.equal(data.match(/^Received:/gm)!.length, 1, "one Received line, the daemon's");
  assert.match(data, /From: No Body <nobody@test\.example>/);
  assert.match(d.log(), /<= \S+ .*user=nobody uid=65534/);
});

test('daemon running: a drop is queued at once; queue show names the user; -f is limited by local_senders', {
  skip,
}, async () => {
  d ??= await startDaemon(cfg);
  const before = (await queueJson(cfg)).length;
  const ok = await asNobody(['-i', '-f', 'me@nobody.example', 'y@example.org'], 'Subject: allowed\n\nbody\n');
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === before + 1, 5000), d.log());
  const q = await queueJson(cfg);
  const e = q.find((x) => x.sender === 'me@nobody.example')!;
  const show = await ferrymail(cfg, ['queue', 'show', e.id]);
  assert.match(show.stdout, /nobody/);
  assert.match(show.stdout, /65534/);
  const refused = await asNobody(['-i', '-f', 'ceo@bank.example', 'y@example.org'], 'Subject: forged\n\nbody\n');
  assert.equal(refused.code, 77, refused.stderr);
  assert.match(refused.stderr, /^sendmail: user nobody may not send as <ceo@bank\.example>/);
  assert.equal(refused.stderr.trim().split('\n').length, 1);
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!(await queueJson(cfg)).some((x) => x.sender === 'ceo@bank.example'));
});

test('a drop file written by hand with a forged sender or a planted symlink is refused and kept aside', {
  skip,
}, async () => {
  d ??= await startDaemon(cfg);
  const dropDir = path.join(cfg.spool, 'drop');
  // a user writes a drop file directly, asking for a sender that is not theirs
  const forged = `Subject: forged\r\n\r\nbody\r\n\0${JSON.stringify({ door: 'sendmail', sender: 'ceo@bank.example', recipients: [{ address: 'victim@example.com' }] })}\n`;
  const script = `const fs=require('fs');fs.writeFileSync(${JSON.stringify(path.join(dropDir, `T.${'a'.repeat(32)}`))}, ${JSON.stringify(forged)});fs.renameSync(${JSON.stringify(path.join(dropDir, `T.${'a'.repeat(32)}`))}, ${JSON.stringify(path.join(dropDir, `D.${'a'.repeat(32)}`))});fs.symlinkSync('/etc/shadow', ${JSON.stringify(path.join(dropDir, `D.${'b'.repeat(32)}`))});`;
  const w = await new Promise<number | null>((resolve) =>
    spawn(process.execPath, ['-e', script], { uid: NOBODY, gid: NOBODY, stdio: 'inherit' }).on('close', resolve),
  );
  assert.equal(w, 0);
  assert.ok(await waitUntil(() => drops().length === 0, 5000), `drop folder: ${drops().join(', ')}`);
  const q = await queueJson(cfg);
  assert.ok(!q.some((x) => x.sender === 'ceo@bank.example'), 'the forged sender was refused');
  assert.ok(!q.some((x) => x.recipients.some((r: { address: string }) => r.address === 'victim@example.com')));
  const corrupt = fs.readdirSync(path.join(cfg.spool, 'corrupt'));
  assert.equal(corrupt.filter((f) => f.startsWith('drop.')).length, 2, corrupt.join(', '));
  assert.match(d.log(), /drop file refused; kept in corrupt\/ .*uid=65534 .*may not send as <ceo@bank\.example>/);
  // the symlink was never followed: no message holds the shadow file
  for (const e of q) assert.doesNotMatch(messageData(cfg, e.id), /^root:/m);
});

test('a drop file refused in the middle of a long read, and a directory in the drop folder, stop neither the daemon nor later drops', {
  skip,
}, async () => {
  d ??= await startDaemon(cfg);
  const dropDir = path.join(cfg.spool, 'drop');
  // a NUL early in a long message: the intake refuses it while the file is still being read
  const big = `Subject: nul\r\n\r\nbad\0line\r\n${`${'y'.repeat(78)}\r\n`.repeat(60_000)}`;
  const trailer = JSON.stringify({ door: 'sendmail', sender: null, recipients: [{ address: 'nul@example.org' }] });
  const a = path.join(dropDir, `T.${'1'.repeat(32)}`);
  // a directory with a ready file's name, with something inside, made by the user
  // (made beside the spool and moved in whole: the running daemon takes what appears at once)
  const dir = path.join(dropDir, `D.${'2'.repeat(32)}`);
  const made = path.join(cfg.dir, 'drop-dir');
  fs.mkdirSync(path.join(made, 'inner'), { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(made, 'inner', 'f'), 'x');
  for (const p of [made, path.join(made, 'inner'), path.join(made, 'inner', 'f')]) fs.chownSync(p, NOBODY, NOBODY);
  fs.renameSync(made, dir);
  fs.writeFileSync(a, `${big}\0${trailer}\n`, { mode: 0o600 });
  fs.chownSync(a, NOBODY, NOBODY);
  fs.renameSync(a, a.replace('/T.', '/D.'));
  assert.ok(await waitUntil(() => drops().length === 0, 10_000), `drop folder: ${drops().join(', ')}\n${d.log()}`);
  assert.match(d.log(), /drop file refused; kept in corrupt\/ .*uid=65534/);
  // the daemon is still there and takes the next one
  const before = (await queueJson(cfg)).length;
  const ok = await asNobody(['-i', 'after@example.org'], 'Subject: after\n\nbody\n');
  assert.equal(ok.code, 0, ok.stderr);
  assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === before + 1, 5000), d.log());
  assert.equal(d.child.exitCode, null, 'the daemon did not die');
  const q = await queueJson(cfg);
  assert.ok(!q.some((x) => x.recipients.some((r: { address: string }) => r.address === 'nul@example.org')));
});

test('sendmail -bs as another user goes through the drop folder too', { skip }, async () => {
  d ??= await startDaemon(cfg);
  const before = (await queueJson(cfg)).length;
  const r = await asNobody(
    ['-bs'],
    'EHLO me\r\nMAIL FROM:<x@nobody.example>\r\nRCPT TO:<z@example.org>\r\nDATA\r\nSubject: bs\r\n\r\nbody\r\n.\r\nMAIL FROM:<ceo@bank.example>\r\nQUIT\r\n',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /250 2\.0\.0 Ok: queued as D\.[0-9a-f]{32}/);
  assert.match(r.stdout, /553 5\.7\.1 Sender address rejected/);
  assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === before + 1, 5000), d.log());
  const e = (await queueJson(cfg)).find((x) => x.sender === 'x@nobody.example')!;
  assert.deepEqual(e.origin, { door: 'sendmail-bs', user: 'nobody', uid: NOBODY });
});

test('qmail-inject as another user: the sender a Return-Path or QMAILSUSER names goes through the drop folder, checked', {
  skip,
}, async () => {
  d ??= await startDaemon(cfg);
  const inject = path.join(path.dirname(program), 'qmail-inject');
  if (!fs.existsSync(inject)) fs.symlinkSync('sendmail.js', inject);
  const before = (await queueJson(cfg)).length;
  // no variable names a user: the login, which is the default sender the daemon gives
  const plain = await asNobody([], 'To: q1@example.org\nSubject: plain\n\nbody\n', inject);
  assert.equal(plain.code, 0, plain.stderr);
  // a Return-Path in the header names the sender only once the header is read
  const rp = await asNobody([], 'Return-Path: <rp@nobody.example>\nTo: q2@example.org\n\nbody\n', inject);
  assert.equal(rp.code, 0, rp.stderr);
  const env = await asNobody(['q3@example.org'], 'Subject: env\n\nbody\n', inject, {
    QMAILSUSER: 'lists',
    QMAILSHOST: 'nobody.example',
  });
  assert.equal(env.code, 0, env.stderr);
  assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === before + 3, 5000), d.log());
  const q = await queueJson(cfg);
  const to = (a: string) => q.find((x) => x.recipients.some((r: { address: string }) => r.address === a))!;
  assert.equal(to('q1@example.org').sender, 'nobody@test.example');
  assert.equal(to('q2@example.org').sender, 'rp@nobody.example');
  assert.equal(to('q3@example.org').sender, 'lists@nobody.example');
  assert.match(messageData(cfg, to('q3@example.org').id), /^From: nobody@test\.example\r$/m);
  // local_senders holds for both: exit 100, one line, nothing dropped
  const forged = await asNobody([], 'Return-Path: <ceo@bank.example>\nTo: q4@example.org\n\nbody\n', inject);
  assert.equal(forged.code, 100, forged.stderr);
  assert.equal(
    forged.stderr,
    'qmail-inject: fatal: user nobody may not send as <ceo@bank.example> (submission.local_senders)\n',
  );
  const envForged = await asNobody(['q5@example.org'], 'Subject: s\n\nbody\n', inject, {
    QMAILSUSER: 'ceo',
    QMAILSHOST: 'bank.example',
  });
  assert.equal(envForged.code, 100, envForged.stderr);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await queueJson(cfg)).length, before + 3);
});

test('a drop folder in a spool another user prepared is refused by the submitter', { skip }, async () => {
  // the spool configured under a directory an ordinary user owns: that user could read every message
  const other = await makeConfig('', {});
  const evil = path.join(other.dir, 'evil');
  fs.mkdirSync(path.join(evil, 'spool', 'drop'), { recursive: true });
  fs.chmodSync(path.join(evil, 'spool', 'drop'), 0o1733);
  fs.chmodSync(path.join(evil, 'spool'), 0o711);
  for (const p of [evil, path.join(evil, 'spool'), path.join(evil, 'spool', 'drop')])
    fs.chownSync(p, NOBODY + 1, NOBODY + 1);
  for (const p of [other.dir, other.configDir]) fs.chmodSync(p, 0o755);
  fs.writeFileSync(
    path.join(other.configDir, 'ferrymail.yaml'),
    `hostname: test.example\nspool: ${JSON.stringify(path.join(evil, 'spool'))}\n`,
    { mode: 0o644 },
  );
  const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const c = spawn(process.execPath, [program, '-i', 'x@example.org'], {
      uid: NOBODY,
      gid: NOBODY,
      env: { FERRYMAIL_CONFIG_DIR: other.configDir, HOME: '/tmp', XDG_CACHE_HOME: '/tmp/ferrymail-nobody-cache' },
    });
    let stderr = '';
    c.stderr.on('data', (b) => (stderr += b));
    c.on('close', (code) => resolve({ code, stderr }));
    c.stdin.end('Subject: s\n\nsecret\n');
  });
  assert.equal(r.code, 78, r.stderr);
  assert.match(r.stderr, /refusing to hand the message over/);
  assert.deepEqual(fs.readdirSync(path.join(evil, 'spool', 'drop')), []);
});

test("root's mail for a per-user daemon goes into that user's drop folder; a spool of another user elsewhere is refused", {
  skip,
}, async () => {
  const user = `ferry${process.pid % 100000}`;
  const home = path.join(cfg.dir, 'home');
  fs.mkdirSync(home);
  const made = spawnSync('useradd', ['-M', '-d', home, '-s', '/usr/sbin/nologin', user]);
  assert.equal(made.status, 0, `useradd: ${made.stderr}`);
  try {
    const uid = Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim());
    fs.chownSync(home, uid, uid);
    fs.chmodSync(home, 0o700);
    const spool = path.join(home, 'spool');
    // the user's spool as the user's own daemon makes it (from a copy of the built code the user can
    // read: the checkout may be in a folder only root may enter)
    const code = tempDir('ferrymail-code-');
    fs.cpSync(path.join(ROOT, 'dist', 'src'), path.join(code, 'src'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(code, 'package.json'));
    spawnSync('chmod', ['-R', 'a+rX', code]);
    const mk = spawnSync(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(path.join(code, 'src', 'spool', 'writer.js'))}).then((m) => m.openSpoolWriter(${JSON.stringify(spool)}))`,
      ],
      { uid, gid: uid, encoding: 'utf8' },
    );
    assert.equal(mk.status, 0, mk.stderr);
    const rootCfg = await makeConfig('', { spool });
    const r = await run(process.execPath, [SENDMAIL, '-i', 'x@example.org'], {
      input: 'Subject: cron\n\nroot says hi\n',
      env: { FERRYMAIL_CONFIG_DIR: rootCfg.configDir },
    });
    assert.equal(r.code, 0, r.stderr);
    const drops = fs.readdirSync(path.join(spool, 'drop'));
    assert.equal(drops.length, 1, "in the drop folder, for the user's daemon to take");
    const st = fs.statSync(path.join(spool, 'drop', drops[0]!));
    assert.equal(st.uid, 0, 'owned by root, the submitter');
    assert.equal(st.mode & 0o777, 0o644, 'readable by the daemon of the user');
    // the same user's spool outside their home: root does not hand its mail over
    const elsewhere = path.join(cfg.dir, 'elsewhere');
    fs.mkdirSync(elsewhere);
    fs.chownSync(elsewhere, uid, uid);
    const mk2 = spawnSync(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(path.join(code, 'src', 'spool', 'writer.js'))}).then((m) => m.openSpoolWriter(${JSON.stringify(path.join(elsewhere, 'spool'))}))`,
      ],
      { uid, gid: uid, encoding: 'utf8' },
    );
    assert.equal(mk2.status, 0, mk2.stderr);
    const other = await makeConfig('', { spool: path.join(elsewhere, 'spool') });
    const r2 = await run(process.execPath, [SENDMAIL, '-i', 'x@example.org'], {
      input: 'Subject: s\n\nb\n',
      env: { FERRYMAIL_CONFIG_DIR: other.configDir },
    });
    assert.equal(r2.code, 78, r2.stderr);
  } finally {
    spawnSync('userdel', [user]);
  }
});
