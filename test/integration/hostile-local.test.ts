// Another local user who is hostile: squatting the spool's locks, preparing the spool before the daemon,
// planting symlinks and configuration snapshots. Each attack is run as an unprivileged user where it is
// one, and must change nothing: runs go on, the daemon refuses a spool it cannot trust (exit 78), no
// file outside the spool is ever read as a message, and root's sendmail never uses a planted snapshot.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FERRYMAIL, ferrymail, makeConfig, queueJson, ROOT, run, sendmail, tempDir, waitUntil } from '../helpers.js';

const NOBODY = 65534;
const root = process.getuid?.() === 0;
const skip = !root && 'needs root to run as another user';

/** Starts a script as the unprivileged user; resolves with the child. */
function asNobody(script: string): ReturnType<typeof spawn> {
  return spawn(process.execPath, ['-e', script], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: '/',
  });
}

test('a user binding every ferrymail socket name it can see cannot stop queue runs', { skip }, async () => {
  const cfg = await makeConfig();
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '10-pipe.yaml'),
    'name: sink\nconnections: ["*"]\npermanent: true\ntransport:\n  type: pipe\n  command: [/bin/true]\n',
  );
  // the watcher: every unix socket name that looks like ferrymail's is bound the moment it is seen
  const watcher = asNobody(`
    const fs = require('fs'); const net = require('net'); const taken = new Set();
    setInterval(() => {
      for (const line of fs.readFileSync('/proc/net/unix', 'utf8').split('\\n')) {
        const name = line.trim().split(/\\s+/)[7];
        if (!name || !/ferrymail/.test(name) || taken.has(name)) continue;
        taken.add(name);
        const s = net.createServer(); s.on('error', () => {});
        s.listen(name.startsWith('@') ? '\\0' + name.slice(1) : name, () => process.stdout.write('bound ' + name + '\\n'));
      }
    }, 2);
    setTimeout(() => process.exit(0), 20000);`);
  let bound = '';
  watcher.stdout!.on('data', (d) => (bound += d));
  try {
    for (let i = 0; i < 5; i++) {
      const s = await sendmail(cfg, ['-i', `x${i}@example.org`], 'Subject: s\n\nb\n');
      assert.equal(s.code, 0, s.stderr);
      const f = await ferrymail(cfg, ['flush']);
      assert.equal(f.code, 0, `run ${i}: ${f.stderr}`);
      assert.doesNotMatch(f.stderr, /already in progress/);
    }
    assert.deepEqual(await queueJson(cfg), [], 'every message went out');
    assert.equal(bound, '', 'no lock of the spool was visible to another user');
  } finally {
    watcher.kill('SIGKILL');
  }
});

test('a spool another user created first, with a planted symlink to a secret, is refused with exit 78', {
  skip,
}, async () => {
  const base = tempDir();
  fs.chmodSync(base, 0o1777); // a world-writable place such as /tmp
  const spool = path.join(base, 'spool');
  const secret = path.join(tempDir(), 'secret');
  fs.writeFileSync(secret, 'root:the-secret-hash:19000::::::\n', { mode: 0o600 });
  const id = '01M93HZRA787GQAE';
  const env = JSON.stringify({
    version: 1,
    id,
    arrival: new Date().toISOString(),
    sender: 'a@example.org',
    recipients: [{ address: 'attacker@example.org', state: 'queued', attempts: 0 }],
    origin: { door: 'sendmail' },
    protocol: 'local',
    size: 10,
  });
  const prep = asNobody(
    `const fs=require('fs'),p=require('path');const s=${JSON.stringify(spool)};for(const d of ['','tmp','msg','queue','hold','corrupt'])fs.mkdirSync(p.join(s,d),{recursive:true,mode:0o777});fs.symlinkSync(${JSON.stringify(secret)},p.join(s,'msg',${JSON.stringify(id)}));fs.writeFileSync(p.join(s,'queue',${JSON.stringify(id)}),${JSON.stringify(`${env}\n`)});`,
  );
  assert.equal(await new Promise((r) => prep.on('close', r)), 0);
  const cfg = await makeConfig('', { spool });
  const r = await run(process.execPath, [FERRYMAIL, '--config-dir', cfg.configDir, 'daemon'], { timeoutMs: 10_000 });
  assert.equal(r.code, 78, r.stderr);
  assert.match(r.stderr, /refusing the spool: .* belongs to uid 65534/);
  const s = await sendmail(cfg, ['-i', 'x@example.org'], 'Subject: s\n\nb\n');
  assert.equal(s.code, 78, s.stderr);
  const f = await ferrymail(cfg, ['flush']);
  assert.notEqual(f.code, 0);
  assert.doesNotMatch(f.stdout + f.stderr, /the-secret-hash/);
});

test('a folder writable by others, or a folder replaced by a symlink, makes the spool unusable', { skip }, async () => {
  const cfg = await makeConfig();
  assert.equal((await sendmail(cfg, ['-i', 'x@example.org'], 'Subject: s\n\nb\n')).code, 0);
  fs.chmodSync(path.join(cfg.spool, 'queue'), 0o777);
  const a = await sendmail(cfg, ['-i', 'x@example.org'], 'Subject: s\n\nb\n');
  assert.equal(a.code, 78, a.stderr);
  assert.match(a.stderr, /queue is writable by group or others/);
  fs.chmodSync(path.join(cfg.spool, 'queue'), 0o700);
  fs.renameSync(path.join(cfg.spool, 'msg'), path.join(cfg.dir, 'elsewhere'));
  fs.symlinkSync(path.join(cfg.dir, 'elsewhere'), path.join(cfg.spool, 'msg'));
  const b = await ferrymail(cfg, ['queue', 'list']);
  assert.equal(b.code, 78, b.stderr);
  assert.match(b.stderr, /msg is a symlink/);
});

test('a data file that is a symlink is never read: the message is moved aside, nothing is sent', { skip }, async () => {
  const cfg = await makeConfig();
  assert.equal((await sendmail(cfg, ['-i', 'x@example.org'], 'Subject: s\n\nb\n')).code, 0);
  const [e] = await queueJson(cfg);
  const secret = path.join(tempDir(), 'secret');
  fs.writeFileSync(secret, 'root:the-secret-hash:19000::::::\n', { mode: 0o600 });
  fs.rmSync(path.join(cfg.spool, 'msg', e!.id));
  fs.symlinkSync(secret, path.join(cfg.spool, 'msg', e!.id));
  const show = await ferrymail(cfg, ['queue', 'show', e!.id]);
  assert.doesNotMatch(show.stdout + show.stderr, /the-secret-hash/);
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  const out = path.join(cfg.dir, 'out');
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '10-pipe.yaml'),
    `name: file\nconnections: ["*"]\npermanent: true\ntransport:\n  type: pipe\n  command: [/bin/sh, -c, "cat >> ${out}"]\n`,
  );
  await ferrymail(cfg, ['flush']);
  assert.doesNotMatch(fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '', /the-secret-hash/);
});

test("root's sendmail never trusts a configuration snapshot in a cache folder others can write", { skip }, async () => {
  const cfg = await makeConfig();
  const cache = tempDir();
  // a snapshot made by root's own run, in a private cache
  assert.equal(
    (
      await run(process.execPath, [path.join(ROOT, 'bin', 'sendmail.js'), '-i', 'x@example.org'], {
        input: 'Subject: a\n\nb\n',
        env: { FERRYMAIL_CONFIG_DIR: cfg.configDir, XDG_CACHE_HOME: cache },
      })
    ).code,
    0,
  );
  const [snapName] = fs.readdirSync(path.join(cache, 'ferrymail'));
  const snap = JSON.parse(fs.readFileSync(path.join(cache, 'ferrymail', snapName!), 'utf8'));
  // the attacker's copy, pointing at the attacker's spool, in a cache folder the attacker owns
  const evilCache = tempDir();
  fs.chmodSync(evilCache, 0o777);
  const evilSpool = path.join(evilCache, 'spool');
  snap.config.spool = evilSpool;
  fs.mkdirSync(path.join(evilCache, 'ferrymail'), { mode: 0o777 });
  fs.chmodSync(path.join(evilCache, 'ferrymail'), 0o777);
  fs.writeFileSync(path.join(evilCache, 'ferrymail', snapName!), JSON.stringify(snap), { mode: 0o666 });
  fs.chownSync(path.join(evilCache, 'ferrymail', snapName!), NOBODY, NOBODY);
  fs.chownSync(path.join(evilCache, 'ferrymail'), NOBODY, NOBODY);
  // and symlinks where a temporary file could be made, to a file root owns
  const victim = path.join(tempDir(), 'victim');
  fs.writeFileSync(victim, 'keep me\n');
  for (let pid = process.pid; pid < process.pid + 2000; pid++)
    fs.symlinkSync(victim, path.join(evilCache, 'ferrymail', `${snapName}.${pid}`));
  const before = (await queueJson(cfg)).length;
  const r = await run(process.execPath, [path.join(ROOT, 'bin', 'sendmail.js'), '-i', 'x@example.org'], {
    input: 'Subject: b\n\nb\n',
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir, XDG_CACHE_HOME: evilCache },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(
    await waitUntil(async () => (await queueJson(cfg)).length === before + 1, 2000),
    'the message is in the real spool',
  );
  assert.equal(fs.existsSync(evilSpool), false, 'nothing in the planted spool');
  assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me\n', 'no file written through a symlink');
});

test("root's sendmail never trusts a snapshot, even its own, in a cache whose parent another user owns", {
  skip,
}, async () => {
  const cfg = await makeConfig();
  const theirs = tempDir();
  fs.chmodSync(theirs, 0o755);
  const cache = path.join(theirs, 'cache');
  fs.mkdirSync(cache, { mode: 0o700 });
  // root's run makes the snapshot in a private folder, then the user gets the folder above it
  const first = await run(process.execPath, [path.join(ROOT, 'bin', 'sendmail.js'), '-i', 'x@example.org'], {
    input: 'Subject: a\n\nb\n',
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir, XDG_CACHE_HOME: cache },
  });
  assert.equal(first.code, 0, first.stderr);
  const [snapName] = fs.readdirSync(path.join(cache, 'ferrymail'));
  const file = path.join(cache, 'ferrymail', snapName!);
  const snap = JSON.parse(fs.readFileSync(file, 'utf8'));
  // the user could swap cache/ for a folder of root's own that holds another snapshot: here, the same
  // root-owned files pointing elsewhere, under a parent the user owns
  const evilSpool = path.join(theirs, 'spool');
  snap.config.spool = evilSpool;
  fs.writeFileSync(file, JSON.stringify(snap), { mode: 0o600 });
  fs.chownSync(theirs, NOBODY, NOBODY);
  const before = (await queueJson(cfg)).length;
  const r = await run(process.execPath, [path.join(ROOT, 'bin', 'sendmail.js'), '-i', 'x@example.org'], {
    input: 'Subject: b\n\nb\n',
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir, XDG_CACHE_HOME: cache },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(await waitUntil(async () => (await queueJson(cfg)).length === before + 1, 2000), 'in the real spool');
  assert.equal(fs.existsSync(evilSpool), false, 'nothing in the spool the snapshot named');
});
