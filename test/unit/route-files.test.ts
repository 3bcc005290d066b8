// Route files: parsing, order, every problem with its file and line; and route explain end to end.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError } from '../../src/config/load.js';
import { loadRoutes } from '../../src/config/routes.js';
import { ferrymail, makeConfig, tempDir } from '../helpers.js';

/** A configuration directory with the given route files. */
function withRoutes(files: Record<string, string>): string {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'routes'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, 'routes', name), text);
  return dir;
}

test('route files load in file-name order with their keys', () => {
  const dir = withRoutes({
    '20-home.yaml': 'name: home-isp\nconnections: [home]\nrewrite:\n  envelope_sender:\n    "*@laptop.local": "*@isp.example"\n    alice: a@isp.example\ntransport:\n  type: smtp\n',
    '10-lan.yaml': 'permanent: true\nallowed_recipients: ["*@lan.example"]\ndenied_senders: ["<>"]\nlast_route: true\nuncertain: hold\n',
    'README.txt': 'not a route',
  });
  const routes = loadRoutes(dir);
  assert.deepEqual(routes.map((r) => r.name), ['10-lan', 'home-isp']);
  assert.equal(routes[0]!.permanent, true);
  assert.equal(routes[0]!.lastRoute, true);
  assert.deepEqual(routes.map((r) => r.uncertain), ['hold', 'retry'], 'uncertain: hold, or retry by default');
  assert.deepEqual(routes[0]!.senders, { allow: [], deny: ['<>'] });
  assert.deepEqual(routes[1]!.rewrite.envelopeSender, [['*@laptop.local', '*@isp.example'], ['alice', 'a@isp.example']]);
  assert.deepEqual(routes[1]!.transport, { type: 'smtp' });
  assert.deepEqual(loadRoutes(tempDir()), [], 'no routes folder: no routes');
});

test('every problem of every route file is reported with file, line and key', () => {
  const dir = withRoutes({
    'a.yaml': 'connections: home\npermanent: yes please\ncolour: red\n',
    'b.yaml': 'name: a\nconnections: [x]\nrewrite:\n  frm: {}\n',
    'c.yaml': 'allowed_senders: ["*"]\nuncertain: maybe\n',
  });
  try {
    loadRoutes(dir);
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    const got = err.issues.map((i) => `${i.key}@${i.line ?? '-'}: ${i.message}`);
    for (const want of [
      /^a\.yaml: colour@3: unknown key/,
      /^a\.yaml: connections@1: must be a list of strings/,
      /^a\.yaml: permanent@2: must be true or false/,
      /^b\.yaml: rewrite\.frm@4: unknown map/,
      /^c\.yaml: connections@1: name the connections/,
      /^c\.yaml: uncertain@2: must be retry or hold/,
      /^name@-: route name a is used twice/,
    ]) {
      assert.ok(got.some((g) => want.test(g)), `${want} in ${JSON.stringify(got)}`);
    }
  }
});

test('ferrymail route explain: routes per recipient, rewritten sender and From, or why it waits', async () => {
  const cfg = await makeConfig();
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  fs.writeFileSync(path.join(cfg.configDir, 'routes', '10-lan.yaml'), 'permanent: true\nallowed_recipients: ["*@lan.example"]\n');
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '20-home.yaml'),
    'name: home-isp\nconnections: [home]\nrewrite:\n  envelope_sender:\n    "*@laptop.local": "*@isp.example"\n  from:\n    alice: alice.smith@isp.example\n',
  );
  const args = ['route', 'explain', '--from', 'alice@laptop.local', '--to', 'bob@x.org', 'c@lan.example', '--header-from', 'Alice <alice@laptop.local>'];
  const home = await ferrymail(cfg, [...args, '--connection', 'home', '--json']);
  assert.equal(home.code, 0, home.stderr);
  const j = JSON.parse(home.stdout);
  assert.deepEqual(j.recipients[0], { recipient: 'bob@x.org', routes: ['home-isp'], envelope_sender: 'alice@isp.example', header_from: ['Alice <alice.smith@isp.example>'] });
  assert.deepEqual(j.recipients[1].routes, ['10-lan', 'home-isp']);
  const off = await ferrymail(cfg, args);
  assert.equal(off.code, 0, off.stderr);
  assert.match(off.stdout, /<bob@x\.org>: waits: offline/);
  assert.match(off.stdout, /<c@lan\.example>: via 10-lan/);
  const bad = await ferrymail(cfg, ['route', 'explain', '--from', 'not an address', '--to', 'b@x.org']);
  assert.equal(bad.code, 64);
});
