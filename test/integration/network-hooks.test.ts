// The network tools' hooks and the systemd unit: `ferrymail hooks install` writes each tool's script
// (below a temporary root), and each script is run as its tool runs it (NetworkManager's dispatcher with
// INTERFACE ACTION and CONNECTION_ID, networkd-dispatcher with STATE and IFACE, ifupdown's run-parts with
// IFACE, MODE and PHASE, pppd with its six arguments and PPP_IFACE): the daemon hears "look again" over
// its control socket, and with no daemon the script still exits 0 at once. The units pass
// `systemd-analyze verify` where it can run, and the daemon tells a NOTIFY_SOCKET (a unix datagram socket
// of the test's own) READY=1, RELOADING=1 and STOPPING=1 through systemd-notify.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  FERRYMAIL,
  ferrymail,
  makeConfig,
  run,
  startDaemon,
  stopDaemon,
  tempDir,
  waitUntil,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

let cfg: TestConfig;
let d: RunningDaemon | undefined;
const root = tempDir('ferrymail-hooks-root-');

before(async () => {
  cfg = await makeConfig();
});
after(async () => stopDaemon(d));

/** Each hook file and how its tool runs it: argv and environment. */
const RUNS: Array<{ file: string; args: string[]; env: Record<string, string>; why: RegExp }> = [
  {
    file: 'etc/NetworkManager/dispatcher.d/90-ferrymail',
    args: ['wlan0', 'up'],
    env: { CONNECTION_ID: 'Home Wi-Fi', NM_DISPATCHER_ACTION: 'up', DEVICE_IFACE: 'wlan0' },
    why: /why="networkmanager up wlan0 Home Wi-Fi"/,
  },
  {
    file: 'etc/networkd-dispatcher/routable.d/50-ferrymail',
    args: [],
    env: { STATE: 'routable', IFACE: 'eth0', AdministrativeState: 'configured' },
    why: /why="networkd routable eth0"/,
  },
  {
    file: 'etc/network/if-up.d/ferrymail',
    args: [],
    env: { IFACE: 'eth1', LOGICAL: 'eth1', MODE: 'start', PHASE: 'post-up', METHOD: 'dhcp' },
    why: /why="ifupdown post-up eth1"/,
  },
  {
    file: 'etc/ppp/ip-up.d/ferrymail',
    args: ['ppp0', '/dev/ttyUSB0', '115200', '10.64.64.64', '10.0.0.1', ''],
    env: { PPP_IFACE: 'ppp0', PPP_LOCAL: '10.64.64.64' },
    why: /why="ppp up ppp0"/,
  },
];

test('hooks install writes each tool’s script, executable, naming this configuration; again it changes nothing', async () => {
  const r = await ferrymail(cfg, ['hooks', 'install', '--root', root, 'networkmanager', 'networkd', 'ifupdown', 'ppp']);
  assert.equal(r.code, 0, r.stderr);
  for (const { file } of RUNS) {
    const f = path.join(root, file);
    assert.equal(fs.statSync(f).mode & 0o777, 0o755, file);
    const text = fs.readFileSync(f, 'utf8');
    assert.match(text, /^#!\/bin\/sh\n/);
    assert.ok(text.includes(cfg.configDir), `${file} names the configuration directory`);
    assert.doesNotMatch(text, /password|secret/i);
  }
  const again = await ferrymail(cfg, ['hooks', 'install', '--root', root, 'networkmanager']);
  assert.match(again.stdout, /90-ferrymail unchanged/);
  const printed = await ferrymail(cfg, ['hooks', 'print', 'networkmanager']);
  assert.match(printed.stdout, /^# \/etc\/NetworkManager\/dispatcher\.d\/90-ferrymail\n#!\/bin\/sh/);
  assert.equal((await ferrymail(cfg, ['hooks', 'print', 'wicd'])).code, 64, 'an unknown tool');
});

test('a file that ferrymail did not write, or a symbolic link, is not replaced without --force', async () => {
  const other = tempDir('ferrymail-hooks-other-');
  const target = path.join(other, 'etc/NetworkManager/dispatcher.d/90-ferrymail');
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.writeFileSync(target, '#!/bin/sh\necho mine\n');
  const r = await ferrymail(cfg, ['hooks', 'install', '--root', other, 'networkmanager']);
  assert.equal(r.code, 64);
  assert.match(r.stderr, /was not written by ferrymail: not replaced/);
  assert.equal(fs.readFileSync(target, 'utf8'), '#!/bin/sh\necho mine\n');
  fs.rmSync(target);
  fs.symlinkSync('/etc/passwd', target);
  const link = await ferrymail(cfg, ['hooks', 'install', '--root', other, 'networkmanager']);
  assert.equal(link.code, 64);
  assert.match(link.stderr, /is a symbolic link/);
  assert.ok(fs.lstatSync(target).isSymbolicLink());
  const forced = await ferrymail(cfg, ['hooks', 'install', '--root', other, '--force', 'networkmanager']);
  assert.equal(forced.code, 0, forced.stderr);
  assert.ok(fs.lstatSync(target).isFile(), 'replaced by a file; the link’s target untouched');
});

test('with no daemon, every hook exits 0 at once, and recheck says so (69) unless --quiet', async () => {
  for (const h of RUNS) {
    const r = await run('/bin/sh', [path.join(root, h.file), ...h.args], { env: h.env, timeoutMs: 10_000 });
    assert.equal(r.code, 0, `${h.file}: ${r.stderr}`);
    assert.equal(r.stdout + r.stderr, '', 'a hook prints nothing');
  }
  const loud = await ferrymail(cfg, ['recheck']);
  assert.equal(loud.code, 69);
  assert.match(loud.stderr, /no daemon runs/);
  assert.equal((await ferrymail(cfg, ['recheck', '--quiet'])).code, 0);
});

test('each hook, run as its tool runs it, makes the daemon look at the network again', async () => {
  d = await startDaemon(cfg);
  for (const h of RUNS) {
    const r = await run('/bin/sh', [path.join(root, h.file), ...h.args], { env: h.env, timeoutMs: 10_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(await waitUntil(() => h.why.test(d!.log()), 10_000), `${h.file}: ${d!.log()}`);
  }
  // NetworkManager's other actions (pre-up, hostname) and ifupdown's loopback are not worth a look
  const before = (d.log().match(/network hook: looking again/g) ?? []).length;
  await run('/bin/sh', [path.join(root, RUNS[0]!.file), 'wlan0', 'hostname'], { timeoutMs: 10_000 });
  await run('/bin/sh', [path.join(root, RUNS[2]!.file)], { env: { IFACE: 'lo', MODE: 'start' }, timeoutMs: 10_000 });
  const r = await ferrymail(cfg, ['recheck', '--why', 'by hand']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(await waitUntil(() => /why="by hand"/.test(d!.log()), 10_000));
  assert.equal((d.log().match(/network hook: looking again/g) ?? []).length, before + 1, 'only the recheck by hand');
});

/** Whether systemd-analyze can verify units here. */
function analyzer(): string | null {
  const r = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? null : 'systemd-analyze is not installed';
}

test('the units pass systemd-analyze verify', { skip: analyzer() ?? false }, async () => {
  const dir = tempDir('ferrymail-units-');
  for (const user of [false, true]) {
    const r = await ferrymail(cfg, ['service', 'print', ...(user ? ['--user'] : [])]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Type=notify$/m);
    assert.match(r.stdout, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    assert.ok(r.stdout.includes(`--config-dir ${cfg.configDir} daemon`));
    const file = path.join(dir, 'ferrymail.service');
    fs.writeFileSync(file, r.stdout);
    // the manuals are checked on their own (man -l): here they may not be installed yet
    const v = spawnSync('systemd-analyze', ['verify', '--man=no', ...(user ? ['--user'] : []), file], {
      encoding: 'utf8',
      env: { ...process.env, SYSTEMD_LOG_LEVEL: 'warning' },
    });
    // lines about this unit only: the host's own units may have problems of their own
    const mine = `${v.stdout}${v.stderr}`.split('\n').filter((l) => l.includes('ferrymail.service'));
    assert.deepEqual(mine, [], `${user ? 'user' : 'system'} unit: ${v.stdout}${v.stderr}`);
  }
  const installed = await ferrymail(cfg, ['service', 'install', '--root', dir]);
  assert.equal(installed.code, 0, installed.stderr);
  assert.ok(fs.existsSync(path.join(dir, 'etc/systemd/system/ferrymail.service')));
});

test('the daemon tells systemd when it is ready, reloading and stopping', async () => {
  if (d) await stopDaemon(d);
  d = undefined;
  const dir = tempDir('ferrymail-notify-');
  const sock = path.join(dir, 'notify.sock');
  const log = path.join(dir, 'got');
  // a NOTIFY_SOCKET as systemd keeps it: each datagram recorded, a barrier's file descriptor closed
  const py = spawn(
    '/usr/bin/python3',
    [
      '-c',
      `
import socket, array, os, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(${JSON.stringify(sock)})
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print("ready", flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(64))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i"); fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds: os.close(fd)
    with open(${JSON.stringify(log)}, "a") as f: f.write(msg.decode() + "\\n--\\n")
`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    await new Promise<void>((r) => py.stdout.once('data', () => r()));
    const daemon = await startDaemon(cfg, [], { env: { NOTIFY_SOCKET: sock } });
    const got = (): string => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '');
    assert.ok(await waitUntil(() => /READY=1/.test(got()), 10_000), `no READY=1: ${got()}`);
    assert.match(got(), /STATUS=listening on 127\.0\.0\.1:\d+/);
    daemon.child.kill('SIGHUP');
    assert.ok(await waitUntil(() => (got().match(/READY=1/g) ?? []).length === 2, 10_000), got());
    assert.match(got(), /RELOADING=1[\s\S]*READY=1/);
    assert.equal(await daemon.stop(), 0);
    assert.match(got(), /STOPPING=1/);
    assert.doesNotMatch(daemon.log(), /systemd was not told/);
  } finally {
    py.kill('SIGKILL');
  }
});

test('service install --user starts a relay of one’s own with a settings file that turns notifications on', async () => {
  const root = tempDir('ferrymail-user-root-');
  const empty = tempDir('ferrymail-user-cfg-');
  const r = await run(
    process.execPath,
    [FERRYMAIL, '--config-dir', empty, 'service', 'install', '--user', '--root', root],
    {
      env: { HOME: '/home/ann', XDG_CONFIG_HOME: '' },
    },
  );
  assert.equal(r.code, 0, r.stderr);
  const unit = path.join(root, 'home/ann/.config/systemd/user/ferrymail.service');
  assert.match(fs.readFileSync(unit, 'utf8'), /^WantedBy=default\.target$/m);
  const settings = path.join(root, empty, 'ferrymail.yaml');
  assert.equal(fs.statSync(settings).mode & 0o777, 0o600);
  const check = await run(process.execPath, [
    FERRYMAIL,
    '--config-dir',
    path.dirname(settings),
    'config',
    'get',
    'desktop.notify',
  ]);
  assert.equal(check.stdout.trim(), 'true', check.stderr);
});
