// A full disk on the delivery side: the spool's file system fills up while a message is being delivered,
// so the envelope cannot be updated after the server's final reply. The outcome must not be lost and
// the recipient must not get the message again at every run: the reserve file gives the update room;
// without it, the daemon keeps the outcome in memory and writes it once there is room; a run that ends
// first leaves the in-flight journal, and the next run holds the recipient as uncertain. Also: with
// limits.spool_minfree, new mail is refused before the disk is that full. Needs root for a tmpfs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { closeAll, faultServer, type FaultServer } from '../support/fault-smtp.js';
import {
  ferrymail,
  makeConfig,
  queueJson,
  sendmail,
  smtpRoute,
  smtpSend,
  spoolFiles,
  startDaemon,
  stopDaemon,
  tempDir,
  waitUntil,
  writeRoute,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

let mnt = '';
let skip: string | false = false;
const fillers: string[] = [];
/** Fill the disk when the server sees the dot (set per test). */
let fillAtDot = false;
let server: FaultServer;

before(async () => {
  if (process.getuid?.() !== 0) {
    skip = 'needs root to mount a tmpfs';
    return;
  }
  mnt = tempDir('ferrymail-fulldelivery-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0700', 'tmpfs', mnt], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0) skip = `cannot mount a tmpfs: ${r.stderr.trim()}`;
  server = await faultServer({
    hook: (step, arg) => {
      // a second recipient that must wait, so that the envelope has to be rewritten after the attempt
      if (step === 'rcpt' && arg.startsWith('later')) return '451 4.3.0 try again later';
      if (step === 'dot' && fillAtDot) {
        fillAtDot = false;
        fill();
      }
      return undefined;
    },
  });
});

after(async () => {
  await closeAll();
  if (mnt && !skip && spawnSync('umount', [mnt], { timeout: 10_000 }).status !== 0)
    spawnSync('umount', ['-l', mnt], { timeout: 10_000 });
});

/** Fills the tmpfs completely. */
function fill(): void {
  const file = path.join(mnt, `filler-${fillers.length}`);
  fillers.push(file);
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(65_536, 0x66);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    fs.closeSync(fd);
  }
  // the last pages too, in small writes
  const fd2 = fs.openSync(file, 'a');
  try {
    for (;;) fs.writeSync(fd2, Buffer.alloc(512, 0x66));
  } catch {
    /* full */
  } finally {
    fs.closeSync(fd2);
  }
}

/** Fills the tmpfs until about `bytes` are left (too little for the reserve file to be made). */
function fillLeaving(bytes: number): void {
  const s = fs.statfsSync(mnt);
  const file = path.join(mnt, `filler-${fillers.length}`);
  fillers.push(file);
  fs.writeFileSync(file, Buffer.alloc(Math.max(0, s.bavail * s.bsize - bytes), 0x66));
}

/** Removes every filler file. */
function unfill(): void {
  while (fillers.length) fs.rmSync(fillers.pop()!, { force: true });
}

/** A configuration whose spool is on the tmpfs, with one route to the fault server. */
async function setup(name: string, extra = ''): Promise<TestConfig> {
  const cfg = await makeConfig(`limits:\n  spool_minfree: 0\n${extra}`, { spool: path.join(mnt, name) });
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', server.port, { more: ['uncertain: hold'] }));
  return cfg;
}

/** Queues one message by the sendmail command to `to` and to a recipient the server defers. */
async function queueOne(cfg: TestConfig, to: string): Promise<void> {
  const r = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', to, `later-${to}`], `Subject: ${to}\n\nbody\n`);
  assert.equal(r.code, 0, r.stderr);
}

/** How many copies the server got for an address. */
const copies = (to: string): number => server.received.filter((m) => m.to.includes(to)).length;

test('the disk fills during delivery: the reserve takes the outcome, the message is delivered once and leaves', async (t) => {
  if (skip) return t.skip(skip);
  const cfg = await setup('reserve');
  await queueOne(cfg, 'one@example.org');
  // a first (empty-handed) run makes the reserve
  fillAtDot = true;
  const r = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(copies('one@example.org'), 1);
  const [e] = await queueJson(cfg);
  assert.deepEqual(
    e!.recipients.map((x: { state: string }) => x.state),
    ['delivered', 'deferred'],
    'the outcome was written',
  );
  assert.deepEqual(spoolFiles(cfg).tmp, [], 'no half-written update left in tmp/');
  await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(copies('one@example.org'), 1, 'never sent again');
  unfill();
});

test('no reserve, the daemon running: the outcome waits in memory, no copy is sent again, and it is written once there is room', async (t) => {
  if (skip) return t.skip(skip);
  const cfg = await setup('memory', 'online:\n  state_file: online');
  fs.writeFileSync(path.join(cfg.configDir, 'online'), '\n'); // offline: the daemon runs nothing on its own yet
  const d: RunningDaemon = await startDaemon(cfg);
  try {
    await queueOne(cfg, 'two@example.org');
    await queueOne(cfg, 'three@example.org');
    fs.rmSync(path.join(cfg.spool, 'reserve'), { force: true });
    fillLeaving(1024 * 1024);
    fillAtDot = true;
    const r = await ferrymail(cfg, ['flush', '--connection', 'home']); // runs inside the daemon
    assert.equal(r.code, 0, r.stderr);
    assert.ok(
      await waitUntil(() => /outcome kept in memory: the envelope cannot be written now/.test(d.log()), 5000),
      d.log(),
    );
    const sent = copies('two@example.org') + copies('three@example.org');
    assert.ok(sent >= 1, 'the server got what was sent before the disk filled');
    assert.ok(
      !spoolFiles(cfg).tmp.some((f) => f.endsWith('.upd')),
      `no empty update files: ${spoolFiles(cfg).tmp.join(', ')}`,
    );
    // more runs while the disk is full send nothing again
    for (let i = 0; i < 3; i++) await ferrymail(cfg, ['flush', '--connection', 'home']);
    assert.equal(
      copies('two@example.org') + copies('three@example.org'),
      sent,
      'no second copy while the outcome waits',
    );
    unfill();
    await ferrymail(cfg, ['flush', '--connection', 'home']);
    assert.equal(copies('two@example.org'), 1);
    assert.equal(copies('three@example.org'), 1);
    for (const e of await queueJson(cfg))
      assert.deepEqual(
        e.recipients.map((x: { state: string }) => x.state),
        ['delivered', 'deferred'],
      );
    assert.match(d.log(), /outcome kept in memory is now written/);
  } finally {
    await stopDaemon(d);
    unfill();
  }
});

test('no reserve and the run ends before there is room: the next run holds the recipient as uncertain instead of sending it again', async (t) => {
  if (skip) return t.skip(skip);
  const cfg = await setup('journal');
  await queueOne(cfg, 'four@example.org');
  fs.rmSync(path.join(cfg.spool, 'reserve'), { force: true });
  fillLeaving(1024 * 1024);
  fillAtDot = true;
  const r = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.match(r.stderr, /outcome kept in memory/);
  assert.ok(!fs.existsSync(path.join(cfg.spool, 'reserve')), 'there was no reserve to use');
  unfill();
  const again = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(copies('four@example.org'), 1, 'not sent twice');
  const [e] = await queueJson(cfg);
  assert.equal(e!.recipients[0].state, 'uncertain');
  assert.equal(
    e!.recipients[1].state,
    'uncertain',
    'the deferred one was in flight too: it may have been taken after all',
  );
});

test('limits.spool_minfree: new mail is refused (452 4.3.1, sendmail 75) before the disk is that full', async (t) => {
  if (skip) return t.skip(skip);
  const cfg = await makeConfig('limits:\n  spool_minfree: 104857600', { spool: path.join(mnt, 'minfree') });
  const d = await startDaemon(cfg);
  try {
    const r = await smtpSend(cfg.port, {});
    assert.match(r.reply, /^452 4\.3\.1 /);
    const s = await sendmail(cfg, ['-i', 'x@example.org'], 'Subject: s\n\nb\n');
    assert.equal(s.code, 75, s.stderr);
    assert.match(s.stderr, /spool_minfree/);
    assert.deepEqual(spoolFiles(cfg).queue, []);
  } finally {
    await stopDaemon(d);
  }
});
