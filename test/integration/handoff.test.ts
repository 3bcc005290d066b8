// A user who may not write the system spool: the sendmail command hands the message to the daemon over
// SMTP on loopback, and says so with exit 75 when no daemon runs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { makeConfig, messageData, queueJson, ROOT, SENDMAIL, startDaemon, type RunningDaemon, type TestConfig } from '../helpers.js';

const NOBODY = 65534;
const root = process.getuid?.() === 0;
let cfg: TestConfig;
let d: RunningDaemon | undefined;

let program: string;

before(async () => {
  if (!root) return;
  cfg = await makeConfig();
  for (const p of [cfg.dir, cfg.configDir]) fs.chmodSync(p, 0o755);
  fs.chmodSync(path.join(cfg.configDir, 'ferrymail.yaml'), 0o644);
  // the unprivileged user may not be able to read the checkout: run a copy of the bundled command
  const app = path.join(cfg.dir, 'app');
  fs.cpSync(path.join(ROOT, 'dist', 'bundle'), path.join(app, 'dist', 'bundle'), { recursive: true });
  fs.mkdirSync(path.join(app, 'bin'));
  fs.copyFileSync(SENDMAIL, path.join(app, 'bin', 'sendmail.js'));
  for (const p of [app, path.join(app, 'bin'), path.join(app, 'dist'), path.join(app, 'dist', 'bundle')]) fs.chmodSync(p, 0o755);
  program = path.join(app, 'bin', 'sendmail.js');
});
after(async () => {
  await d?.stop();
});

/** Runs sendmail as an unprivileged user. */
function sendmailAsNobody(args: string[], input: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [program, ...args], { uid: NOBODY, gid: NOBODY, env: { FERRYMAIL_CONFIG_DIR: cfg.configDir, TMPDIR: '/tmp', HOME: '/tmp' } });
    let stderr = '';
    child.stderr.on('data', (b) => (stderr += b));
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => (clearTimeout(t), resolve({ code, stderr })));
    child.stdin.end(input);
  });
}

test('no daemon: exit 75 with one line, nothing written', { skip: !root && 'needs root to run as another user' }, async () => {
  fs.mkdirSync(cfg.spool, { mode: 0o700 });
  const r = await sendmailAsNobody(['-i', 'x@example.org'], 'Subject: s\n\nbody\n');
  assert.equal(r.code, 75, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /did not take the message/);
});

test('daemon running: the message reaches the system queue through it', { skip: !root && 'needs root to run as another user' }, async () => {
  d = await startDaemon(cfg);
  const r = await sendmailAsNobody(['-i', '-F', 'No Body', 'x@example.org'], 'Subject: handed over\n\nbody\n');
  assert.equal(r.code, 0, r.stderr);
  const q = await queueJson(cfg);
  assert.equal(q.length, 1);
  assert.equal(q[0]!.sender, 'nobody@test.example');
  assert.deepEqual(q[0]!.recipients.map((x: { address: string }) => x.address), ['x@example.org']);
  const data = messageData(cfg, q[0]!.id);
  assert.match(data, /\(uid 65534\)/);
  assert.match(data, /From: No Body <nobody@test\.example>/);
  assert.match(data, /Subject: handed over\r\n/);
});
