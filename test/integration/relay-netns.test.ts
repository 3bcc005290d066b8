// Relay domains and a backup MX, against the real daemon with a client that is really not trusted: the
// daemon runs in a network namespace of this test's own and the client comes over a veth pair from a
// second one (test/support/netns.ts). The address map grants relay for relay.example, and for
// backup.example only while its primary (a server greeting 220 from the client's namespace) does not
// answer. Skipped (with the reason) when not root or when no namespace can be made.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  makeConfig,
  queueJson,
  RawSmtp,
  startDaemon,
  stopDaemon,
  tempDir,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';
import { forwarder, inNamespace, namespacePair } from '../support/netns.js';

const SERVER_IP = '10.79.0.1';
const CLIENT_IP = '10.79.0.2';
const PORT = 2525;
const PRIMARY_PORT = 2526;

const pair = namespacePair('relay', SERVER_IP, CLIENT_IP);
const { skip } = pair;
const sockets = tempDir('ferrymail-relay-');
const REMOTE = path.join(sockets, 'remote.sock');
const helpers: ChildProcess[] = [];
let primary: ChildProcess | undefined;
let d: RunningDaemon | undefined;
let cfg: TestConfig;

/** The primary of backup.example: greets with 220 on CLIENT_IP:PRIMARY_PORT, says nothing more. */
async function startPrimary(): Promise<void> {
  primary = await inNamespace(
    pair.client,
    `import net from 'node:net';
     net.createServer((s) => { s.on('error', () => undefined); s.end('220 primary.backup.example ESMTP\\r\\n'); })
       .listen(${PRIMARY_PORT}, ${JSON.stringify(CLIENT_IP)}, () => process.stdout.write('ready\\n'));`,
  );
}

before(async () => {
  if (skip) return;
  const dir = tempDir();
  const map = path.join(dir, 'access.map');
  fs.writeFileSync(map, `relay.example relay\nbackup.example backup_mx ${CLIENT_IP}:${PRIMARY_PORT}\n`);
  cfg = await makeConfig(
    `hooks:\n  - builtin: address_map\n    options: { file: ${JSON.stringify(map)}, probe_cache: 1s, probe_timeout: 2s }\n`,
    { port: PORT },
  );
  const file = path.join(cfg.configDir, 'ferrymail.yaml');
  fs.writeFileSync(
    file,
    fs.readFileSync(file, 'utf8').replace(/^listen: .*$/m, `listen: ["127.0.0.1:${PORT}", "${SERVER_IP}:${PORT}"]`),
  );
  d = await startDaemon(cfg, [], { netns: pair.daemon });
  helpers.push(await forwarder(pair.client, REMOTE, SERVER_IP, PORT));
});

after(async () => {
  await stopDaemon(d);
  for (const h of [...helpers, primary]) h?.kill('SIGKILL');
  pair.remove();
});

/** A session from the untrusted client, greeted and past EHLO and MAIL. */
async function remote(): Promise<RawSmtp> {
  const c = await RawSmtp.connectPath(REMOTE);
  assert.match(await c.reply(5000), /^220 /);
  assert.match(await c.cmd('EHLO client.example'), /^250[ -]/);
  assert.match(await c.cmd('MAIL FROM:<someone@elsewhere.example>'), /^250 /);
  return c;
}

test('a relay domain is taken from any client; other domains are still refused', { skip: skip ?? false }, async () => {
  const c = await remote();
  try {
    assert.match(await c.cmd('RCPT TO:<other@nowhere.example>'), /^554 5\.7\.1 Relay access denied/);
    assert.match(await c.cmd('RCPT TO:<ann@relay.example>'), /^250 /);
    assert.match(await c.cmd('DATA'), /^354 /);
    assert.match(await c.cmd('Subject: relayed\r\n\r\nhello\r\n.'), /^250 /);
  } finally {
    c.close();
  }
  const q = await queueJson(cfg);
  assert.deepEqual(
    q.map((m) => m.recipients.map((r: { address: string }) => r.address)),
    [['ann@relay.example']],
    'the relayed message waits for its route',
  );
});

test('a backup MX defers while the primary answers and takes the mail while it is down', {
  skip: skip ?? false,
}, async () => {
  await startPrimary();
  let c = await remote();
  try {
    assert.match(
      await c.cmd('RCPT TO:<bob@backup.example>'),
      new RegExp(`^451 4\\.7\\.1 The primary server ${CLIENT_IP}:${PRIMARY_PORT} of backup\\.example answers`),
    );
  } finally {
    c.close();
  }
  primary!.kill('SIGKILL');
  // the primary's last answer is kept for a second
  let reply = '';
  assert.ok(
    await waitUntil(
      async () => {
        c = await remote();
        reply = await c.cmd('RCPT TO:<bob@backup.example>');
        if (!reply.startsWith('250')) c.close();
        return reply.startsWith('250');
      },
      10_000,
      300,
    ),
    `still refused once the primary was down: ${reply}`,
  );
  try {
    assert.match(await c.cmd('DATA'), /^354 /);
    assert.match(await c.cmd('Subject: for the backup\r\n\r\nhello\r\n.'), /^250 /);
  } finally {
    c.close();
  }
  const q = await queueJson(cfg);
  assert.ok(
    q.some((m) => m.recipients.some((r: { address: string }) => r.address === 'bob@backup.example')),
    'queued for the primary',
  );
});
