// LMTP to Dovecot: a private dovecot (its own configuration, run and state directories in a temporary
// directory, LMTP on a loopback port, users from a passwd-file) takes one recipient and refuses an unknown
// one; ferrymail records one result per recipient.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  freePort,
  makeConfig,
  queueJson,
  RawSmtp,
  sendmail,
  startDaemon,
  stopDaemon,
  tempDir,
  waitForPort,
  waitUntil,
} from '../helpers.js';

let dovecot: ChildProcess | undefined;
let dir = '';
let port = 0;

/** The dovecot binary (often outside a user's PATH). */
function dovecotBinary(): string {
  for (const p of ['dovecot', '/usr/sbin/dovecot'])
    if (spawnSync(p, ['--version'], { stdio: 'ignore' }).status === 0) return p;
  throw new Error('dovecot not found: install dovecot-lmtpd');
}

/** The uid and gid mail is stored as: our own, or nobody's when we are root (dovecot never writes mail as root). */
function mailOwner(): { uid: number; gid: number } {
  if (process.getuid!() !== 0) return { uid: process.getuid!(), gid: process.getgid!() };
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('nobody:'));
  const [, , uid, gid] = (line ?? 'nobody:x:65534:65534').split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** A dovecot configuration that touches nothing outside dir and listens on 127.0.0.1:port only. */
function config(owner: { uid: number; gid: number }): string {
  const me = os.userInfo();
  const group = spawnSync('id', ['-gn'], { encoding: 'utf8' }).stdout.trim();
  return `protocols = lmtp
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
ssl = no
listen = 127.0.0.1
default_login_user = ${me.username}
default_internal_user = ${me.username}
default_internal_group = ${group}
first_valid_uid = 1
auth_username_format = %Ln
mail_location = maildir:${dir}/mail/%n/Maildir
passdb {
  driver = passwd-file
  args = ${dir}/users
}
userdb {
  driver = passwd-file
  args = ${dir}/users
  default_fields = uid=${owner.uid} gid=${owner.gid} home=${dir}/mail/%n
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${port}
  }
  unix_listener lmtp {
    mode = 0600
  }
}
`;
}

before(async () => {
  dir = tempDir('ferrymail-dovecot-');
  // the mail owner must reach its maildir below our temporary directory
  fs.chmodSync(dir, 0o711);
  const owner = mailOwner();
  fs.mkdirSync(path.join(dir, 'mail'));
  fs.chownSync(path.join(dir, 'mail'), owner.uid, owner.gid);
  // alice for the LMTP route; daemon, an account every Debian system has, for local.mailbox: lmtp
  fs.writeFileSync(path.join(dir, 'users'), 'alice:{PLAIN}unused::::::\ndaemon:{PLAIN}unused::::::\n');
  port = await freePort();
  fs.writeFileSync(path.join(dir, 'dovecot.conf'), config(owner));
  dovecot = spawn(dovecotBinary(), ['-F', '-c', path.join(dir, 'dovecot.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // never left running, even when the test process ends early (its children follow the master)
  process.once('exit', () => dovecot?.exitCode === null && dovecot.kill('SIGKILL'));
  let err = '';
  dovecot.stderr!.on('data', (d) => (err += d));
  await waitForPort(port, 15_000).catch((e: Error) => {
    throw new Error(
      `${e.message}: ${err}${fs.existsSync(path.join(dir, 'dovecot.log')) ? fs.readFileSync(path.join(dir, 'dovecot.log'), 'utf8') : ''}`,
    );
  });
});

after(async () => {
  if (!dovecot || dovecot.exitCode !== null) return;
  const exited = new Promise((r) => dovecot!.once('exit', r));
  dovecot.kill('SIGTERM');
  const late = setTimeout(() => dovecot!.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(late);
});

test('LMTP to dovecot: the known user gets the message, the unknown one is refused, one result each', async () => {
  const cfg = await makeConfig();
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '10-mailstore.yaml'),
    [
      'name: mailstore',
      'permanent: true',
      'allowed_recipients: ["*@example.org"]',
      'transport:',
      '  type: lmtp',
      '  host: 127.0.0.1',
      `  port: ${port}`,
      '  tls: none',
      '',
    ].join('\n'),
  );
  const s = await sendmail(
    cfg,
    ['-i', '-f', 'sender@laptop.local', 'alice@example.org', 'bob@example.org'],
    'Subject: to the mailstore\n\nhello dovecot\n',
  );
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  // alice delivered, bob failed; then the failure notice, in the same run: it waits for a route to the
  // sender, and its copy for root (who submitted the message) is delivered here
  assert.match(f.stdout, /2 messages due; 2 delivered, 1 deferred, 1 failed/);
  const box = path.join(dir, 'mail', 'alice', 'Maildir', 'new');
  const files = fs.readdirSync(box);
  assert.equal(files.length, 1);
  const msg = fs.readFileSync(path.join(box, files[0]!), 'latin1');
  assert.match(msg, /^Subject: to the mailstore$/m);
  assert.match(msg, /hello dovecot/);
  assert.match(msg, /^Return-Path: <sender@laptop\.local>$/m);
  // dovecot's log process may write the line a moment after the reply
  const logged = (): boolean =>
    /lmtp\(alice\).*saved mail to INBOX/.test(fs.readFileSync(path.join(dir, 'dovecot.log'), 'utf8'));
  assert.ok(await waitUntil(logged, 10_000), 'dovecot logged the delivery');
  // the original is gone (both final); what waits is the failure notice to the sender, which no route takes
  const q = await queueJson(cfg);
  assert.equal(q.length, 1);
  assert.equal(q[0]!.sender, '');
  assert.deepEqual(
    q[0]!.recipients.map((r: Record<string, string>) => `${r.address} ${r.state}`),
    ['sender@laptop.local deferred', 'root@test.example delivered'],
  );
  const notice = fs.readFileSync(path.join(cfg.spool, 'msg', q[0]!.id), 'latin1');
  assert.match(notice, /Final-Recipient: rfc822; ?bob@example\.org/i);
  assert.match(notice, /550 5\.1\.1 <bob@example\.org> User doesn't exist/);
});

test("local.mailbox: lmtp hands this host's users to dovecot, one answer each: the one dovecot knows is delivered, the other bounced", async () => {
  // both are accounts of this host (passwd); dovecot's own user list has daemon only
  const cfg = await makeConfig(`local:\n  root: root\n  aliases: ""\n  mailbox: lmtp\n  lmtp: "127.0.0.1:${port}"\n`);
  const s = await sendmail(
    cfg,
    ['-i', '-f', 'sender@laptop.local', 'daemon', 'bin'],
    'Subject: by local lmtp\n\nhello\n',
  );
  assert.equal(s.code, 0, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  const box = path.join(dir, 'mail', 'daemon', 'Maildir', 'new');
  assert.ok(
    await waitUntil(() => fs.existsSync(box) && fs.readdirSync(box).length === 1, 10_000),
    `dovecot stored the message; ${f.stdout}`,
  );
  const msg = fs.readFileSync(path.join(box, fs.readdirSync(box)[0]!), 'latin1');
  assert.match(msg, /^Subject: by local lmtp$/m);
  // bin: dovecot's refusal is bin's alone, in the failure notice
  const q = await queueJson(cfg);
  const notice = q.find((m) => m.sender === '');
  assert.ok(notice, JSON.stringify(q));
  const text = fs.readFileSync(path.join(cfg.spool, 'msg', notice.id), 'latin1');
  assert.match(text, /Final-Recipient: rfc822; ?bin@test\.example/i);
  assert.match(text, /550 5\.1\.1/);
  assert.doesNotMatch(text, /Final-Recipient: rfc822; ?daemon@/i);
});

/** One SMTP transaction up to DATA's reply: the replies to each RCPT, then to DATA (when one was taken). */
async function transaction(c: RawSmtp, rcpts: string[], body: string): Promise<{ rcpt: string[]; data?: string }> {
  assert.match(await c.cmd('MAIL FROM:<sender@laptop.local>'), /^250/);
  const rcpt: string[] = [];
  for (const r of rcpts) rcpt.push(await c.cmd(`RCPT TO:<${r}>`));
  if (!rcpt.some((r) => r.startsWith('250'))) {
    await c.cmd('RSET');
    return { rcpt };
  }
  assert.match(await c.cmd('DATA'), /^354/);
  c.send(`${body.replace(/\n/g, '\r\n')}\r\n.\r\n`);
  return { rcpt, data: await c.reply() };
}

test("local.deliver_in_dialogue: dovecot's verdict is the reply to DATA, one mailbox per transaction, nothing queued", async () => {
  const cfg = await makeConfig(
    `local:\n  root: root\n  aliases: ""\n  mailbox: lmtp\n  lmtp: "127.0.0.1:${port}"\n  deliver_in_dialogue: ["*"]\n`,
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    const box = path.join(dir, 'mail', 'daemon', 'Maildir', 'new');
    const before = fs.existsSync(box) ? fs.readdirSync(box).length : 0;
    // daemon is dovecot's: delivered before the 250; bin, another mailbox, must come on its own
    const first = await transaction(
      c,
      ['daemon@test.example', 'bin@test.example'],
      'Subject: in the dialogue\n\nhello',
    );
    assert.match(first.rcpt[0]!, /^250/);
    assert.match(first.rcpt[1]!, /^452 4\.5\.3 /);
    assert.match(first.data!, /^250 2\.0\.0 .*delivered to the mailbox/);
    assert.equal(fs.readdirSync(box).length, before + 1, 'in the Maildir once the client has its 250');
    const stored = fs.readdirSync(box).map((f) => fs.readFileSync(path.join(box, f), 'latin1'));
    assert.ok(stored.some((m) => /^Subject: in the dialogue$/m.test(m) && /^Received: from client\.example/m.test(m)));
    // bin is no user of dovecot's: its refusal is the reply to DATA, and no notice is made
    const second = await transaction(c, ['bin@test.example'], 'Subject: refused\n\nhello');
    assert.match(second.data!, /^550 5\.1\.1 /);
    // a recipient queued as usual (an unknown domain to relay, from loopback) cannot join one in the dialogue
    const mixed = await transaction(c, ['someone@example.net', 'daemon@test.example'], 'Subject: mixed\n\nhello');
    assert.match(mixed.rcpt[1]!, /^452 4\.5\.3 /);
    assert.match(mixed.data!, /^250 2\.0\.0 Ok: queued as /);
    assert.match(await c.cmd('QUIT'), /^221/);
    c.close();
    const q = await queueJson(cfg);
    assert.deepEqual(
      q.map((m) => m.recipients.map((r: Record<string, string>) => r.address).join(',')),
      ['someone@example.net'],
      'only the relayed message is queued',
    );
    assert.match(d.log(), /=> \S+ .*to=<daemon@test\.example>.*in=dialogue/);
    assert.match(d.log(), /\*\* \S+ .*to=<bin@test\.example>.*550 5\.1\.1.*in=dialogue/);
  } finally {
    await stopDaemon(d);
  }
});

test('local.deliver_in_dialogue: a mailbox server that cannot be reached leaves the message queued, with a 250 that says so', async () => {
  const closed = await freePort();
  const cfg = await makeConfig(
    `local:\n  root: root\n  aliases: ""\n  mailbox: lmtp\n  lmtp: "127.0.0.1:${closed}"\n  deliver_in_dialogue: [test.example]\n`,
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    const t = await transaction(c, ['daemon@test.example'], 'Subject: later\n\nhello');
    assert.match(t.data!, /^250 2\.0\.0 Ok: queued as /);
    c.close();
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    assert.equal(q[0]!.recipients[0].address, 'daemon@test.example');
    assert.match(d.log(), /could not be reached; the message is queued/);
  } finally {
    await stopDaemon(d);
  }
});
