// Submission with swaks: port 587 style (STARTTLS, then AUTH, before any mail) and port 465 style
// (TLS from the first byte); the right user and sender accepted and recorded, a sender the user does not
// own refused (553), mail before TLS (530) or before AUTH (530), a wrong password, and a rate limit per
// user reached, and a user whose mail keeps being refused suspended until released. Users are managed with `ferrymail auth add|passwd|rm`, the password on stdin.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  freePort,
  makeConfig,
  messageData,
  queueJson,
  run,
  type RunningDaemon,
  startDaemon,
  stopDaemon,
  type TestConfig,
  tempDir,
  waitUntil,
} from '../helpers.js';
import { selfSigned } from '../support/fault-smtp.js';

let cfg: TestConfig;
let d: RunningDaemon;
let sub = 0;
let subs = 0;
const swaksHome = tempDir('ferrymail-swaks-');

before(async () => {
  const dir = tempDir();
  const { certFile: cert, keyFile: key } = await selfSigned('test.example');
  sub = await freePort();
  subs = await freePort();
  const users = path.join(dir, 'users');
  cfg = await makeConfig(
    [
      `submission_listen: ["127.0.0.1:${sub}"]`,
      `submissions_listen: ["127.0.0.1:${subs}"]`,
      `tls: { cert: ${JSON.stringify(cert)}, key: ${JSON.stringify(key)} }`,
      `auth: { users_file: ${JSON.stringify(users)} }`,
      'submission:',
      '  senders:',
      '    - { user: ann, senders: ["ann@example.org", "*@ann.example"] }',
      '    - { user: "*", senders: ["${user}@example.org"] }',
      '  suspend_after: 3',
      '  suspend_window: 1h',
      'hooks:',
      '  - builtin: rate_limit',
      '    options: { user_messages: 3, window: 1h }',
      '',
    ].join('\n'),
  );
  // users made with the tool the administrator uses: the password on stdin, never in argv
  for (const [u, p] of [
    ['ann', 'ann-secret'],
    ['bob', 'first'],
    ['cy', 'cy-secret'],
  ] as const) {
    const a = await ferrymail(cfg, ['auth', 'add', u], `${p}\n`);
    assert.equal(a.code, 0, a.stderr);
  }
  assert.equal((await ferrymail(cfg, ['auth', 'add', 'ann'], 'x\n')).code, 64, 'ann is there already');
  const pw = await ferrymail(cfg, ['auth', 'passwd', 'bob'], 'bob-secret\n');
  assert.equal(pw.code, 0, pw.stderr);
  assert.equal(fs.statSync(users).mode & 0o777, 0o600);
  assert.doesNotMatch(fs.readFileSync(users, 'utf8'), /secret/);
  d = await startDaemon(cfg);
});
after(async () => {
  await stopDaemon(d);
});

/** Runs swaks; its whole dialogue. */
async function swaks(args: string[]): Promise<{ code: number | null; out: string }> {
  const r = await run(
    'swaks',
    [
      '--server',
      '127.0.0.1',
      '--helo',
      'client.example',
      '--timeout',
      '10',
      '--to',
      'friend@remote.example',
      ...args,
      '--config',
    ],
    { env: { SWAKS_HOME: swaksHome }, timeoutMs: 20_000 },
  );
  return { code: r.code, out: r.stdout + r.stderr };
}

const login = (user: string, password: string): string[] => [
  '--auth',
  'PLAIN',
  '--auth-user',
  user,
  '--auth-password',
  password,
];

test('587 with STARTTLS and AUTH: the user sends as an address of theirs; it is recorded in envelope, Received and log', async () => {
  const r = await swaks(['--port', String(sub), '-tls', ...login('ann', 'ann-secret'), '--from', 'ann@example.org']);
  assert.equal(r.code, 0, r.out);
  const id = /<~?\s+250 .*queued as ([0-9A-Z]{16})/.exec(r.out)?.[1];
  assert.ok(id, r.out);
  const q = await queueJson(cfg);
  const m = q.find((x) => x.id === id)!;
  assert.equal(m.origin.user, 'ann');
  const received = messageData(cfg, id).replace(/\r\n\t/g, ' ');
  assert.match(
    received,
    /^Received: from client\.example \(\[127\.0\.0\.1\]\) by test\.example \(ferrymail\) \(Authenticated sender: ann\) \(using TLS/m,
  );
  assert.match(received, /with ESMTPSA id /);
  assert.match(d.log(), /authenticated session=\S+ user=ann/);
  assert.match(d.log(), new RegExp(`<= ${id} .*proto=ESMTPSA .*user=ann`));
});

test('465 with TLS from the first byte; a glob of the user’s senders', async () => {
  const r = await swaks(['--port', String(subs), '-tlsc', ...login('ann', 'ann-secret'), '--from', 'news@ann.example']);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /250 .*queued as /);
});

test('a sender the user does not own is refused with 553 5.7.1; ${user} patterns give each user their own', async () => {
  const r = await swaks(['--port', String(sub), '-tls', ...login('ann', 'ann-secret'), '--from', 'boss@example.org']);
  assert.match(r.out, /<~?\*+ 553 5\.7\.1 Sender address rejected: <boss@example\.org> is not owned by user ann/);
  const bob = await swaks(['--port', String(sub), '-tls', ...login('bob', 'bob-secret'), '--from', 'bob@example.org']);
  assert.equal(bob.code, 0, bob.out);
  const wrong = await swaks([
    '--port',
    String(sub),
    '-tls',
    ...login('bob', 'bob-secret'),
    '--from',
    'ann@example.org',
  ]);
  assert.match(wrong.out, /553 5\.7\.1 /);
});

test('no TLS on 587: AUTH is not offered and MAIL gets 530; no AUTH: 530; a wrong password: 535', async () => {
  const plain = await swaks(['--port', String(sub), '--from', 'ann@example.org', '--quit-after', 'MAIL']);
  assert.match(plain.out, /<~?\*+ 530 5\.7\.0 Must issue a STARTTLS command first/);
  assert.doesNotMatch(plain.out, /250-AUTH/);
  const noAuth = await swaks(['--port', String(sub), '-tls', '--from', 'ann@example.org', '--quit-after', 'MAIL']);
  assert.match(noAuth.out, /<~?\*+ 530 5\.7\.0 .*authentication required/i);
  const bad = await swaks(['--port', String(sub), '-tls', ...login('ann', 'wrong'), '--from', 'ann@example.org']);
  assert.match(bad.out, /<~?\*+ 535 5\.7\.8 Authentication credentials invalid/);
  assert.doesNotMatch(d.log(), /ann-secret|wrong/, 'no password in the log');
});

test('a user past their rate limit gets 451 4.7.1; a removed user can no longer log in', async () => {
  // bob sent one message above; two more fit, the fourth does not
  const replies: string[] = [];
  for (let i = 0; i < 3; i++) {
    const r = await swaks(['--port', String(sub), '-tls', ...login('bob', 'bob-secret'), '--from', 'bob@example.org']);
    replies.push(r.out);
  }
  assert.match(replies[0]!, /250 .*queued as/);
  assert.match(replies[1]!, /250 .*queued as/);
  assert.match(replies[2]!, /<~?\*+ 451 4\.7\.1 Rate limit reached: 3 messages per 1h/);
  const rm = await ferrymail(cfg, ['auth', 'rm', 'bob']);
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /the daemon has reloaded/);
  const gone = await swaks(['--port', String(sub), '-tls', ...login('bob', 'bob-secret'), '--from', 'bob@example.org']);
  assert.match(gone.out, /535 5\.7\.8 /);
});

test('a user refused three times is suspended (550 5.7.1), postmaster is told, and release lets them send again', async () => {
  const send = async (): Promise<string> =>
    (await swaks(['--port', String(sub), '-tls', ...login('cy', 'cy-secret'), '--from', 'cy@example.org'])).out;
  for (let i = 0; i < 3; i++) assert.match(await send(), /250 .*queued as/, 'within the rate limit');
  for (let i = 0; i < 3; i++) assert.match(await send(), /<~?\*+ 451 4\.7\.1 Rate limit reached/, `strike ${i + 1}`);
  assert.match(await send(), /<~?\*+ 550 5\.7\.1 User cy is suspended; ask the postmaster to release it/);
  assert.match(d.log(), /user suspended user=cy reason="3 refusals within 3600 s, the last: rate_limit at mail: 451/);
  const list = await ferrymail(cfg, ['auth', 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  const rows = JSON.parse(list.stdout) as Array<{ user: string; suspended: { reason: string } | null }>;
  assert.match(rows.find((r) => r.user === 'cy')?.suspended?.reason ?? '', /3 refusals/);
  assert.equal(rows.find((r) => r.user === 'ann')?.suspended, null, 'a 553 for a wrong sender is no strike');
  // the notice to postmaster is queued (and delivered by the local route to the test's mbox)
  const notice = await waitUntil(() => /suspension notice queued user=cy to=<postmaster@/.test(d.log()), 10_000);
  assert.ok(notice, d.log());
  const release = await ferrymail(cfg, ['auth', 'release', 'cy']);
  assert.equal(release.code, 0, release.stderr);
  assert.match(
    await send(),
    /<~?\*+ 451 4\.7\.1 Rate limit reached/,
    'released: the rate limit answers again, not the suspension',
  );
  assert.equal((await ferrymail(cfg, ['auth', 'release', 'cy'])).code, 64, 'cy is no longer suspended');
});
