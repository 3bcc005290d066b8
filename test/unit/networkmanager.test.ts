// NetworkManager's facts from recorded nmcli output (terse mode), and rules over them, as tables: a
// captive portal, limited connectivity, a metered phone hotspot, connection ids with globs, no
// NetworkManager at all. nmcli itself is asked through a stand-in on PATH.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { InterfaceRule } from '../../src/domain/online.js';
import type { InterfaceFacts } from '../../src/online/interfaces.js';
import { type NmFacts, nmFacts, parseConnectivity, parseDeviceShow } from '../../src/online/nm.js';
import { connectionFromRules } from '../../src/online/rules.js';
import { tempDir } from '../helpers.js';

/** Recorded `nmcli -t -f GENERAL.DEVICE,GENERAL.CONNECTION,GENERAL.METERED device show`. */
const DEVICES = [
  'GENERAL.DEVICE:wlp2s0',
  'GENERAL.CONNECTION:Pixel 7 hotspot',
  'GENERAL.METERED:yes (guessed)',
  '',
  'GENERAL.DEVICE:enp0s31f6',
  'GENERAL.CONNECTION:Office\\: wired',
  'GENERAL.METERED:no',
  '',
  'GENERAL.DEVICE:lo',
  'GENERAL.CONNECTION:lo',
  'GENERAL.METERED:unknown',
  '',
  'GENERAL.DEVICE:wlan1',
  'GENERAL.CONNECTION:--',
  'GENERAL.METERED:unknown',
  '',
].join('\n');

test('nmcli output: devices, escaped colons, metered guesses, no connection', () => {
  const d = parseDeviceShow(DEVICES);
  assert.deepEqual(d.get('wlp2s0'), { connection: 'Pixel 7 hotspot', metered: true });
  assert.deepEqual(d.get('enp0s31f6'), { connection: 'Office: wired', metered: false });
  assert.deepEqual(d.get('lo'), { connection: 'lo' });
  assert.deepEqual(d.get('wlan1'), {});
  const cases: Array<[string, string]> = [
    ['full\n', 'full'],
    ['portal\n', 'portal'],
    ['limited', 'limited'],
    ['none\n', 'none'],
    ['unknown\n', 'unknown'],
    ['garbage\n', 'unknown'],
  ];
  for (const [text, want] of cases) assert.equal(parseConnectivity(text), want, text);
});

const wifi: InterfaceFacts = {
  name: 'wlp2s0',
  up: true,
  kind: 'wireless',
  addresses: ['192.168.43.20'],
  gateways: ['192.168.43.1'],
};
const wired: InterfaceFacts = {
  name: 'enp0s31f6',
  up: true,
  kind: 'wired',
  addresses: ['10.1.2.3'],
  gateways: ['10.1.2.1'],
};

/** The facts NetworkManager gives, with a connectivity. */
const nm = (connectivity: NmFacts['connectivity']): NmFacts => ({ connectivity, devices: parseDeviceShow(DEVICES) });

test('rules over NetworkManager facts', async () => {
  const rules: InterfaceRule[] = [
    { connection: 'office', nm_connection: 'Office*' },
    { connection: 'phone', kind: 'wireless', metered: true },
    { connection: 'home', kind: 'wireless', metered: false },
  ];
  const cases: Array<{ name: string; facts: InterfaceFacts[]; nm: NmFacts | undefined; want: string | RegExp }> = [
    { name: 'the office by its connection id', facts: [wired, wifi], nm: nm('full'), want: 'office' },
    { name: 'the hotspot, metered', facts: [wifi], nm: nm('full'), want: 'phone' },
    {
      name: 'a captive portal is not online',
      facts: [wifi],
      nm: nm('portal'),
      want: /NetworkManager connectivity is portal/,
    },
    { name: 'limited connectivity is not online', facts: [wired], nm: nm('limited'), want: /connectivity is limited/ },
    { name: 'unknown connectivity does not stop a rule', facts: [wifi], nm: nm('unknown'), want: 'phone' },
    {
      name: 'no NetworkManager: rules naming its facts do not hold',
      facts: [wifi, wired],
      nm: undefined,
      want: /NetworkManager facts unknown/,
    },
  ];
  for (const c of cases) {
    const s = await connectionFromRules(rules, c.facts, {
      ssid: async () => undefined,
      probe: async () => null,
      nm: async () => c.nm,
    });
    if (typeof c.want === 'string') assert.equal(s.connection, c.want, `${c.name}: ${s.why}`);
    else {
      assert.equal(s.online, false, c.name);
      assert.match(s.why ?? '', c.want, c.name);
    }
  }
  const lanOnly = await connectionFromRules([{ connection: 'lan', default_route: false }], [wifi], {
    ssid: async () => undefined,
    probe: async () => null,
    nm: async () => nm('portal'),
  });
  assert.equal(lanOnly.connection, 'lan', 'a rule without a default route does not care for the portal');
  const ignoring = await connectionFromRules([{ connection: 'any', nm_connectivity: false }], [wifi], {
    ssid: async () => undefined,
    probe: async () => null,
    nm: async () => nm('limited'),
  });
  assert.equal(ignoring.connection, 'any', 'nm_connectivity: false');
});

test('nmcli is asked through PATH; without it there are no facts', async () => {
  const dir = tempDir('ferrymail-nmcli-');
  const stand = path.join(dir, 'nmcli');
  fs.writeFileSync(path.join(dir, 'devices'), DEVICES);
  fs.writeFileSync(
    stand,
    `#!/bin/sh\ncase "$*" in\n  *connectivity*) echo portal ;;\n  *"device show"*) /bin/cat '${dir}/devices' ;;\n  *) exit 2 ;;\nesac\n`,
    { mode: 0o755 },
  );
  const got = await nmFacts({ path: dir });
  assert.equal(got?.connectivity, 'portal');
  assert.equal(got?.devices.get('wlp2s0')?.connection, 'Pixel 7 hotspot');
  assert.equal(await nmFacts({ path: tempDir('ferrymail-empty-') }), undefined);
});
