// The queue as users drive it: flush --route, route explain ID, the reasons in queue list / show / mailq,
// an uncertain delivery held by its route and released, notices delivered locally when no route can
// carry them, and the queue settings through config set / check. Every server listens on 127.0.0.1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ferrymail,
  freePort,
  makeConfig,
  queueJson,
  sendmail,
  startDaemon,
  stopDaemon,
  waitUntil,
  type TestConfig,
} from '../helpers.js';
import { startSink, type Sink, type Taken } from '../support/sink.js';

let got: Taken[] = [];
let sink: Sink;
let sinkPort = 0;
let rude: net.Server;
let rudePort = 0;

/** An SMTP server that takes the whole message and drops the connection instead of answering the dot. */
function dropAfterDot(): net.Server {
  return net.createServer((sock) => {
    sock.on('error', () => undefined);
    sock.write('220 rude.example ESMTP\r\n');
    let buf = '';
    let inData = false;
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (inData) return void (buf.includes('\r\n.\r\n') && sock.destroy());
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl).toUpperCase();
        buf = buf.slice(nl + 2);
        if (line.startsWith('EHLO')) sock.write('250-rude.example\r\n250 8BITMIME\r\n');
        else if (line.startsWith('DATA')) {
          inData = true;
          sock.write('354 go ahead\r\n');
          return;
        } else if (line.startsWith('QUIT')) sock.end('221 bye\r\n');
        else sock.write('250 2.0.0 ok\r\n');
      }
    });
  });
}

before(async () => {
  sink = await startSink();
  got = sink.got;
  sinkPort = sink.port;
  rude = dropAfterDot();
  await new Promise<void>((r) => rude.listen(0, '127.0.0.1', () => r()));
  rudePort = (rude.address() as net.AddressInfo).port;
});
after(async () => {
  await sink.close();
  rude.close();
});

/** A route file's text. */
function routeFile(name: string, lines: string[], port: number): string {
  return [
    `name: ${name}`,
    'connections: [home]',
    ...lines,
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${port}`,
    '  tls: none',
    '',
  ].join('\n');
}

/** A configuration on connection "home" with the given route files (file name → text). */
async function setup(routes: Record<string, string>, extra = ''): Promise<TestConfig> {
  const base = await makeConfig();
  const stateFile = path.join(base.dir, 'online');
  fs.writeFileSync(stateFile, 'home\n');
  const cfg = await makeConfig(`online:\n  state_file: ${JSON.stringify(stateFile)}\n${extra}`);
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  for (const [file, text] of Object.entries(routes)) fs.writeFileSync(path.join(cfg.configDir, 'routes', file), text);
  return cfg;
}

/** lan (to the sink, *@lan.example only), isp (rewrites; its server is not there), flaky (drops after the dot, held). */
async function threeRoutes(extra = ''): Promise<TestConfig> {
  return setup(
    {
      '10-lan.yaml': routeFile('lan', ['allowed_recipients: ["*@lan.example"]', 'last_route: true'], sinkPort),
      '20-flaky.yaml': routeFile(
        'flaky',
        ['allowed_recipients: ["*@flaky.example"]', 'last_route: true', 'uncertain: hold'],
        rudePort,
      ),
      '30-isp.yaml': routeFile(
        'isp',
        [
          'denied_recipients: ["*@lan.example", "*@flaky.example"]',
          'rewrite:',
          '  envelope_sender:',
          '    "*@laptop.local": "*@isp.example"',
          '  from:',
          '    alice: alice.smith@isp.example',
        ],
        await freePort(),
      ),
    },
    extra,
  );
}

const MESSAGE = 'From: Alice <alice@laptop.local>\nTo: bob@example.org\nSubject: q\n\nhello\n';

/** Queues a message and returns its id. */
async function queue(cfg: TestConfig, rcpts: string[]): Promise<string> {
  const before = new Set((await queueJson(cfg)).map((e) => e.id));
  const s = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', ...rcpts], MESSAGE);
  assert.equal(s.code, 0, s.stderr);
  return (await queueJson(cfg)).find((e) => !before.has(e.id))!.id;
}

test('flush --route tries that route only; the other recipients stay as they were; an unknown route is a usage error', async () => {
  const cfg = await threeRoutes();
  const id = await queue(cfg, ['carl@lan.example', 'bob@example.org']);
  const f = await ferrymail(cfg, ['flush', '--route', 'lan']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /connection home, route lan only\): 1 message due; 1 delivered, 0 deferred/);
  assert.ok(got.some((g) => g.to.includes('carl@lan.example')));
  const rcpts = (await queueJson(cfg)).find((e) => e.id === id)!.recipients;
  assert.deepEqual(
    rcpts.map((r: any) => [r.address, r.state, r.attempts]),
    [
      ['carl@lan.example', 'delivered', 1],
      ['bob@example.org', 'queued', 0],
    ],
  );
  const bad = await ferrymail(cfg, ['flush', '--route', 'nosuch']);
  assert.equal(bad.code, 64);
  assert.match(bad.stderr, /^ferrymail: no route named "nosuch" \(routes: local, lan, flaky, isp\)\n$/);
});

test('route explain ID: per recipient the route it would take now, the rewritten sender and headers, or its state', async () => {
  const cfg = await threeRoutes();
  const id = await queue(cfg, ['bob@example.org', 'carl@lan.example']);
  await ferrymail(cfg, ['flush', '--route', 'lan']);
  const r = await ferrymail(cfg, ['route', 'explain', id]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^message ${id} from <alice@laptop\\.local>\\nconnection: home\\n`));
  assert.match(
    r.stdout,
    /<bob@example\.org> \(queued\): via isp\n {2}envelope sender <alice@isp\.example>\n {2}From: Alice <alice\.smith@isp\.example>\n/,
  );
  assert.match(r.stdout, /<carl@lan\.example> \(delivered\): nothing to do: delivered by lan\n/);
  const j = JSON.parse((await ferrymail(cfg, ['route', 'explain', id, '--json', '--connection', 'elsewhere'])).stdout);
  assert.equal(j.state.connection, 'elsewhere');
  assert.match(j.recipients[0].defer, /no route accepts this recipient on connection elsewhere/);
  const both = await ferrymail(cfg, ['route', 'explain', id, '--from', 'a@b.org', '--to', 'c@d.org']);
  assert.equal(both.code, 64);
  const missing = await ferrymail(cfg, ['route', 'explain', 'nonsense']);
  assert.equal(missing.code, 66);
});

test("route explain: this host's own recipients are delivered by the route local, offline too; the others as the routes say", async () => {
  const cfg = await threeRoutes();
  const r = await ferrymail(cfg, [
    'route',
    'explain',
    '--from',
    'alice@laptop.local',
    '--to',
    'root@test.example',
    '--to',
    'bob@example.org',
    '--connection',
    'elsewhere',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /<root@test\.example>: here, by the route local \(on any connection and offline\)/);
  assert.match(r.stdout, /<bob@example\.org>: waits: no route accepts this recipient on connection elsewhere/);
  const j = JSON.parse(
    (await ferrymail(cfg, ['route', 'explain', '--from', 'a@b.example', '--to', 'postmaster@localhost', '--json']))
      .stdout,
  );
  assert.deepEqual(j.recipients[0].routes, ['local']);
  assert.equal(j.recipients[0].local, true);
});

test('queue list, show and mailq say why each recipient waits, when it is tried next and by which route; retry_min from the settings', async () => {
  const cfg = await threeRoutes('queue:\n  retry_min: 1m\n  retry_max: 1h\n');
  const id = await queue(cfg, ['bob@example.org']);
  await ferrymail(cfg, ['flush']);
  const e = (await queueJson(cfg)).find((x) => x.id === id)!;
  const r = e.recipients[0];
  assert.equal(r.state, 'deferred');
  assert.equal(r.route, 'isp');
  assert.match(r.reason, /^4\d\d 4\.\d\.\d /);
  assert.equal(r.reason, r.last_error);
  assert.equal(Date.parse(r.next_attempt) - Date.parse(r.last_attempt), 60_000, 'queue.retry_min: 1m');
  const list = await ferrymail(cfg, ['queue', 'list']);
  assert.match(
    list.stdout,
    new RegExp(
      `  deferred  <bob@example\\.org>  attempts 1  route isp  next ${r.next_attempt.replace(/[.]/g, '\\.')} \\(in \\d+s\\)  last error: 4\\d\\d `,
    ),
  );
  const show = await ferrymail(cfg, ['queue', 'show', id]);
  assert.match(
    show.stdout,
    /<bob@example\.org> deferred attempts=1 route=isp\n {4}last error: 4\d\d .*\n {4}last attempt: \S+\n {4}next attempt: \S+ \(in \d+s\)\n/,
  );
  const mailq = await sendmail(cfg, [], '', 'mailq');
  assert.match(mailq.stdout, /^ {47}\(4\d\d 4\.\d\.\d .*\)\n {47}bob@example\.org$/m);
});

test("a held message is listed as held, with no next attempt and no route's state, and says how to release it", async () => {
  const cfg = await threeRoutes('queue:\n  retry_min: 1m\n');
  const id = await queue(cfg, ['bob@example.org']);
  await ferrymail(cfg, ['flush']); // isp's server is not there: deferred, next attempt in a minute
  const held = await ferrymail(cfg, ['queue', 'hold', id]);
  assert.equal(held.code, 0, held.stderr);
  const say = `held: not tried until 'ferrymail queue release ${id}'`;
  const list = (await ferrymail(cfg, ['queue', 'list'])).stdout;
  assert.match(list, new RegExp(`^${id}  HELD  `, 'm'));
  const line = list.split('\n').find((l) => l.includes('<bob@example.org>'))!;
  assert.ok(line.includes(`now: ${say}`), line);
  assert.doesNotMatch(line, / next |route isp is down/, 'no attempt comes while it is held');
  const show = (await ferrymail(cfg, ['queue', 'show', id])).stdout;
  assert.ok(show.includes(`now: ${say}`), show);
  assert.doesNotMatch(show, /next attempt:/);
  const e = (await queueJson(cfg)).find((x) => x.id === id)!;
  assert.deepEqual([e.place, e.recipients[0].now], ['hold', say]);
  assert.ok(e.recipients[0].next_attempt, 'the stored time stays in the data, for when it is released');
  const mailq = (await sendmail(cfg, [], '', 'mailq')).stdout;
  assert.match(mailq, new RegExp(`^${id}! `, 'm'));
  assert.ok(mailq.includes(`(${say})\n`), mailq);
});

test('a spool that does not exist yet: flush, runq, hold, release and rm create nothing', async () => {
  const cfg = await threeRoutes();
  fs.rmSync(cfg.spool, { recursive: true, force: true });
  const f = await ferrymail(cfg, ['flush']);
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /0 messages due/);
  const q = await sendmail(cfg, ['-q']);
  assert.equal(q.code, 0, q.stderr);
  for (const cmd of ['hold', 'release', 'rm']) {
    const r = await ferrymail(cfg, ['queue', cmd, '01M8487W0B5M96XK']);
    assert.equal(r.code, 66, `${cmd}: ${r.stderr}`);
    assert.match(r.stderr, /no such message: 01M8487W0B5M96XK/);
  }
  assert.equal(fs.existsSync(cfg.spool), false, 'nothing created');
});

test('a spool opened to others while the daemon runs: its status says so (exit 78), and it refuses queue changes', async () => {
  const cfg = await threeRoutes();
  const id = await queue(cfg, ['bob@example.org']);
  const d = await startDaemon(cfg);
  try {
    assert.equal((await ferrymail(cfg, ['status'])).code, 0);
    fs.chmodSync(cfg.spool, 0o777);
    const st = await ferrymail(cfg, ['status']);
    assert.equal(st.code, 78, st.stdout + st.stderr);
    assert.match(
      st.stdout,
      /^spool refused: .*writable by group or others.*; no queue run or change is made until it is mended$/m,
    );
    const js = await ferrymail(cfg, ['status', '--json']);
    assert.equal(js.code, 78);
    assert.match(JSON.parse(js.stdout).spoolRefused, /writable by group or others/);
    const hold = await ferrymail(cfg, ['queue', 'hold', id]);
    assert.equal(hold.code, 78, hold.stderr);
    assert.match(hold.stderr, /writable by group or others/);
    fs.chmodSync(cfg.spool, 0o711);
    assert.equal((await ferrymail(cfg, ['status'])).code, 0, 'mended: all well again');
    assert.equal((await queueJson(cfg)).find((e) => e.id === id)!.place, 'queue', 'the refused hold changed nothing');
  } finally {
    fs.chmodSync(cfg.spool, 0o711);
    await stopDaemon(d);
  }
});

test('an uncertain delivery on a route with uncertain: hold is held and shown so; queue release tries it once more', async () => {
  const cfg = await threeRoutes();
  const id = await queue(cfg, ['x@flaky.example']);
  const f = await ferrymail(cfg, ['flush']);
  assert.match(f.stdout, /1 uncertain/);
  assert.match(f.stderr, /delivery uncertain \(it may have arrived\): held for a decision/);
  const r = (await queueJson(cfg)).find((x) => x.id === id)!.recipients[0];
  assert.deepEqual([r.state, r.uncertain_count, r.next_attempt], ['uncertain', 1, null]);
  assert.match(r.reason, new RegExp(`held; 'ferrymail queue release ${id}' tries again`));
  assert.match(
    (await ferrymail(cfg, ['queue', 'list'])).stdout,
    /uncertain <x@flaky\.example> {2}attempts 1 {2}route flaky {2}delivery uncertain/,
  );
  assert.match((await sendmail(cfg, [], '', 'mailq')).stdout, /\(delivery uncertain \(it may have arrived\): held;/);
  assert.match((await ferrymail(cfg, ['flush'])).stdout, /0 messages due/, 'not tried again on its own');
  const rel = await ferrymail(cfg, ['queue', 'release', id]);
  assert.equal(rel.code, 0, rel.stderr);
  assert.equal((await queueJson(cfg)).find((x) => x.id === id)!.recipients[0].state, 'queued');
  assert.match(
    (await ferrymail(cfg, ['flush'])).stdout,
    /1 message due; 0 delivered, 0 deferred, 0 failed, 1 uncertain/,
  );
});

test('a notice no route can carry is appended to notice_mailbox and handed to notify_command', async () => {
  const base = await makeConfig();
  const mbox = path.join(base.dir, 'notices.mbox');
  const seen = path.join(base.dir, 'seen.txt');
  const cfg = await setup(
    { '10-lan.yaml': routeFile('lan', ['allowed_recipients: ["*@lan.example"]'], sinkPort) },
    `queue:\n  notice_mailbox: ${JSON.stringify(mbox)}\n  notify_command: [tee, ${JSON.stringify(seen)}]\n`,
  );
  await queue(cfg, ['nobody@lan.example']);
  const f = await ferrymail(cfg, ['flush']);
  assert.match(f.stdout, /1 failed/);
  assert.match(f.stderr, /failure notice delivered locally/);
  const text = fs.readFileSync(mbox, 'utf8');
  assert.match(text, /^From MAILER-DAEMON \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\nFrom: MAILER-DAEMON@test\.example/);
  assert.match(text, /\nAction: failed\nStatus: 5\.1\.1\n/);
  assert.equal((fs.statSync(mbox).mode & 0o777).toString(8), '600');
  assert.match(
    fs.readFileSync(seen, 'utf8'),
    /^Undelivered Mail Returned to Sender: message \S+\n<nobody@lan\.example>: 550 5\.1\.1 /,
  );
  // the notice itself still waits in the queue for a route to the sender
  const q = await queueJson(cfg);
  assert.deepEqual(
    q.map((e) => [e.sender, e.recipients[0].address]),
    [['', 'alice@laptop.local']],
  );
});

test('config set and check know durations; a bad one is refused with the key', async () => {
  const cfg = await makeConfig();
  assert.equal(
    (await ferrymail(cfg, ['config', 'set', 'queue.retry_min', '10m', 'queue.delay_warnings', '[2h, 1d]'])).code,
    0,
  );
  assert.equal((await ferrymail(cfg, ['config', 'get', 'queue.retry_min'])).stdout, '600\n');
  assert.equal((await ferrymail(cfg, ['config', 'get', 'queue.delay_warnings'])).stdout, '[7200,86400]\n');
  assert.equal((await ferrymail(cfg, ['config', 'check'])).code, 0);
  const bad = await ferrymail(cfg, ['config', 'set', 'queue.lifetime', '5 days']);
  assert.equal(bad.code, 78);
  assert.match(bad.stderr, /queue\.lifetime: must be a duration such as 30s, 5m, 4h or 5d/);
  fs.appendFileSync(path.join(cfg.configDir, 'ferrymail.yaml'), '  lifetime: 1h\n');
  const check = await ferrymail(cfg, ['config', 'check']);
  assert.equal(check.code, 78);
  assert.match(check.stderr, /queue\.delay_warnings: every warning must come before queue\.lifetime/);
});

test("the daemon's own runs use the queue settings; flush --route goes through the daemon, errors included", async () => {
  const cfg = await threeRoutes('queue:\n  retry_min: 2m\n');
  const d = await startDaemon(cfg);
  try {
    const id = await queue(cfg, ['bob@example.org', 'carl@lan.example']);
    // the daemon's run soon after new mail: carl goes by lan, bob's isp server is not there
    const settled = await waitUntil(
      async () => (await queueJson(cfg)).find((e) => e.id === id)?.recipients[0].state === 'deferred',
      15_000,
      100,
    );
    assert.ok(settled, d.log());
    const r = (await queueJson(cfg)).find((e) => e.id === id)!.recipients;
    assert.equal(Date.parse(r[0].next_attempt) - Date.parse(r[0].last_attempt), 120_000, 'queue.retry_min: 2m');
    assert.equal(r[1].state, 'delivered');
    const f = await ferrymail(cfg, ['flush', '--route', 'isp']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /route isp only\): 1 message due; 0 delivered, 1 deferred/);
    const bad = await ferrymail(cfg, ['flush', '--route', 'nosuch']);
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /no route named "nosuch"/);
  } finally {
    await stopDaemon(d);
  }
});
