// The built-in policy_server hook: Postfix's policy delegation protocol against postgrey (a private
// instance on loopback: greylisted first, accepted after its delay, its header prepended), and against a
// small server of the test's own for the other answers (REJECT, a code of its own, DEFER_IF_REJECT,
// nonsense, a server that is down).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  freePort,
  ip,
  makeConfig,
  messageData,
  queueJson,
  RawSmtp,
  startDaemon,
  stopDaemon,
  tempDir,
  waitForPort,
} from '../helpers.js';

let postgrey: ChildProcess | undefined;
let greyPort = 0;
const DELAY = 2;

/** The postgrey binary (often outside a user's PATH). */
function postgreyBinary(): string {
  for (const p of ['/usr/sbin/postgrey', '/usr/bin/postgrey']) if (fs.existsSync(p)) return p;
  throw new Error('postgrey not found: install postgrey');
}

before(async () => {
  const dir = tempDir('ferrymail-postgrey-');
  fs.chmodSync(dir, 0o755);
  const db = path.join(dir, 'db');
  fs.mkdirSync(db);
  // postgrey drops to its own user when started as root; its database must be its own
  const root = process.getuid!() === 0;
  if (root) fs.chownSync(db, Number(await idOf('postgrey')), 65534);
  greyPort = await freePort();
  const args = [`--inet=127.0.0.1:${greyPort}`, `--dbdir=${db}`, `--delay=${DELAY}`, '--max-age=1'];
  if (root) args.push('--user=postgrey', '--group=nogroup');
  postgrey = spawn(postgreyBinary(), args, { stdio: ['ignore', 'ignore', 'pipe'] });
  process.once('exit', () => postgrey?.exitCode === null && postgrey.kill('SIGKILL'));
  let err = '';
  postgrey.stderr!.on('data', (d) => (err += d));
  await waitForPort(greyPort, 15_000).catch((e: Error) => {
    throw new Error(`${e.message}: ${err}`);
  });
});

after(() => {
  postgrey?.kill('SIGTERM');
});

/** A user's uid. */
async function idOf(user: string): Promise<string> {
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`no user ${user}`);
  return line.split(':')[2]!;
}

/** A configuration whose hooks are the given YAML list items. */
async function configWith(hooks: string): Promise<Awaited<ReturnType<typeof makeConfig>>> {
  return makeConfig(`hooks:\n${hooks}`);
}

test('postgrey: the first try is greylisted (DEFER_IF_PERMIT), the retry after its delay accepted, with its header at the top', async () => {
  const cfg = await configWith(
    `  - builtin: policy_server\n    options: { server: "inet:127.0.0.1:${greyPort}" }\n    timeout: 5s\n`,
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<sender@remote.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<someone@far.example>'), /^450 4\.7\.1 Greylisted/, d.log());
    await new Promise((r) => setTimeout(r, (DELAY + 1.5) * 1000));
    assert.match(await c.cmd('RCPT TO:<someone@far.example>'), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    c.send('Subject: grey\r\n\r\nhello\r\n.\r\n');
    assert.match(await c.reply(), /^250 2\.0\.0 Ok: queued as /);
    c.close();
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    const data = messageData(cfg, q[0]!.id);
    assert.match(data, /^X-Greylist: delayed \d+ seconds by postgrey/, 'prepended above everything');
    assert.match(data, /\r\nReceived: from client\.example/);
  } finally {
    await stopDaemon(d);
  }
});

/** A policy server of the test's own: the action for a recipient is its local part's answer table. */
async function fakeServer(answers: Record<string, string>): Promise<{ port: number; close(): void; seen: string[] }> {
  const seen: string[] = [];
  const server = net.createServer((s) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
        const req = buf.slice(0, end);
        buf = buf.slice(end + 2);
        seen.push(req);
        const rcpt = /^recipient=([^@\n]*)@/m.exec(req)?.[1] ?? '';
        const answer = answers[rcpt] ?? 'DUNNO';
        if (answer === 'HANG') continue;
        s.write(answer.startsWith('RAW ') ? answer.slice(4) : `action=${answer}\n\n`);
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close(), seen };
}

const STRICT_REJECT = `export default () => ({ rcpt: (s, i) => i.arg.startsWith('soft') ? { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'later hook refuses' } } : { action: 'continue' } });`;

test('policy answers: REJECT, a code of its own, DEFER_IF_REJECT, nonsense, a hanging server, a server that is down', async () => {
  const fake = await fakeServer({
    block: 'REJECT you are not welcome',
    code: '521 5.7.2 go away for good',
    soft: 'DEFER_IF_REJECT not sure yet',
    ok: 'OK',
    odd: 'RAW nonsense\n\n',
    hang: 'HANG',
    info: 'INFO just so you know',
  });
  const down = await freePort();
  const cfg = await makeConfig();
  const hook = path.join(cfg.configDir, 'strict.js');
  fs.writeFileSync(hook, STRICT_REJECT, { mode: 0o644 });
  fs.appendFileSync(
    path.join(cfg.configDir, 'ferrymail.yaml'),
    [
      'hooks:',
      '  - builtin: policy_server',
      `    options: { server: "127.0.0.1:${fake.port}" }`,
      '    timeout: 1s',
      `  - path: ${hook}`,
      '',
    ].join('\n'),
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<sender@remote.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<block@far.example>'), /^554 5\.7\.1 you are not welcome/);
    assert.match(await c.cmd('RCPT TO:<code@far.example>'), /^521 5\.7\.2 go away for good/);
    assert.match(await c.cmd('RCPT TO:<soft@far.example>'), /^450 4\.7\.1 not sure yet/, 'a refusal turned deferral');
    assert.match(await c.cmd('RCPT TO:<odd@far.example>'), /^451 4\.3\.0 /);
    assert.match(await c.cmd('RCPT TO:<hang@far.example>'), /^451 4\.4\.5 /);
    assert.match(await c.cmd('RCPT TO:<info@far.example>'), /^250/);
    assert.match(
      await c.cmd('RCPT TO:<other@far.example>'),
      /^250/,
      'DUNNO passes; the connection after a hang is a new one',
    );
    c.close();
    const req = fake.seen.find((r) => r.includes('recipient=block@far.example'))!;
    assert.match(req, /^request=smtpd_access_policy$/m);
    assert.match(req, /^protocol_state=RCPT$/m);
    assert.match(req, /^client_address=127\.0\.0\.1$/m);
    assert.match(req, /^helo_name=client\.example$/m);
    assert.match(req, /^sender=sender@remote\.example$/m);
    const log = d.log();
    assert.match(log, /failed at rcpt: answered without an action; deferred/);
    assert.match(log, /policy server 127\.0\.0\.1:\d+: INFO just so you know/);
  } finally {
    await stopDaemon(d);
    fake.close();
  }
  // a server that is down: tempfail by default, passed over with on_error: accept
  for (const [onError, want] of [
    ['tempfail', /^451 4\.3\.0 /],
    ['accept', /^250/],
  ] as const) {
    const cfg2 = await configWith(
      `  - builtin: policy_server\n    options: { server: "inet:127.0.0.1:${down}" }\n    on_error: ${onError}\n`,
    );
    const d2 = await startDaemon(cfg2);
    try {
      const c = await RawSmtp.connect(cfg2.port);
      await c.reply();
      await c.cmd('EHLO client.example');
      await c.cmd('MAIL FROM:<sender@remote.example>');
      assert.match(await c.cmd('RCPT TO:<x@far.example>'), want, d2.log());
      c.close();
    } finally {
      await stopDaemon(d2);
    }
  }
});

/** A namespace of this test's own with its resolver: dnsmasq on its loopback serves the SPF records,
 * and `ip netns exec` gives the processes started in it /etc/netns/NAME/resolv.conf as /etc/resolv.conf. */
const SPF_NS = `fm-spf-${process.pid}`;
let spfDns: ChildProcess | undefined;
after(() => {
  if (spfDns?.exitCode === null) spfDns.kill('SIGKILL');
  ip('netns', 'del', SPF_NS);
  fs.rmSync(`/etc/netns/${SPF_NS}`, { recursive: true, force: true });
});

test('policyd-spf, spawned as Postfix spawns it, with records from a private DNS: pass prepends Received-SPF, fail is refused', async () => {
  const made = ip('netns', 'add', SPF_NS);
  assert.equal(made, null, `cannot make a network namespace (root needed): ${made}`);
  assert.equal(ip('-n', SPF_NS, 'link', 'set', 'lo', 'up'), null);
  fs.mkdirSync(`/etc/netns/${SPF_NS}`, { recursive: true });
  fs.writeFileSync(`/etc/netns/${SPF_NS}/resolv.conf`, 'nameserver 127.0.0.1\n');
  const dnsmasq = ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq'].find((p) => fs.existsSync(p));
  assert.ok(dnsmasq, 'dnsmasq not found: install dnsmasq-base');
  spfDns = spawn(
    'ip',
    [
      'netns',
      'exec',
      SPF_NS,
      dnsmasq,
      '-k',
      '--no-resolv',
      '--no-hosts',
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--user=',
      '--pid-file=',
      '--address=/test/',
      '--address=/example/',
      '--txt-record=spf-pass.test,v=spf1 ip4:127.0.0.1 -all',
      '--txt-record=spf-fail.test,v=spf1 -all',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  process.once('exit', () => spfDns?.exitCode === null && spfDns.kill('SIGKILL'));
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(spfDns.exitCode, null, 'dnsmasq runs in the namespace');
  const conf = path.join(tempDir('ferrymail-spf-'), 'policyd-spf.conf');
  // as shipped, but loopback clients are checked too (the test's client is 127.0.0.1)
  fs.writeFileSync(
    conf,
    'debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\nskip_addresses = 192.0.2.255/32\n',
  );
  fs.chmodSync(path.dirname(conf), 0o755);
  fs.chmodSync(conf, 0o644);
  const cfg = await makeConfig(
    `hooks:\n  - builtin: policy_server\n    options:\n      command: [ip, netns, exec, ${SPF_NS}, /usr/bin/policyd-spf, ${JSON.stringify(conf)}]\n    timeout: 20s\n`,
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<someone@spf-fail.test>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<x@far.example>'), /^550 5\.7\.23 .*SPF/, d.log());
    assert.match(await c.cmd('RSET'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<someone@spf-pass.test>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<x@far.example>'), /^250/, d.log());
    assert.match(await c.cmd('DATA'), /^354/);
    c.send('Subject: spf\r\n\r\nhello\r\n.\r\n');
    assert.match(await c.reply(), /^250 /);
    c.close();
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    assert.match(
      messageData(cfg, q[0]!.id),
      /^Received-SPF: Pass \(mailfrom\) identity=mailfrom; client-ip=127\.0\.0\.1/,
    );
  } finally {
    await stopDaemon(d);
  }
});
