// Delivery end to end: sendmail queues, `ferrymail flush` (alone or through the daemon) picks the route
// of the connection named in the state file, rewrites sender and From, and delivers to an SMTP server on
// loopback; offline waits with the reason; a refused recipient fails and its sender gets a notice.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  queueJson,
  sendmail,
  smtpRoute,
  startDaemon,
  writeRoute,
  type TestConfig,
} from '../helpers.js';
import { closeAll, faultServer } from '../support/fault-smtp.js';
import { startSink, type Sink, type Taken } from '../support/sink.js';

let got: Taken[] = [];
let sink: Sink;
let sinkPort = 0;

before(async () => {
  sink = await startSink();
  got = sink.got;
  sinkPort = sink.port;
});
after(async () => {
  await sink.close();
  await closeAll();
});

/** A configuration with a state file and a home route to the sink. */
async function setup(connection: string): Promise<TestConfig & { stateFile: string }> {
  const stateFile = path.join((await makeConfig()).dir, 'online');
  const cfg = await makeConfig(`online:\n  state_file: ${JSON.stringify(stateFile)}\n`);
  fs.writeFileSync(stateFile, `${connection}\n`);
  writeRoute(cfg, '20-home.yaml', smtpRoute('home-isp', 'home', sinkPort));
  return { ...cfg, stateFile };
}

const MESSAGE = 'From: Alice <alice@laptop.local>\nTo: bob@example.org\nSubject: out\n\nhello\n';

test('flush without a daemon: the route of the connection, rewritten, delivered, gone from the queue', async () => {
  const cfg = await setup('home');
  const s = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'bob@example.org'], MESSAGE);
  assert.equal(s.code, 0, s.stderr);
  const before = got.length;
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /connection home\): 1 message due; 1 delivered/);
  const m = got.slice(before).find((g) => g.to.includes('bob@example.org'))!;
  assert.ok(m, 'the sink got it');
  assert.equal(m.from, 'alice@isp.example');
  assert.match(m.data, /^From: Alice <alice\.smith@isp\.example>\r?$/m);
  assert.match(m.data, /hello/);
  assert.deepEqual(await queueJson(cfg), []);
});

test('offline: the message waits with the reason; runq delivers once the connection is back', async () => {
  const cfg = await setup('');
  await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'carol@example.org'], MESSAGE);
  const f = await ferrymail(cfg, ['flush']);
  assert.match(f.stdout, /offline: state file .* no connection named\): 1 message due; 0 delivered, 1 deferred/);
  const q = await queueJson(cfg);
  // never tried: the envelope is left as it was, and the listing says why it waits
  assert.equal(q[0]!.recipients[0].state, 'queued');
  assert.match(q[0]!.recipients[0].now, /offline/);
  fs.writeFileSync(cfg.stateFile, 'home\n');
  // a manual run tries deferred mail at once; -qo names the connection, as in masqmail
  const r = await sendmail(cfg, ['-qo', 'home'], '', 'sendmail');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /connection home\): 1 message due; 1 delivered/);
  assert.deepEqual(await queueJson(cfg), []);
});

test('the daemon runs the queue by itself: delivered, refused recipient failed, the notice delivered too', async () => {
  const cfg = await setup('home');
  const d = await startDaemon(cfg);
  try {
    const before = got.length;
    await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'nobody@example.org', 'dave@example.org'], MESSAGE);
    const deadline = Date.now() + 15_000;
    while (
      Date.now() < deadline &&
      !(got.slice(before).some((g) => g.from === '') && (await queueJson(cfg)).length === 0)
    ) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(d.log(), /\*\* \S+ to=<nobody@example\.org> route=home-isp/);
    assert.match(d.log(), /=> \S+ to=<dave@example\.org> route=home-isp/);
    assert.match(d.log(), /failure notice queued/);
    const notice = got.slice(before).find((g) => g.from === '');
    assert.ok(notice, 'the notice went out with the null sender');
    assert.deepEqual(notice.to, ['alice@laptop.local']);
    assert.match(notice.data, /multipart\/report; report-type=delivery-status/);
    assert.deepEqual(await queueJson(cfg), []);
  } finally {
    await d.stop();
  }
});

test('ferrymail flush through the daemon delivers what waited offline', async () => {
  const cfg = await setup('');
  const d = await startDaemon(cfg);
  try {
    await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'erin@example.org'], MESSAGE);
    // the daemon hears of it, and its own run finds no connection: the message waits as it was queued
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !/<= \S+ from=<alice@laptop\.local>/.test(d.log()))
      await new Promise((r) => setTimeout(r, 100));
    const [waiting] = await queueJson(cfg);
    assert.equal(waiting?.recipients[0].state, 'queued');
    assert.match(waiting?.recipients[0].now, /offline/);
    const f = await ferrymail(cfg, ['flush', '--connection', 'home']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /connection home\): 1 message due; 1 delivered/);
    assert.deepEqual(await queueJson(cfg), []);
  } finally {
    await d.stop();
  }
});

test('a refused AUTH defers with the server reply; the password is in no output, log or queue entry', async () => {
  const secret = 'Pa55-w0rd-never-shown';
  const relay = await faultServer({
    auth: { mechanisms: ['PLAIN', 'LOGIN'], user: 'alice', secret: 'other', failText: `you said ${secret}` },
  });
  const stateFile = path.join((await makeConfig()).dir, 'online');
  const cfg = await makeConfig(`online:\n  state_file: ${JSON.stringify(stateFile)}\n`);
  fs.writeFileSync(stateFile, 'home\n');
  const pw = path.join(cfg.dir, 'relay.pw');
  fs.writeFileSync(pw, `${secret}\n`, { mode: 0o600 });
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  const route = [
    'name: relay',
    'connections: [home]',
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${relay.port}`,
    '  tls: none',
    '  user: alice',
    `  password_file: ${pw}`,
    '',
  ];
  fs.writeFileSync(path.join(cfg.configDir, 'routes', '20-relay.yaml'), route.join('\n'));
  await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'bob@example.org'], MESSAGE);
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /1 deferred/);
  const q = await queueJson(cfg);
  assert.match(
    q[0]!.recipients[0].last_error,
    /^454 4\.7\.0 AUTH PLAIN at 127\.0\.0\.1:\d+ failed: 535 5\.7\.8 authentication failed you said \*\*\*/,
  );
  // the daemon's own run, soon after new mail, logs the refusal
  const d = await startDaemon(cfg);
  try {
    const r = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'carol@example.org'], MESSAGE);
    assert.equal(r.code, 0, r.stderr);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !/carol@example\.org.*AUTH PLAIN/.test(d.log()))
      await new Promise((res) => setTimeout(res, 100));
    assert.match(d.log(), /carol@example\.org.*AUTH PLAIN at 127\.0\.0\.1:\d+ failed/);
    for (const text of [f.stdout, f.stderr, d.log(), JSON.stringify(await queueJson(cfg))]) {
      assert.ok(!text.includes(secret), `the password leaked: ${text}`);
    }
  } finally {
    await d.stop();
  }
  assert.ok(relay.connections.length >= 2, 'both runs tried the relay');
});

test('a queue run reuses its connections: one with connections: 1, at most two by default; one transaction after another', async () => {
  for (const [setting, most] of [
    ['  connections: 1', 1],
    [null, 2],
  ] as const) {
    const relay = await faultServer();
    const stateFile = path.join((await makeConfig()).dir, 'online');
    const cfg = await makeConfig(`online:\n  state_file: ${JSON.stringify(stateFile)}\n`);
    fs.writeFileSync(stateFile, 'home\n');
    fs.mkdirSync(path.join(cfg.configDir, 'routes'));
    const route = [
      'name: relay',
      'connections: [home]',
      'transport:',
      '  type: smtp',
      '  host: 127.0.0.1',
      `  port: ${relay.port}`,
      '  tls: none',
      ...(setting ? [setting] : []),
      '',
    ];
    fs.writeFileSync(path.join(cfg.configDir, 'routes', '20-relay.yaml'), route.join('\n'));
    const to = ['a', 'b', 'c', 'd', 'e'].map((x) => `${x}@example.org`);
    for (const rcpt of to)
      assert.equal((await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', rcpt], MESSAGE)).code, 0);
    const f = await ferrymail(cfg, ['flush']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /5 delivered/);
    assert.deepEqual(relay.received.map((m) => m.to[0]).sort(), to);
    assert.ok(
      relay.connections.length >= 1 && relay.connections.length <= most,
      `${relay.connections.length} connections, at most ${most}`,
    );
    const cmds = relay.connections.flatMap((c) => c.commands.map((x) => x.split(/[ :]/)[0]));
    assert.equal(cmds.filter((c) => c === 'MAIL').length, 5);
    assert.equal(cmds.filter((c) => c === 'RSET').length, 0, 'each transaction ended cleanly: no RSET needed');
  }
});

test('sendmail with the same recipient twice on the command line queues it once', async () => {
  const cfg = await makeConfig();
  const r = await sendmail(
    cfg,
    ['-i', 'dup@example.org', 'Dup@example.org,other@example.org', 'dup@example.org'],
    MESSAGE,
  );
  assert.equal(r.code, 0, r.stderr);
  const q = await queueJson(cfg);
  assert.deepEqual(
    q[0]!.recipients.map((x: { address: string }) => x.address),
    ['dup@example.org', 'other@example.org'],
  );
});
