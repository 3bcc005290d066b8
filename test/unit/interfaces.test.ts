// Interface facts read from /sys and /proc fixtures, and the rules that turn them into a connection.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { connectionFromInterfaces, readInterfaces, type FactSources } from '../../src/online/interfaces.js';
import { tempDir } from '../helpers.js';

/** A fake /sys/class/net and /proc/net with the given interfaces. */
function fixture(): FactSources {
  const root = tempDir();
  const sys = path.join(root, 'sys');
  const iface = (name: string, operstate: string, extra: string[] = [], carrier = '1'): void => {
    fs.mkdirSync(path.join(sys, name), { recursive: true });
    fs.writeFileSync(path.join(sys, name, 'operstate'), operstate + '\n');
    fs.writeFileSync(path.join(sys, name, 'carrier'), carrier + '\n');
    for (const e of extra) fs.mkdirSync(path.join(sys, name, e));
  };
  iface('lo', 'unknown');
  iface('eth0', 'down', ['device'], '0');
  iface('wlan0', 'up', ['device', 'wireless']);
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
  fs.writeFileSync(route6, `${'0'.repeat(32)} 00 ${'0'.repeat(32)} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wlan0\n`);
  const addrs = {
    wlan0: [{ address: '192.168.1.23' }, { address: 'fd00::23' }],
    tun0: [{ address: '10.8.0.5' }],
  } as unknown as ReturnType<FactSources['addresses']>;
  return { sysNet: sys, procRoute: route, procRoute6: route6, addresses: () => addrs };
}

test('facts: link state, kind, addresses and default-route gateways', () => {
  const f = readInterfaces(fixture());
  const by = Object.fromEntries(f.map((x) => [x.name, x]));
  assert.deepEqual(by.wlan0, { name: 'wlan0', up: true, kind: 'wireless', addresses: ['192.168.1.23', 'fd00::23'], gateways: ['192.168.1.1', 'fe80::1'] });
  assert.equal(by.eth0!.up, false);
  assert.equal(by.eth0!.kind, 'wired');
  assert.equal(by.lo!.kind, 'loopback');
  assert.equal(by.tun0!.up, true, 'a tunnel says "unknown" while it works');
  assert.deepEqual(by.tun0!.gateways, []);
  assert.deepEqual(readInterfaces({ ...fixture(), sysNet: '/nonexistent' }), []);
});

test('rules: first rule that some interface satisfies names the connection', () => {
  const facts = readInterfaces(fixture());
  const cases: [Parameters<typeof connectionFromInterfaces>[0], string | null][] = [
    [[{ connection: 'office', kind: 'wired' }], null],
    [[{ connection: 'home', kind: 'wireless', gateway: '192.168.1.1' }], 'home'],
    [[{ connection: 'cafe', kind: 'wireless', gateway: '10.0.0.1' }], null],
    [[{ connection: 'vpn', interface: 'tun*', cidr: '10.8.0.0/24' }, { connection: 'home', kind: 'wireless' }], 'vpn'],
    [[{ connection: 'home6', cidr: 'fd00::/8' }], 'home6'],
    [[{ connection: 'any', interface: 'tun0' }], null],
    [[{ connection: 'loop', interface: 'lo', cidr: '127.0.0.0/8' }], null],
  ];
  for (const [rules, want] of cases) {
    const s = connectionFromInterfaces(rules, facts);
    assert.equal(s.online ? s.connection : null, want, JSON.stringify(rules));
  }
});

test('the real machine can be read without blocking or throwing', () => {
  const f = readInterfaces();
  assert.ok(Array.isArray(f));
  assert.ok(f.every((x) => typeof x.name === 'string' && typeof x.up === 'boolean'));
});
