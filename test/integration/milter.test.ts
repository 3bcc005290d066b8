// The built-in milter hook against real milters on loopback: a pymilter milter (python3-milter) that
// tempfails a recipient, rejects or quarantines by subject, and makes every change a milter can; OpenDKIM
// signing a submitted message, the signature verified by dkimpy; a milter that is down or hangs.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, test } from 'node:test';
import { dkimVerify, keyRecord } from '../dkimpy.js';
import {
  freePort,
  makeConfig,
  messageData,
  queueJson,
  RawSmtp,
  ROOT,
  startDaemon,
  stopDaemon,
  tempDir,
  waitForPort,
} from '../helpers.js';

const started: ChildProcess[] = [];
after(() => {
  for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
});

/** Starts a server process and waits for its port; it is killed when the tests end. */
async function serve(cmd: string, args: string[], port: number): Promise<ChildProcess> {
  const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(c);
  process.once('exit', () => c.exitCode === null && c.kill('SIGKILL'));
  let out = '';
  c.stdout!.on('data', (d) => (out += d));
  c.stderr!.on('data', (d) => (out += d));
  await waitForPort(port, 15_000).catch((e: Error) => {
    throw new Error(`${cmd}: ${e.message}: ${out}`);
  });
  return c;
}

/** Debian's python3 (pymilter is installed for it, not for another python on the PATH). */
function pythonWithMilter(): string {
  for (const p of ['/usr/bin/python3', 'python3'])
    if (spawnSync(p, ['-c', 'import Milter'], { stdio: 'ignore' }).status === 0) return p;
  throw new Error('no python3 with the Milter module: install python3-milter');
}

/** One SMTP transaction; the replies to RCPT and to the end of DATA. */
async function send(
  port: number,
  from: string,
  rcpts: string[],
  message: string,
): Promise<{ rcpt: string[]; data?: string }> {
  const c = await RawSmtp.connect(port);
  try {
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd(`MAIL FROM:<${from}>`), /^250/);
    const rcpt: string[] = [];
    for (const r of rcpts) rcpt.push(await c.cmd(`RCPT TO:<${r}>`));
    if (!rcpt.some((r) => r.startsWith('250'))) return { rcpt };
    assert.match(await c.cmd('DATA'), /^354/);
    c.send(`${message.replace(/\n/g, '\r\n')}\r\n.\r\n`);
    const data = await c.reply(15_000);
    await c.cmd('QUIT');
    return { rcpt, data };
  } finally {
    c.close();
  }
}

test('a pymilter milter: a recipient tempfailed, a message rejected with its reply, one quarantined, every change applied', async () => {
  const port = await freePort();
  await serve(pythonWithMilter(), [path.join(ROOT, 'test', 'milters', 'changes.py'), String(port)], port);
  const cfg = await makeConfig(
    `hooks:\n  - builtin: milter\n    options: { server: "inet:127.0.0.1:${port}" }\n    timeout: 10s\n`,
  );
  const d = await startDaemon(cfg);
  try {
    const r1 = await send(
      cfg.port,
      'a@remote.example',
      ['tempfail@remote.example', 'b@remote.example'],
      'Subject: reject me\n\nhello',
    );
    assert.match(r1.rcpt[0]!, /^451 4\.7\.1 milter is busy/);
    assert.match(r1.rcpt[1]!, /^250/);
    assert.match(r1.data!, /^550 5\.7\.1 milter says no/);
    const r2 = await send(cfg.port, 'a@remote.example', ['b@remote.example'], 'Subject: quarantine me\n\nhello');
    assert.match(r2.data!, /^250 /);
    const r3 = await send(
      cfg.port,
      'a@remote.example',
      ['b@remote.example', 'gone@remote.example'],
      'Subject: hello\nX-Other: kept\n\nthe original body',
    );
    assert.match(r3.data!, /^250 2\.0\.0 Ok: queued as /, d.log());
    const q = await queueJson(cfg);
    const held = q.filter((m) => m.place === 'hold');
    const queued = q.filter((m) => m.place === 'queue');
    assert.equal(held.length, 1, JSON.stringify(q));
    assert.match(messageData(cfg, held[0]!.id), /^Subject: quarantine me\r$/m);
    assert.match(d.log(), /held: looks suspicious/);
    assert.equal(queued.length, 1);
    const m = queued[0]!;
    assert.equal(m.sender, 'changed@remote.example');
    assert.deepEqual(m.recipients.map((x: Record<string, string>) => x.address).sort(), [
      'b@remote.example',
      'extra@remote.example',
    ]);
    const data = messageData(cfg, m.id);
    assert.match(data, /^Subject: \[milter\] hello\r$/m);
    assert.match(data, /^X-Milter: seen\r$/m);
    assert.match(data, /^X-Other: kept\r$/m);
    assert.match(data, /\r\n\r\nreplaced body\r\n$/);
    assert.doesNotMatch(data, /the original body/);
  } finally {
    await stopDaemon(d);
  }
});

test('OpenDKIM as a milter signs a submitted message; dkimpy verifies the signature', async () => {
  const dir = tempDir('ferrymail-opendkim-');
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyFile = path.join(dir, 'sel.private');
  fs.writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs1' }), { mode: 0o600 });
  const port = await freePort();
  const conf = path.join(dir, 'opendkim.conf');
  fs.writeFileSync(
    conf,
    [
      'Syslog no',
      'Background no',
      'Mode s',
      'Domain example.org',
      'Selector sel',
      `KeyFile ${keyFile}`,
      `Socket inet:${port}@127.0.0.1`,
      'Canonicalization relaxed/simple',
      'InternalHosts 127.0.0.1',
      `PidFile ${path.join(dir, 'opendkim.pid')}`,
      'RequireSafeKeys no',
      '',
    ].join('\n'),
  );
  const bin = ['/usr/sbin/opendkim', 'opendkim'].find((p) => fs.existsSync(p)) ?? 'opendkim';
  await serve(bin, ['-f', '-x', conf], port);
  const cfg = await makeConfig(`hooks:\n  - builtin: milter\n    options: { server: "inet:127.0.0.1:${port}" }\n`);
  const d = await startDaemon(cfg);
  try {
    const r = await send(
      cfg.port,
      'me@example.org',
      ['friend@remote.example'],
      'From: Me <me@example.org>\nTo: friend@remote.example\nSubject: signed by opendkim\nDate: Sat, 05 Dec 2026 12:00:00 +0000\nMessage-ID: <dkim-test@example.org>\n\nA line of body.\nAnother line.',
    );
    assert.match(r.data!, /^250 /, d.log());
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    const data = messageData(cfg, q[0]!.id);
    assert.match(data, /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/simple; d=example\.org;/m);
    const v = await dkimVerify(Buffer.from(data, 'latin1'), 'sel._domainkey.example.org', keyRecord(privateKey));
    assert.ok(v.ok, v.log);
    assert.deepEqual(v.asked, ['sel._domainkey.example.org.']);
  } finally {
    await stopDaemon(d);
  }
});

test('a milter that is down or never answers: tempfail by default, passed over with on_error: accept', async () => {
  const down = await freePort();
  // a server that takes the connection and never says a word
  const silent = net.createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const hangPort = (silent.address() as net.AddressInfo).port;
  try {
    for (const [server, onError, want] of [
      [`inet:127.0.0.1:${down}`, 'tempfail', /^4\d\d /],
      [`inet:127.0.0.1:${down}`, 'accept', /^250/],
      [`inet:127.0.0.1:${hangPort}`, 'tempfail', /^4\d\d /],
    ] as const) {
      const cfg = await makeConfig(
        `hooks:\n  - builtin: milter\n    options: { server: "${server}" }\n    timeout: 1s\n    on_error: ${onError}\n`,
      );
      const d = await startDaemon(cfg);
      try {
        const c = await RawSmtp.connect(cfg.port);
        const greeting = await c.reply(10_000);
        if (onError === 'accept') {
          assert.match(greeting, /^220/);
          assert.match(await c.cmd('EHLO client.example'), want);
          assert.match(await c.cmd('MAIL FROM:<a@remote.example>'), want);
        } else assert.match(greeting, want, `${server} ${d.log()}`);
        c.close();
        assert.match(d.log(), /hook milter .* failed at connect/);
      } finally {
        await stopDaemon(d);
      }
    }
  } finally {
    silent.close();
  }
});
