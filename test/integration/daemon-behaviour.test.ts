// The daemon on a laptop's day: a state file rewritten by `echo NAME > FILE` is read once written (no
// moment of "offline" that never was); a released message is tried at once, not at the next minute; a
// route whose login is refused is down until its settings change, and the user is told once.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { closeAll, faultServer } from '../support/fault-smtp.js';
import {
  ferrymail,
  makeConfig,
  queueJson,
  sendmail,
  smtpRoute,
  startDaemon,
  tempDir,
  stopDaemon,
  waitUntil,
  writeRoute,
  type RunningDaemon,
} from '../helpers.js';

const daemons: RunningDaemon[] = [];
after(async () => {
  for (const d of daemons) await stopDaemon(d);
  await closeAll();
});

/** The daemon's online state lines. */
const states = (d: RunningDaemon): string[] =>
  d
    .log()
    .split('\n')
    .filter((l) => / online state /.test(l));

test('a state file rewritten with echo NAME > FILE never shows a moment of offline', async () => {
  const cfg = await makeConfig('online:\n  state_file: online');
  const file = path.join(cfg.configDir, 'online');
  fs.writeFileSync(file, 'home\n');
  const d = await startDaemon(cfg);
  daemons.push(d);
  assert.ok(await waitUntil(() => states(d).some((l) => /connection=home/.test(l)), 5000), d.log());
  for (let i = 0; i < 10; i++) {
    const name = i % 2 ? 'home' : 'office';
    spawnSync('sh', ['-c', `echo ${name} > "${file}"`]);
    assert.ok(await waitUntil(() => new RegExp(`connection=${name}`).test(states(d).at(-1) ?? ''), 5000), d.log());
  }
  assert.deepEqual(
    states(d).filter((l) => /state=offline/.test(l)),
    [],
    'never offline',
  );
});

test('a released message is tried at once', async () => {
  const server = await faultServer();
  const cfg = await makeConfig('online:\n  state_file: online');
  fs.writeFileSync(path.join(cfg.configDir, 'online'), 'home\n');
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', server.port));
  const r = await sendmail(cfg, ['-odq', '-i', '-f', 'alice@laptop.local', 'x@example.org'], 'Subject: held\n\nb\n');
  assert.equal(r.code, 0, r.stderr);
  const [e] = await queueJson(cfg);
  assert.equal((await ferrymail(cfg, ['queue', 'hold', e!.id])).code, 0);
  const d = await startDaemon(cfg);
  daemons.push(d);
  await new Promise((res) => setTimeout(res, 1500));
  assert.equal(server.received.length, 0, 'held: not sent');
  const released = Date.now();
  assert.equal((await ferrymail(cfg, ['queue', 'release', e!.id])).code, 0);
  assert.ok(await waitUntil(() => server.received.length === 1, 10_000), d.log());
  assert.ok(Date.now() - released < 10_000);
});

test('a refused login: the route is down until its settings change, and the user is told once', async () => {
  const server = await faultServer({ auth: { mechanisms: ['PLAIN'], user: 'alice', secret: 'right' } });
  const told = path.join(tempDir(), 'told');
  const cfg = await makeConfig(
    `online:\n  state_file: online\nqueue:\n  notify_command: [sh, -c, 'echo "$0" >> ${told}', "\${subject}"]`,
  );
  fs.writeFileSync(path.join(cfg.configDir, 'online'), 'home\n');
  const pw = path.join(cfg.configDir, 'pw');
  fs.writeFileSync(pw, 'wrong\n', { mode: 0o600 });
  const route = (secret: string): string[] =>
    smtpRoute('home', 'home', server.port, { transport: ['tls: none', 'user: alice', `password_file: ${secret}`] });
  writeRoute(cfg, '10-home.yaml', route(pw));
  const d = await startDaemon(cfg, [], { env: { PATH: process.env.PATH } });
  daemons.push(d);
  for (const to of ['a@example.org', 'b@example.org', 'c@example.org'])
    await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', to], 'Subject: s\n\nb\n');
  assert.ok(
    await waitUntil(
      async () =>
        /route down: home .*until its settings change or a manual flush/.test(
          (await ferrymail(cfg, ['status'])).stdout,
        ),
      10_000,
    ),
    d.log(),
  );
  const logins = (): number => server.connections.filter((c) => c.commands.some((x) => x.startsWith('AUTH'))).length;
  const tried = logins();
  // more mail, more runs: the refused login is not tried again
  await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'd@example.org'], 'Subject: s\n\nb\n');
  await new Promise((res) => setTimeout(res, 2000));
  assert.equal(logins(), tried, 'no new login attempt while the settings are the same');
  assert.ok(await waitUntil(() => fs.existsSync(told), 5000));
  assert.equal(fs.readFileSync(told, 'utf8').trim().split('\n').length, 1, 'told once');
  assert.match(fs.readFileSync(told, 'utf8'), /the login to route home was refused/);
  // the right password in a new file: the route's settings changed, mail goes out
  const pw2 = path.join(cfg.configDir, 'pw2');
  fs.writeFileSync(pw2, 'right\n', { mode: 0o600 });
  writeRoute(cfg, '10-home.yaml', route(pw2));
  await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'e@example.org'], 'Subject: s\n\nb\n');
  assert.ok(await waitUntil(() => server.received.some((m) => m.to.includes('e@example.org')), 10_000), d.log());
});
