// ferrymail doctor against a real setup: a route to a recording sink and one to a port where nothing
// listens, the daemon running, then a spool made readable by others (a failure: exit 69). Also: online
// --json carries the system's own facts, and only the commands that print them load systeminformation.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  freePort,
  makeConfig,
  smtpRoute,
  startDaemon,
  stopDaemon,
  writeRoute,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';
import { type Sink, startSink } from '../support/sink.js';

let cfg: TestConfig;
let d: RunningDaemon | undefined;
let sink: Sink;

before(async () => {
  sink = await startSink();
  cfg = await makeConfig('online:\n  state_file: online');
  fs.writeFileSync(path.join(cfg.configDir, 'online'), 'home\n');
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', sink.port));
  writeRoute(cfg, '20-dead.yaml', smtpRoute('dead', 'home', await freePort()));
  d = await startDaemon(cfg);
});
after(async () => {
  await stopDaemon(d);
  await sink.close();
});

type Finding = { check: string; level: string; text: string; fix?: string };

test('doctor: each part checked, a route that cannot be reached is a warning with what to do', async () => {
  const r = await ferrymail(cfg, ['doctor', '--json']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const f = JSON.parse(r.stdout) as Finding[];
  const by = (check: string): Finding | undefined => f.find((x) => x.check === check);
  assert.equal(by('configuration')?.level, 'ok');
  assert.match(by('routes')?.text ?? '', /home, dead/);
  assert.equal(by('spool')?.level, 'ok');
  assert.match(by('daemon')?.text ?? '', /^running, pid \d+, listening on 127\.0\.0\.1:/);
  assert.match(by('online')?.text ?? '', /online, connection home/);
  assert.equal(by('route home')?.level, 'ok', JSON.stringify(by('route home')));
  assert.equal(by('route dead')?.level, 'warn');
  assert.match(by('route dead')?.fix ?? '', /ferrymail route test dead/);
  const text = await ferrymail(cfg, ['doctor']);
  assert.match(text.stdout, /^OK {4}configuration: /m);
  assert.match(text.stdout, /^WARN {2}route dead: .*\n {6}-> ferrymail route test dead/m);
});

test('doctor: a spool others may read is a failure (exit 69) with the command that fixes it', async () => {
  const queue = path.join(cfg.spool, 'queue');
  fs.chmodSync(queue, 0o755);
  try {
    const r = await ferrymail(cfg, ['doctor']);
    assert.equal(r.code, 69);
    assert.match(r.stdout, /^FAIL {2}spool: queue in .* may be read by others\n {6}-> chmod 700 .*queue/m);
  } finally {
    fs.chmodSync(queue, 0o700);
  }
});

test('doctor checks the configuration as the daemon would: a TLS key it cannot read fails (exit 78)', async () => {
  const file = path.join(cfg.configDir, 'ferrymail.yaml');
  const text = fs.readFileSync(file, 'utf8');
  const missing = path.join(cfg.configDir, 'missing');
  fs.writeFileSync(file, `${text}tls:\n  cert: ${missing}.crt\n  key: ${missing}.key\n`);
  try {
    // the quick load of the other commands (sendmail's snapshot) does not read the server's key
    assert.equal((await ferrymail(cfg, ['config', 'path'])).code, 0);
    const r = await ferrymail(cfg, ['doctor']);
    assert.equal(r.code, 78, r.stdout + r.stderr);
    assert.match(r.stderr, /cannot read .*missing\.crt/);
  } finally {
    fs.writeFileSync(file, text);
  }
});

test('online --json carries the system’s facts; only doctor and online load systeminformation', async () => {
  const r = await ferrymail(cfg, ['online', '--json']);
  const j = JSON.parse(r.stdout) as { system: string | null; interfaces: unknown[] };
  // systeminformation answers on Linux: null here means the command could not use it (as once in the bundle)
  assert.match(j.system ?? 'null', /default interface|no default interface/);
  assert.ok(Array.isArray(j.interfaces));
  const dist = path.resolve(import.meta.dirname, '../../src');
  const users: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js') && fs.readFileSync(p, 'utf8').includes("'systeminformation'"))
        users.push(path.relative(dist, p));
    }
  };
  walk(dist);
  assert.deepEqual(users, ['cli/doctor.js']);
});
