// Interface facts read from /sys and /proc fixtures, the rules that turn them into a connection (SSID and
// probe included), the order of the online sources, the SSID tools, and the poll that notices changes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import type { InterfaceRule, OnlineSettings } from '../../src/domain/online.js';
import { readInterfaces, type FactSources } from '../../src/online/interfaces.js';
import { probe } from '../../src/online/probe.js';
import { connectionFromRules, type RuleChecks } from '../../src/online/rules.js';
import { wifiSsid, parseIwLink } from '../../src/online/ssid.js';
import { onlineView, stateChange } from '../../src/online/state.js';
import { serialCheck } from '../../src/daemon/auto-run.js';
import { watchNetwork } from '../../src/online/watch.js';
import { tempDir, waitUntil } from '../helpers.js';

type Addrs = ReturnType<FactSources['addresses']>;

/** A fake /sys/class/net and /proc/net with the given interfaces; returns the sources and the root. */
function fixture(): FactSources & { root: string; addrs: Record<string, { address: string }[]> } {
  const root = tempDir();
  const sys = path.join(root, 'sys');
  const iface = (name: string, operstate: string, extra: string[] = [], carrier = '1'): void => {
    fs.mkdirSync(path.join(sys, name), { recursive: true });
    fs.writeFileSync(path.join(sys, name, 'operstate'), `${operstate}\n`);
    fs.writeFileSync(path.join(sys, name, 'carrier'), `${carrier}\n`);
    for (const e of extra) fs.mkdirSync(path.join(sys, name, e));
  };
  iface('lo', 'unknown');
  iface('eth0', 'down', ['device'], '0');
  iface('wlan0', 'up', ['device', 'wireless']);
  iface('wlp2s0', 'up', ['device']); // wireless only by /proc/net/wireless
  iface('tun0', 'unknown');
  const route = path.join(root, 'route');
  fs.writeFileSync(
    route,
    'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
      'wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n' +
      'wlan0\t0001A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n' +
      'tun0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n',
  );
  const route6 = path.join(root, 'route6');
  fs.writeFileSync(
    route6,
    `${'0'.repeat(32)} 00 ${'0'.repeat(32)} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n`,
  );
  const wireless = path.join(root, 'wireless');
  fs.writeFileSync(
    wireless,
    'Inter-| sta-|   Quality        |   Discarded packets\n face | tus | link level noise |  nwid  crypt\n wlp2s0: 0000   70.  -40.  -256        0      0\n',
  );
  const addrs: Record<string, { address: string }[]> = {
    wlan0: [{ address: '192.168.1.23' }, { address: 'fd00::23' }, { address: 'fe80::23' }],
    wlp2s0: [{ address: 'fe80::99' }],
    tun0: [{ address: '10.8.0.5' }],
  };
  return {
    sysNet: sys,
    procRoute: route,
    procRoute6: route6,
    procWireless: wireless,
    addresses: () => addrs as unknown as Addrs,
    root,
    addrs,
  };
}

/** Checks that answer from tables and count what was asked. */
function checks(ssids: Record<string, string>, open: string[] = []): RuleChecks & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    ssid: async (i) => {
      asked.push(`ssid ${i}`);
      return ssids[i];
    },
    probe: async (t) => {
      asked.push(`probe ${t}`);
      return open.includes(t) ? null : 'ECONNREFUSED';
    },
  };
}

test('facts: link state, kind, addresses and default-route gateways', () => {
  const f = readInterfaces(fixture());
  const by = Object.fromEntries(f.map((x) => [x.name, x]));
  assert.deepEqual(by.wlan0, {
    name: 'wlan0',
    up: true,
    kind: 'wireless',
    addresses: ['192.168.1.23', 'fd00::23', 'fe80::23'],
    gateways: ['192.168.1.1', 'fe80::1'],
  });
  assert.equal(by.wlp2s0!.kind, 'wireless', '/proc/net/wireless lists it');
  assert.equal(by.eth0!.up, false);
  assert.equal(by.eth0!.kind, 'wired');
  assert.equal(by.lo!.kind, 'loopback');
  assert.equal(by.tun0!.up, true, 'a tunnel says "unknown" while it works');
  assert.deepEqual(by.tun0!.gateways, []);
  assert.deepEqual(readInterfaces({ ...fixture(), sysNet: '/nonexistent' }), []);
});

test('rules: the first rule that holds on some interface names the connection', async () => {
  const facts = readInterfaces(fixture());
  const cases: [InterfaceRule[], string | null][] = [
    [[{ connection: 'office', kind: 'wired' }], null],
    [[{ connection: 'home', kind: 'wireless', gateway: '192.168.1.1' }], 'home'],
    [[{ connection: 'home6', kind: 'wireless', gateway: 'FE80:0:0::1' }], 'home6'],
    [[{ connection: 'cafe', kind: 'wireless', gateway: '10.0.0.1' }], null],
    [[{ connection: 'vpn', interface: 'tun*', cidr: '10.8.0.0/24' }], null],
    [
      [
        { connection: 'vpn', interface: 'tun*', cidr: '10.8.0.0/24', default_route: false },
        { connection: 'home', kind: 'wireless' },
      ],
      'vpn',
    ],
    [[{ connection: 'lan', cidr: 'fd00::/8' }], 'lan'],
    [[{ connection: 'any' }], 'any'],
    [[{ connection: 'loop', interface: 'lo', default_route: false }], null],
    [[{ connection: 'linklocal', interface: 'wlp2s0', default_route: false }], null],
    [
      [
        { connection: 'first', interface: 'eth*' },
        { connection: 'second', interface: 'wl?n0' },
        { connection: 'third' },
      ],
      'second',
    ],
  ];
  for (const [rules, want] of cases) {
    const s = await connectionFromRules(rules, facts, checks({}));
    assert.equal(s.online ? s.connection : null, want, JSON.stringify(rules));
  }
});

test('rules: offline says why each rule failed', async () => {
  const facts = readInterfaces(fixture());
  const s = await connectionFromRules(
    [
      { connection: 'office', kind: 'wired' },
      { connection: 'vpn', interface: 'tun0' },
      { connection: 'cafe', gateway: '10.0.0.1', interface: 'wlan0' },
      { connection: 'x', interface: 'ppp*' },
    ],
    facts,
    checks({}),
  );
  assert.equal(s.online, false);
  assert.equal(
    s.why,
    'no rule holds (office: eth0 is down; vpn: tun0 has no default route; cafe: wlan0: gateway 192.168.1.1,fe80::1, not 10.0.0.1; x: no interface ppp*)',
  );
  const ok = await connectionFromRules(
    [{ connection: 'home', kind: 'wireless', cidr: '192.168.1.0/24' }],
    facts,
    checks({}),
  );
  assert.equal(ok.why, 'rule 1 (home): interface wlan0, default route via 192.168.1.1, address in 192.168.1.0/24');
});

test('rules: SSID is asked only of wireless interfaces that passed the other conditions; unknown does not match', async () => {
  const facts = readInterfaces(fixture());
  const c = checks({ wlan0: 'HomeNet' });
  const home = await connectionFromRules(
    [
      { connection: 'office', ssid: 'Corp', kind: 'wired' },
      { connection: 'home', ssid: 'HomeNet' },
    ],
    facts,
    c,
  );
  assert.equal(home.connection, 'home');
  assert.match(home.why!, /SSID "HomeNet"/);
  assert.deepEqual(
    c.asked,
    ['ssid wlan0'],
    'no SSID asked for the wired rule or for interfaces without a default route',
  );
  const other = await connectionFromRules(
    [{ connection: 'office', ssid: 'Corp' }],
    facts,
    checks({ wlan0: 'HomeNet' }),
  );
  assert.equal(other.online, false);
  assert.match(other.why!, /wlan0: SSID "HomeNet"/);
  const unknown = await connectionFromRules([{ connection: 'home', ssid: 'HomeNet' }], facts, checks({}));
  assert.equal(unknown.online, false);
  assert.match(unknown.why!, /SSID unknown/);
});

test('rules: a probe that fails makes the rule fail and the next one is tried', async () => {
  const facts = readInterfaces(fixture());
  const c = checks({}, ['relay.example:587']);
  const s = await connectionFromRules(
    [
      { connection: 'work', probe: 'mail.corp.example:25' },
      { connection: 'home', probe: 'relay.example:587' },
    ],
    facts,
    c,
  );
  assert.equal(s.connection, 'home');
  assert.deepEqual(c.asked, ['probe mail.corp.example:25', 'probe relay.example:587']);
  const none = await connectionFromRules(
    [{ connection: 'work', kind: 'wired', probe: 'mail.corp.example:25' }],
    facts,
    c,
  );
  assert.equal(none.online, false);
  assert.equal(c.asked.length, 2, 'no probe when the interface conditions fail');
});

test('probe: a listening port answers, a closed one does not', async () => {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  try {
    assert.equal(await probe(`127.0.0.1:${port}`, 2000), null);
  } finally {
    await new Promise((r) => server.close(r));
  }
  assert.equal(await probe(`127.0.0.1:${port}`, 2000), 'ECONNREFUSED');
  assert.equal(await probe('nonsense', 2000), 'not host:port');
});

test('SSID: iw output is parsed, iwgetid is the fallback, missing tools are "unknown"', async () => {
  assert.equal(
    parseIwLink('Connected to 00:11:22:33:44:55 (on wlan0)\n\tSSID: Caf\\xc3\\xa9 Wi\\x20Fi\n\tfreq: 2412\n'),
    'Café Wi Fi',
  );
  assert.equal(parseIwLink('Not connected.\n'), undefined);
  const bin = tempDir();
  const script = (name: string, body: string): void =>
    fs.writeFileSync(path.join(bin, name), `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  script(
    'iw',
    '[ "$1 $2 $3" = "dev wlan0 link" ] || exit 1\nprintf "Connected to aa:bb (on wlan0)\\n\\tSSID: HomeNet\\n"',
  );
  assert.equal(await wifiSsid('wlan0', { path: `${bin}:/bin:/usr/bin` }), 'HomeNet');
  assert.equal(await wifiSsid('wlan9', { path: `${bin}:/bin:/usr/bin` }), undefined, 'iw fails: unknown');
  fs.rmSync(path.join(bin, 'iw'));
  script('iwgetid', '[ "$1 $2" = "-r wlan0" ] && echo Office');
  assert.equal(await wifiSsid('wlan0', { path: `${bin}:/bin:/usr/bin` }), 'Office');
  fs.rmSync(path.join(bin, 'iwgetid'));
  assert.equal(await wifiSsid('wlan0', { path: bin }), undefined, 'no tool at all: unknown, no throw');
  script('iw', 'sleep 5');
  assert.equal(
    await wifiSsid('wlan0', { path: `${bin}:/bin:/usr/bin`, timeoutMs: 200 }),
    undefined,
    'a hung tool is killed',
  );
});

test('sources in order: forced, command, state file (when present), rules; SSIDs cached until forget()', async () => {
  const fx = fixture();
  const stateFile = path.join(fx.root, 'online');
  const rules: InterfaceRule[] = [{ connection: 'home', ssid: 'HomeNet' }];
  let asked = 0;
  let clock = 1_000_000;
  const deps = { facts: fx, ssid: async () => (asked++, 'HomeNet'), probe: async () => null, now: () => clock };
  const settings = (o: Partial<OnlineSettings>): OnlineSettings => ({
    command: [],
    rules: [],
    probe_timeout: 500,
    ...o,
  });
  const node = process.execPath;
  const both = onlineView(
    settings({ command: [node, '-e', 'console.log("cmd")'], state_file: stateFile, rules }),
    deps,
  );
  assert.equal((await both.state('forced')).connection, 'forced');
  assert.equal((await both.state()).connection, 'cmd', 'the command decides over file and rules');
  const fileAndRules = onlineView(settings({ state_file: stateFile, rules }), deps);
  assert.equal((await fileAndRules.state()).connection, 'home', 'missing file: the rules decide');
  fs.writeFileSync(stateFile, '\n');
  assert.equal((await fileAndRules.state()).online, false, 'an empty file is an answer: offline');
  fs.writeFileSync(stateFile, 'cafe\n');
  assert.equal((await fileAndRules.state()).connection, 'cafe');
  fs.rmSync(stateFile);
  const onlyRules = onlineView(settings({ rules }), deps);
  await onlyRules.state();
  await onlyRules.state();
  assert.equal(asked, 2, 'once for fileAndRules, once for onlyRules: cached between states');
  onlyRules.forget();
  await onlyRules.state();
  assert.equal(asked, 3, 'asked again after forget()');
  clock += 30_000;
  await onlyRules.state();
  assert.equal(asked, 3, 'still cached half a minute later');
  clock += 30_000;
  await onlyRules.state();
  assert.equal(asked, 4, 'asked again after a minute, change or not');
  assert.match((await onlineView(settings({})).state()).why!, /no online source configured/);
  assert.match((await onlineView(settings({ state_file: stateFile })).state()).why!, /missing/);
});

test('watch: without ip, a poll of the facts notices a change, and only a change', async () => {
  const fx = fixture();
  let changes = 0;
  const modes: string[] = [];
  const w = watchNetwork(() => changes++, {
    ip: '/nonexistent/ip',
    facts: fx,
    pollMs: 50,
    debounceMs: 20,
    onMode: (m) => modes.push(m),
  });
  try {
    assert.ok(
      await waitUntil(() => w.mode() === 'poll' && changes === 1, 5000),
      'falls back to polling and checks once',
    );
    assert.deepEqual(modes, ['poll']);
    fs.writeFileSync(path.join(fx.sysNet, 'eth0', 'operstate'), 'up\n');
    assert.ok(await waitUntil(() => changes === 2, 5000), 'a link coming up is a change');
    fx.addrs.eth0 = [{ address: '10.1.1.5' }];
    assert.ok(await waitUntil(() => changes === 3, 5000), 'a new address is a change');
    fs.appendFileSync(fx.procRoute, 'eth0\t00000000\t0101010A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n');
    assert.ok(await waitUntil(() => changes === 4, 5000), 'a new default route is a change');
  } finally {
    w.stop();
  }
});

test('the real machine can be read without blocking or throwing', () => {
  const f = readInterfaces();
  assert.ok(Array.isArray(f));
  assert.ok(f.every((x) => typeof x.name === 'string' && typeof x.up === 'boolean'));
});

test('state changes: only online/offline or the connection moves; a new reason is only logged', () => {
  const home = { online: true, connection: 'home', why: 'rule 1 (home): interface wlan0' };
  assert.equal(stateChange(null, home), 'reason');
  assert.equal(stateChange(home, { ...home }), 'same');
  assert.equal(stateChange(home, { ...home, why: 'rule 2 (home): interface eth0' }), 'reason');
  assert.equal(stateChange(home, { ...home, connection: 'office' }), 'moved');
  assert.equal(stateChange(home, { online: false, why: 'no rules' }), 'moved');
  assert.equal(stateChange({ online: false, why: 'a' }, { online: false, why: 'b' }), 'reason');
});

test('a burst of change events costs at most two state computations, and the last one sees the end', async () => {
  let calls = 0;
  let release: (() => void) | null = null;
  const seen: number[] = [];
  const view = {
    state: () =>
      new Promise<{ online: boolean; why: string }>((resolve) => {
        const n = ++calls;
        release = () => resolve({ online: false, why: String(n) });
      }),
    forget: () => undefined,
  };
  const check = serialCheck(view, (s) => seen.push(Number(s.why)));
  for (let i = 0; i < 100; i++) check();
  assert.equal(calls, 1, 'one computation at a time');
  release!();
  assert.ok(await waitUntil(() => calls === 2, 2000), 'events during it ask for exactly one more');
  for (let i = 0; i < 100; i++) check();
  release!();
  assert.ok(await waitUntil(() => calls === 3, 2000));
  release!();
  assert.ok(await waitUntil(() => seen.length === 3, 2000));
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(calls, 3, 'nothing more without new events');
});

test('watch: a stream of events without a pause is still reported, not held back forever', async () => {
  const fx = fixture();
  let changes = 0;
  const w = watchNetwork(() => changes++, {
    ip: '/nonexistent/ip',
    facts: fx,
    pollMs: 10,
    debounceMs: 100,
    maxWaitMs: 300,
  });
  try {
    // the fallback's own first check
    assert.ok(await waitUntil(() => changes === 1, 5000));
    // change the facts every 10 ms (faster than the debounce) until a report arrives
    let n = 0;
    const ok = await waitUntil(
      () => {
        fs.writeFileSync(path.join(fx.sysNet, 'eth0', 'operstate'), n++ % 2 ? 'up\n' : 'down\n');
        return changes >= 2;
      },
      10_000,
      10,
    );
    assert.ok(ok, 'reported while the events go on');
  } finally {
    w.stop();
  }
});

test('watch with leading: the first event of a burst is reported at once, the end of it after the pause', async () => {
  const fx = fixture();
  const at: number[] = [];
  const w = watchNetwork(() => at.push(Date.now()), {
    ip: '/nonexistent/ip',
    facts: fx,
    pollMs: 20,
    debounceMs: 400,
    leading: true,
  });
  try {
    // the fallback's own first check: a leading report and a trailing one
    assert.ok(await waitUntil(() => at.length === 2, 5000), String(at.length));
    const t0 = Date.now();
    fs.writeFileSync(path.join(fx.sysNet, 'eth0', 'operstate'), 'up\n');
    assert.ok(await waitUntil(() => at.length === 3, 5000));
    assert.ok(await waitUntil(() => at.length === 4, 5000), 'and the end of the burst');
    assert.ok(at[3]! - at[2]! >= 350, `the trailing report waits for the pause (${at[3]! - at[2]!} ms)`);
    assert.ok(at[2]! - t0 < at[3]! - t0, 'the leading report comes first');
  } finally {
    w.stop();
  }
});
