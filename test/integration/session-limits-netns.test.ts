// Session slots, the session time limit and the minimum data rate, against the real daemon, with
// clients that are really not trusted. Every loopback address is trusted, so the daemon runs inside a
// network namespace this test creates (test/support/netns.ts), listening on its loopback and on one end of a veth
// pair (10.78.0.1); the other end (10.78.0.2) is in a second namespace. A small forwarder in
// each namespace takes connections on a unix socket in a temporary directory and opens one TCP connection
// per client: from the client namespace to 10.78.0.1 (a client outside loopback and local_nets), and inside
// the daemon's to 127.0.0.1 (a trusted one). Both namespaces are removed afterwards. Skipped (with the
// reason) when not root or when no namespace or veth pair can be made.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  localKept,
  makeConfig,
  RawSmtp,
  spoolFiles,
  startDaemon,
  stopDaemon,
  tempDir,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';
import { forwarder, namespacePair } from '../support/netns.js';

const SERVER_IP = '10.78.0.1';
const CLIENT_IP = '10.78.0.2';
const PORT = 2525;
/** Small limits, so that the cases stay quick: 3 of 5 sessions for remote clients, 10 s per session,
 * DATA deadline 3 s plus a second per 1000 bytes. */
const LIMITS = { connections: 5, reserved_local: 2, session_time: 10, min_data_rate: 1000, idle_timeout: 3 };

const pair = namespacePair('slots', SERVER_IP, CLIENT_IP);
const { skip } = pair;
const sockets = tempDir('ferrymail-slots-');
const REMOTE = path.join(sockets, 'remote.sock');
const LOCAL = path.join(sockets, 'local.sock');
const forwarders: ChildProcess[] = [];
let d: RunningDaemon | undefined;
let cfg: TestConfig;

before(async () => {
  if (skip) return;
  // the messages stay queued (local delivery deferred): the test counts what the door stored
  cfg = await makeConfig(
    'limits:\n' +
      Object.entries(LIMITS)
        .map(([k, v]) => `  ${k}: ${v}\n`)
        .join('') +
      localKept(tempDir()),
    { port: PORT },
  );
  // listen on the namespace's loopback and on its veth address
  const file = path.join(cfg.configDir, 'ferrymail.yaml');
  fs.writeFileSync(
    file,
    fs.readFileSync(file, 'utf8').replace(/^listen: .*$/m, `listen: ["127.0.0.1:${PORT}", "${SERVER_IP}:${PORT}"]`),
  );
  d = await startDaemon(cfg, [], { netns: pair.daemon });
  forwarders.push(await forwarder(pair.client, REMOTE, SERVER_IP, PORT));
  forwarders.push(await forwarder(pair.daemon, LOCAL, '127.0.0.1', PORT));
});

after(async () => {
  await stopDaemon(d);
  for (const f of forwarders) f.kill('SIGKILL');
  pair.remove();
});

/** Every client connection a test opened; closed at its end. */
const opened = new Set<RawSmtp>();

/** Opens a session as a remote (untrusted) or local (trusted, loopback) client; resolves with it and
 * its first reply. */
async function open(kind: 'remote' | 'local'): Promise<[RawSmtp, string]> {
  const c = await RawSmtp.connectPath(kind === 'remote' ? REMOTE : LOCAL);
  opened.add(c);
  return [c, await c.reply(5000).catch((e: Error) => `no reply: ${e.message}`)];
}

/** A greeted session that said EHLO; retried while the daemon still counts sessions that just closed. */
async function session(kind: 'remote' | 'local'): Promise<RawSmtp> {
  let c: RawSmtp | undefined;
  const ok = await waitUntil(
    async () => {
      const [s, r] = await open(kind);
      if (r.startsWith('220')) c = s;
      else s.close();
      return !!c;
    },
    // slots of earlier sessions are given back when the daemon sees them close: slower on a busy machine
    30_000,
    100,
  );
  assert.ok(ok && c, `no ${kind} session`);
  assert.match(await c.cmd('EHLO client.example'), /^250[ -]/);
  return c;
}

function closeAll(): void {
  for (const c of opened) c.close();
  opened.clear();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('remote clients leave limits.reserved_local sessions to local ones; local ones may use every slot', {
  skip: skip ?? false,
}, async () => {
  try {
    const remote: RawSmtp[] = [];
    for (let i = 0; i < LIMITS.connections - LIMITS.reserved_local; i++) {
      const [c, r] = await open('remote');
      assert.match(r, /^220 /);
      remote.push(c);
    }
    const [refused, r] = await open('remote');
    assert.match(r, /^421 4\.7\.0 test\.example Too many connections, try again later/);
    await refused.waitClose(5000);
    const local: RawSmtp[] = [];
    for (let i = 0; i < LIMITS.reserved_local; i++) {
      const [c, g] = await open('local');
      assert.match(g, /^220 /, 'a local client gets a reserved session');
      local.push(c);
    }
    const [, full] = await open('local');
    assert.match(full, /^421 4\.7\.0 .*Too many connections/, 'limits.connections applies to local clients too');
    // a remote session ends: the place can be taken by a local client, not by a remote one
    remote.shift()!.close();
    const freed = await waitUntil(
      async () => {
        const [c, g] = await open('local');
        if (g.startsWith('220')) local.push(c);
        return g.startsWith('220');
      },
      5000,
      50,
    );
    assert.ok(freed, 'a local client gets the freed session');
    assert.match((await open('remote'))[1], /^421 4\.7\.0 /, 'all but the reserved sessions are in use');
    // with the local clients gone, remote clients are served again
    for (const c of local) c.close();
    assert.ok(await waitUntil(async () => (await open('remote'))[1].startsWith('220'), 5000, 50));
  } finally {
    closeAll();
  }
});

test('session_time and min_data_rate end remote sessions; a message in DATA finishes first; local clients are exempt', {
  skip: skip ?? false,
}, async () => {
  try {
    const before = new Set(spoolFiles(cfg).msg);
    const t0 = Date.now();
    const body = (n: number, marker: string): string =>
      Array.from({ length: n }, () => `${marker} ${'x'.repeat(60)}\r\n`).join('');

    /** A remote session that only sends NOOP once a second: 421 at the session time limit. */
    const idleRemote = async (): Promise<void> => {
      const c = await session('remote');
      const start = Date.now();
      let last = '';
      for (let i = 0; i < 25 && !/^421/.test(last); i++) {
        last = await c.cmd('NOOP').catch((e: Error) => e.message);
        if (!/^421/.test(last)) await sleep(1000);
      }
      assert.match(last, /^421 4\.4\.2 test\.example Session time limit exceeded, closing connection/);
      await c.waitClose(5000);
      assert.ok(Date.now() - start >= 5000, 'not before the session time limit');
    };

    /** A remote session whose message is still arriving, at a good rate, when its time is up. */
    const dataRemote = async (): Promise<string> => {
      const c = await session('remote');
      assert.match(await c.cmd('MAIL FROM:<in-time@client.example>'), /^250 /);
      assert.match(await c.cmd('RCPT TO:<root@test.example>'), /^250 /);
      while (Date.now() < t0 + 7000) {
        assert.match(await c.cmd('NOOP'), /^250 /);
        await sleep(1000);
      }
      assert.match(await c.cmd('DATA'), /^354 /);
      c.send('Subject: in time\r\n\r\n');
      // about 3 KB/s, across the end of the session's time
      while (Date.now() < t0 + LIMITS.session_time * 1000 + 3000) {
        c.send(body(24, 'in-time'));
        await sleep(500);
      }
      c.send('.\r\n');
      const reply = await c.reply(10_000);
      assert.match(reply, /^250 2\.0\.0 Ok: queued as /);
      assert.match(
        await c.reply(5000),
        /^421 4\.4\.2 test\.example Session time limit exceeded/,
        'the 421 follows the reply',
      );
      await c.waitClose(5000);
      return /queued as (\S+)/.exec(reply)![1]!;
    };

    /** A remote session that sends its message at 100 bytes/s: 421 at the DATA deadline, nothing kept. */
    const slowRemote = async (): Promise<void> => {
      const c = await session('remote');
      assert.match(await c.cmd('MAIL FROM:<too-slow@client.example>'), /^250 /);
      assert.match(await c.cmd('RCPT TO:<root@test.example>'), /^250 /);
      assert.match(await c.cmd('DATA'), /^354 /);
      const start = Date.now();
      c.send('Subject: too slow\r\n\r\n');
      let reply = '';
      void c.reply(15_000).then(
        (r) => (reply = r),
        (e: Error) => (reply = e.message),
      );
      while (!reply && Date.now() - start < 15_000) {
        c.send(`too-slow ${'y'.repeat(39)}\r\n`);
        await sleep(500);
      }
      assert.match(reply, /^421 4\.4\.2 test\.example Data rate too low, closing connection/);
      await c.waitClose(5000);
      assert.ok(
        Date.now() - start < LIMITS.session_time * 1000,
        'ended by the data rate, before the session time limit',
      );
    };

    /** A local session, as slow as slowRemote and longer than the session time: served. */
    const slowLocal = async (): Promise<string> => {
      const c = await session('local');
      assert.match(await c.cmd('MAIL FROM:<local@client.example>'), /^250 /);
      assert.match(await c.cmd('RCPT TO:<root@test.example>'), /^250 /);
      assert.match(await c.cmd('DATA'), /^354 /);
      c.send('Subject: slow but local\r\n\r\n');
      while (Date.now() < t0 + LIMITS.session_time * 1000 + 2000) {
        c.send(`local ${'z'.repeat(42)}\r\n`);
        await sleep(500);
      }
      c.send('.\r\n');
      const reply = await c.reply(10_000);
      assert.match(reply, /^250 2\.0\.0 Ok: queued as /);
      assert.match(await c.cmd('NOOP'), /^250 /, 'the session goes on');
      return /queued as (\S+)/.exec(reply)![1]!;
    };

    const [, inTime, , local] = await Promise.all([idleRemote(), dataRemote(), slowRemote(), slowLocal()]);
    // the message cut off is gone; the two finished ones are stored
    assert.ok(
      await waitUntil(() => spoolFiles(cfg).tmp.length === 0, 5000),
      `left in tmp/: ${spoolFiles(cfg).tmp.join(' ')}`,
    );
    const added = spoolFiles(cfg).msg.filter((f) => !before.has(f));
    assert.deepEqual(added.sort(), [inTime, local].sort());
    for (const f of added) assert.doesNotMatch(fs.readFileSync(path.join(cfg.spool, 'msg', f), 'latin1'), /too-slow/);
    const log = d!.log();
    assert.match(log, /session time limit reached .*peer=10\.78\.0\.2/);
    assert.match(log, /data rate too low .*peer=10\.78\.0\.2 bytes=\d+/);
    assert.doesNotMatch(log, /(session time limit reached|data rate too low) .*peer=127\./);
  } finally {
    closeAll();
  }
});
