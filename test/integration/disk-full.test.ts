// A full spool file system: the real daemon on a small tmpfs. Messages that do not fit get 452 4.3.1 (SMTP)
// or exit 75 with one readable line (sendmail), nothing partial stays in tmp/, msg/ or queue/, the daemon
// goes on, and once space is freed the next message is accepted.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { decodeEnvelope } from '../../src/spool/envelope-codec.js';
import {
  makeConfig,
  messageData,
  RawSmtp,
  sendmail,
  smtpSend,
  spoolFiles,
  startDaemon,
  tempDir,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

const TMPFS_SIZE = '2m';

let mnt = '';
let mounted = false;
let skip = '';
let cfg: TestConfig;
let d: RunningDaemon | null = null;
const fillers: string[] = [];

before(async () => {
  if (process.getuid?.() !== 0) {
    skip = 'needs root to mount a tmpfs';
    return;
  }
  mnt = tempDir('ferrymail-diskfull-');
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE},mode=0700`, 'tmpfs', mnt], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (r.status !== 0) {
    skip = `cannot mount a tmpfs: ${(r.stderr || r.error?.message || '').trim()}`;
    return;
  }
  mounted = true;
  // no free-space floor here: these tests are about what a write that meets a full disk leaves behind
  cfg = await makeConfig('limits:\n  spool_minfree: 0', { spool: path.join(mnt, 'spool') });
  d = await startDaemon(cfg);
});

after(async () => {
  await d?.stop();
  if (mounted) {
    if (spawnSync('umount', [mnt], { timeout: 10_000 }).status !== 0)
      spawnSync('umount', ['-l', mnt], { timeout: 10_000 });
  }
  if (mnt) fs.rmSync(mnt, { recursive: true, force: true });
  if (cfg) fs.rmSync(cfg.dir, { recursive: true, force: true });
});

/** Bytes still free on the spool's file system. */
function free(): number {
  const s = fs.statfsSync(mnt);
  return s.bavail * s.bsize;
}

/** Writes a filler file of up to max bytes (less when the disk fills first); returns what fit. */
function fill(max = Infinity): number {
  const file = path.join(mnt, `filler-${fillers.length}`);
  fillers.push(file);
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(4096, 0x66);
  let written = 0;
  try {
    while (written < max) {
      const n = Math.min(chunk.length, max - written);
      try {
        written += fs.writeSync(fd, chunk, 0, n);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw err;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return written;
}

/** Removes every filler file. */
function unfill(): void {
  while (fillers.length) fs.rmSync(fillers.pop()!, { force: true });
}

/** Every queue entry decodes and has its whole data file; no data file without an entry; tmp/ empty. */
function spoolConsistent(known: Set<string>): void {
  const f = spoolFiles(cfg);
  assert.deepEqual(f.tmp, [], 'tmp/ empty');
  assert.deepEqual(f.corrupt, [], 'corrupt/ empty');
  assert.deepEqual(f.msg, f.queue, 'msg/ and queue/ hold the same ids');
  for (const id of f.queue) {
    assert.ok(known.has(id), `${id} was acknowledged`);
    const env = decodeEnvelope(fs.readFileSync(path.join(cfg.spool, 'queue', id), 'utf8'), id);
    assert.equal(fs.statSync(path.join(cfg.spool, 'msg', id)).size, env.size, `${id} data complete`);
  }
}

/** A message of about size bytes whose body ends with a token line. */
function message(size: number, token: string): string {
  const line = `${'d'.repeat(76)}\r\n`;
  return `Subject: ${token}\r\n\r\n${line.repeat(Math.max(1, Math.ceil(size / line.length)))}${token}\r\n`;
}

const acked = new Set<string>();

test('an SMTP message bigger than the free space gets 452 4.3.1; nothing is left and the session goes on', async (t) => {
  if (skip) return t.skip(skip);
  const c = await RawSmtp.connect(cfg.port);
  try {
    assert.match(await c.reply(), /^220 /);
    assert.match(await c.cmd('EHLO client.example'), /^250[ -]/);
    assert.match(await c.cmd('MAIL FROM:<a@client.example>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<b@example.org>'), /^250 /);
    assert.match(await c.cmd('DATA'), /^354/);
    c.send(`${message(free() + 256 * 1024, 'too-big')}.\r\n`);
    assert.match(await c.reply(20_000), /^452 4\.3\.1 /);
    spoolConsistent(acked);
    // same session, a small message fits
    assert.match(await c.cmd('MAIL FROM:<a@client.example>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<b@example.org>'), /^250 /);
    assert.match(await c.cmd('DATA'), /^354/);
    const token = crypto.randomUUID();
    const reply = await c.cmd(`${message(1000, token)}.`);
    const id = /^250 2\.0\.0 .*queued as ([0-9A-Z]+)/.exec(reply)?.[1];
    assert.ok(id, reply);
    acked.add(id);
    assert.ok(messageData(cfg, id).endsWith(`${token}\r\n`));
  } finally {
    c.close();
  }
  spoolConsistent(acked);
});

test('filling the disk: each message is either whole with 250 or refused with 452 4.3.1 leaving nothing', async (t) => {
  if (skip) return t.skip(skip);
  fill(Math.max(0, free() - 96 * 1024));
  let refused = 0;
  let accepted = 0;
  // decreasing sizes walk across the point where data, then the envelope, no longer fit
  for (const size of [128, 80, 48, 32, 24, 16, 12, 8, 6, 5, 4, 3, 2, 2, 1, 1, 1, 1].map((k) => k * 1024)) {
    const token = crypto.randomUUID();
    const r = await smtpSend(cfg.port, { data: message(size, token) });
    if (r.id) {
      accepted++;
      acked.add(r.id);
      assert.ok(messageData(cfg, r.id).endsWith(`${token}\r\n`), `${r.id} whole`);
    } else {
      refused++;
      assert.match(r.reply, /^452 4\.3\.1 /, `${size} bytes`);
    }
    spoolConsistent(acked);
  }
  t.diagnostic(`${accepted} accepted, ${refused} refused; ${free()} bytes free`);
  assert.ok(refused > 0, 'some did not fit');
  // completely full: even the smallest message is refused
  fill();
  const r = await smtpSend(cfg.port, { data: 'Subject: tiny\r\n\r\nx\r\n' });
  assert.match(r.reply, /^452 4\.3\.1 /);
  spoolConsistent(acked);
});

test('one free page: the data fits but the envelope does not, and the commit is rolled back', async (t) => {
  if (skip) return t.skip(skip);
  // the data file's name may need a new block of msg/ first, which takes the free page before the data
  // can: that attempt fails at the write, leaves the block in place, and the next one gets to the commit
  const reasons: string[] = [];
  for (let attempt = 0; attempt < 4 && !reasons.some((r) => /commit/.test(r)); attempt++) {
    fill();
    const page = fs.statfsSync(mnt).bsize;
    const victim = fillers.find((f) => fs.statSync(f).size >= page);
    assert.ok(victim, 'a filler file to shorten');
    fs.truncateSync(victim, fs.statSync(victim).size - page);
    assert.ok(free() > 0 && free() <= 2 * page, `about one page free (${free()})`);
    const r = await smtpSend(cfg.port, { data: message(1000, `one-page-${attempt}`) });
    assert.match(r.reply, /^452 4\.3\.1 /);
    reasons.push(
      d!
        .log()
        .split('\n')
        .filter((l) => l.includes('message not stored'))
        .at(-1) ?? '',
    );
    spoolConsistent(acked);
  }
  t.diagnostic(reasons.join('\n'));
  assert.ok(
    reasons.some((r) => /commit/.test(r)),
    'the failure came at the commit, after the data was written',
  );
  fill();
});

test('sendmail on a full disk exits 75 with one readable line on stderr and leaves nothing', async (t) => {
  if (skip) return t.skip(skip);
  fill();
  const r = await sendmail(cfg, ['-i', 'b@example.org'], 'Subject: full\n\nno room\n');
  assert.equal(r.code, 75, r.stderr);
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^sendmail: .*(full|space|storage)/i);
  assert.ok(lines[0]!.length < 200 && !/\bat \S+:\d+/.test(lines[0]!), 'a readable line, not a stack trace');
  spoolConsistent(acked);
  // some room, but less than the message needs
  unfill();
  fill(Math.max(0, free() - 64 * 1024));
  const big = await sendmail(cfg, ['-i', 'b@example.org'], message(256 * 1024, 'big').replace(/\r\n/g, '\n'));
  assert.equal(big.code, 75, big.stderr);
  assert.equal(big.stderr.split('\n').filter(Boolean).length, 1, big.stderr);
  spoolConsistent(acked);
});

test('once space is freed the next message is accepted, by SMTP and by sendmail', async (t) => {
  if (skip) return t.skip(skip);
  unfill();
  assert.equal(d!.child.exitCode, null, 'daemon still running');
  const token = crypto.randomUUID();
  const r = await smtpSend(cfg.port, { data: message(64 * 1024, token) });
  assert.match(r.reply, /^250 2\.0\.0 /);
  acked.add(r.id!);
  assert.ok(messageData(cfg, r.id!).endsWith(`${token}\r\n`));
  const before = new Set(spoolFiles(cfg).queue);
  const token2 = crypto.randomUUID();
  const s = await sendmail(cfg, ['-i', 'b@example.org'], `Subject: after\n\n${token2}\n`);
  assert.equal(s.code, 0, s.stderr);
  const added = spoolFiles(cfg).queue.filter((id) => !before.has(id));
  assert.equal(added.length, 1);
  acked.add(added[0]!);
  assert.ok(messageData(cfg, added[0]!).endsWith(`${token2}\r\n`));
  spoolConsistent(acked);
});
