// Online detection end to end, inside two network namespaces this test creates and removes, joined by a
// veth pair: the peer holds v1 (10.77.0.1) and an SMTP sink, the daemon's namespace holds v0, brought up
// with an address and a default route via 10.77.0.1 while the daemon runs. The daemon must see the connection named by its rule and deliver the
// mail that waited, and see the namespace go offline when v0 goes down; once with `ip monitor`, once
// with the poll it falls back to when `ip` is missing. Skipped (with the reason) when not root or when
// no namespace or veth pair can be made.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  ip,
  FERRYMAIL,
  ROOT,
  SENDMAIL,
  makeConfig,
  run,
  startDaemon,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

const NS = `ferrymail-online-${process.pid}`;
const PEER = `ferrymail-peer-${process.pid}`;
const GATEWAY = '10.77.0.1';
const SINK_PORT = 2525;

/** Removes the namespaces (safe to call twice). */
function removeNamespace(): void {
  if (created) {
    ip('netns', 'del', NS);
    ip('netns', 'del', PEER);
  }
  created = false;
}

let created = false;
process.once('exit', removeNamespace);

/** Creates the namespace with loopback up and the veth pair; the reason to skip when it cannot. */
function createNamespace(): string | null {
  if (process.getuid?.() !== 0) return 'needs root to create a network namespace';
  const err = ip('netns', 'add', NS);
  if (err) return `cannot create a network namespace: ${err}`;
  created = true;
  const steps = [
    ['netns', 'add', PEER],
    ['-n', NS, 'link', 'set', 'lo', 'up'],
    ['-n', NS, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1'],
    ['-n', NS, 'link', 'set', 'v1', 'netns', PEER],
    ['-n', PEER, 'addr', 'add', `${GATEWAY}/24`, 'dev', 'v1'],
    ['-n', PEER, 'link', 'set', 'v1', 'up'],
  ];
  for (const s of steps) {
    const e = ip(...s);
    if (e) {
      removeNamespace();
      return `cannot set up the namespace (ip ${s.join(' ')}): ${e}`;
    }
  }
  return null;
}

const skip = createNamespace();
let sink: ChildProcess | null = null;
let sinkLog = '';

after(() => {
  sink?.kill('SIGKILL');
  removeNamespace();
});

/** The SMTP sink on v1 in the peer namespace: one JSON line per message on stdout. */
async function startSink(): Promise<void> {
  const code = `
    import { SMTPServer } from 'smtp-server';
    const s = new SMTPServer({ authOptional: true, disabledCommands: ['AUTH', 'STARTTLS'], logger: false,
      onData(stream, session, cb) {
        const chunks = [];
        stream.on('data', (c) => chunks.push(c));
        stream.on('end', () => {
          process.stdout.write(JSON.stringify({ to: session.envelope.rcptTo.map((r) => r.address), data: Buffer.concat(chunks).toString() }) + '\\n');
          cb(null, '2.0.0 taken');
        });
      } });
    s.listen(${SINK_PORT}, '${GATEWAY}', () => process.stdout.write('listening\\n'));`;
  sink = spawn('ip', ['netns', 'exec', PEER, process.execPath, '--input-type=module', '-e', code], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  sink.stdout!.on('data', (d) => (sinkLog += d));
  sink.stderr!.on('data', (d) => (sinkLog += d));
  assert.ok(await waitUntil(() => sinkLog.includes('listening'), 15_000), `sink did not start: ${sinkLog}`);
}

/** Recipients the sink has received mail for. */
function delivered(): string[] {
  return sinkLog
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .flatMap((l) => (JSON.parse(l) as { to: string[] }).to);
}

/** Runs a program inside the namespace. */
function inNs(args: string[], cfg: TestConfig, input = ''): ReturnType<typeof run> {
  return run('ip', ['netns', 'exec', NS, process.execPath, ...args], {
    input,
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
  });
}

/** A configuration whose rule names "lab" when v0 is up with an address and a default route via v1. */
async function labConfig(): Promise<TestConfig> {
  const cfg = await makeConfig(
    [
      'online:',
      '  rules:',
      '    - connection: lab',
      '      interface: v0',
      `      gateway: ${GATEWAY}`,
      '      cidr: 10.77.0.0/24',
    ].join('\n'),
  );
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '10-lab.yaml'),
    [
      'name: lab-relay',
      'connections: [lab]',
      'transport:',
      '  type: smtp',
      `  host: ${GATEWAY}`,
      `  port: ${SINK_PORT}`,
      '  tls: none',
      '',
    ].join('\n'),
  );
  return cfg;
}

/** Queue entries, read inside the namespace (the spool's locks are abstract sockets, one set per namespace). */
async function queue(
  cfg: TestConfig,
): Promise<Array<{ id: string; recipients: Array<{ address: string; last_error?: string }> }>> {
  const r = await inNs([FERRYMAIL, '--config-dir', cfg.configDir, 'queue', 'list', '--json'], cfg);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Sends one message with sendmail inside the namespace. */
async function send(cfg: TestConfig, to: string): Promise<void> {
  const r = await inNs(
    [SENDMAIL, '-i', '-f', 'alice@test.example', to],
    cfg,
    `From: alice@test.example\nTo: ${to}\nSubject: waiting\n\nhello\n`,
  );
  assert.equal(r.code, 0, r.stderr);
}

/** Lines of the daemon's log that record the online state. */
function stateLines(d: RunningDaemon): string[] {
  return d
    .log()
    .split('\n')
    .filter((l) => / online state /.test(l));
}

/** The whole story for one way of watching: offline, mail waits; v0 up, delivered; v0 down, offline again. */
async function scenario(daemonEnv: NodeJS.ProcessEnv, tag: string): Promise<RunningDaemon> {
  // v0 down with no address: the namespace is offline
  ip('-n', NS, 'link', 'set', 'v0', 'down');
  ip('-n', NS, 'addr', 'flush', 'dev', 'v0');
  const cfg = await labConfig();
  if (!sink) await startSink();
  const d = await startDaemon(cfg, [], { netns: NS, env: daemonEnv });
  try {
    assert.ok(await waitUntil(() => stateLines(d).some((l) => /state=offline/.test(l)), 15_000), d.log());
    assert.match(stateLines(d)[0]!, /why="no rule holds \(lab: v0 is down\)"/);
    const first = `first-${tag}@example.org`;
    await send(cfg, first);
    // the daemon's run defers it (offline), which sets a retry time minutes away
    assert.ok(
      await waitUntil(async () => (await queue(cfg))[0]?.recipients[0]?.last_error !== undefined, 15_000),
      d.log(),
    );
    assert.equal(delivered().includes(first), false);

    assert.equal(ip('-n', NS, 'addr', 'add', '10.77.0.2/24', 'dev', 'v0'), null);
    assert.equal(ip('-n', NS, 'link', 'set', 'v0', 'up'), null);
    assert.equal(ip('-n', NS, 'route', 'add', 'default', 'via', GATEWAY), null);
    // the change of connection makes the daemon try the waiting mail at once, retry time or not
    assert.ok(
      await waitUntil(async () => delivered().includes(first) && (await queue(cfg)).length === 0, 20_000),
      `${d.log()}\nsink: ${sinkLog}`,
    );
    assert.ok(
      stateLines(d).some((l) =>
        /state=online connection=lab why="rule 1 \(lab\): interface v0, gateway 10\.77\.0\.1, address in 10\.77\.0\.0\/24"/.test(
          l,
        ),
      ),
      d.log(),
    );
    const status = await run(process.execPath, [FERRYMAIL, '--config-dir', cfg.configDir, 'status']);
    assert.match(status.stdout, /^online: online, connection lab: rule 1 \(lab\)/m);
    const now = await inNs([FERRYMAIL, '--config-dir', cfg.configDir, 'online', '--json'], cfg);
    assert.equal(now.code, 0, now.stderr);
    assert.equal(JSON.parse(now.stdout).connection, 'lab');

    assert.equal(ip('-n', NS, 'link', 'set', 'v0', 'down'), null);
    assert.ok(await waitUntil(() => /state=offline/.test(stateLines(d).at(-1)!), 20_000), d.log());
    const off = await inNs([FERRYMAIL, '--config-dir', cfg.configDir, 'online'], cfg);
    assert.equal(off.code, 69);
    assert.match(off.stdout, /^offline: no rule holds \(lab: v0 is down\)/);
    const second = `second-${tag}@example.org`;
    await send(cfg, second);
    assert.ok(
      await waitUntil(async () => (await queue(cfg))[0]?.recipients[0]?.last_error !== undefined, 15_000),
      d.log(),
    );
    assert.equal(delivered().includes(second), false, 'nothing goes out while offline');
    // one log line per change of state: no line repeats the one before; besides the three states the
    // test makes, a busy machine may show the moment between link up and the default route
    const lines = stateLines(d);
    const what = (l: string): string => l.replace(/^\S+ /, '');
    for (let i = 1; i < lines.length; i++) assert.notEqual(what(lines[i]!), what(lines[i - 1]!), lines.join('\n'));
    assert.equal(
      lines.filter((l) => !/v0 has no default route/.test(l)).length,
      3,
      `one log line per change of state:\n${lines.join('\n')}`,
    );
    return d;
  } finally {
    await d.stop();
  }
}

test('a network change inside the namespace: ip monitor sees v0 come up and go down', {
  skip: skip ?? false,
}, async () => {
  const d = await scenario({}, 'monitor');
  assert.doesNotMatch(d.log(), /polling/);
});

test('without ip the daemon polls the interfaces and sees the same changes', { skip: skip ?? false }, async () => {
  const d = await scenario({ PATH: '/nonexistent' }, 'poll');
  assert.match(d.log(), /watching the network by polling every second/);
});
