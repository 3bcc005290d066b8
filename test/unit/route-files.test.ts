// Route files: parsing, order, every problem with its file and line; and route explain end to end.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { loadRoutes } from '../../src/config/routes.js';
import { ferrymail, makeConfig, ROOT, routeIssues, tempDir } from '../helpers.js';

/** A configuration directory with the given route files. */
function withRoutes(files: Record<string, string>): string {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'routes'));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, 'routes', name), text);
  return dir;
}

test('route files load in file-name order with their keys', () => {
  const dir = withRoutes({
    '20-home.yaml':
      'name: home-isp\nconnections: [home]\nrewrite:\n  envelope_sender:\n    "*@laptop.local": "*@isp.example"\n    alice: a@isp.example\ntransport:\n  type: smtp\n  host: smtp.isp.example\n  port: 587\n',
    '10-lan.yaml':
      'permanent: true\nallowed_recipients: ["*@lan.example"]\ndenied_senders: ["<>"]\nlast_route: true\nuncertain: hold\n',
    'README.txt': 'not a route',
  });
  const routes = loadRoutes(dir);
  assert.deepEqual(
    routes.map((r) => r.name),
    ['10-lan', 'home-isp'],
  );
  assert.equal(routes[0]!.permanent, true);
  assert.equal(routes[0]!.lastRoute, true);
  assert.deepEqual(
    routes.map((r) => r.uncertain),
    ['hold', 'retry'],
    'uncertain: hold, or retry by default',
  );
  assert.deepEqual(routes[0]!.senders, { allow: [], deny: ['<>'] });
  assert.deepEqual(routes[1]!.rewrite.envelopeSender, [
    ['*@laptop.local', '*@isp.example'],
    ['alice', 'a@isp.example'],
  ]);
  assert.deepEqual(routes[1]!.transport, { type: 'smtp', host: 'smtp.isp.example', port: 587 });
  assert.deepEqual(loadRoutes(tempDir()), [], 'no routes folder: no routes');
});

test('every problem of every route file is reported with file, line and key', () => {
  const dir = withRoutes({
    'a.yaml': 'connections: home\npermanent: yes please\ncolour: red\n',
    'b.yaml': 'name: a\nconnections: [x]\nrewrite:\n  frm: {}\n',
    'c.yaml': 'allowed_senders: ["*"]\nuncertain: maybe\n',
  });
  const got = routeIssues(dir);
  for (const want of [
    /^a\.yaml: colour@3: unknown key/,
    /^a\.yaml: connections@1: must be a list of strings/,
    /^a\.yaml: permanent@2: must be true or false/,
    /^b\.yaml: rewrite\.frm@4: unknown map/,
    /^c\.yaml: connections@1: name the connections/,
    /^c\.yaml: uncertain@2: must be retry, retry-any or hold/,
    /^name@-: route name a is used twice/,
  ]) {
    assert.ok(
      got.some((g) => want.test(g)),
      `${want} in ${JSON.stringify(got)}`,
    );
  }
});

test('the transport section: every key known and typed, and the combinations that make sense', () => {
  const section = (lines: string[]): string => `permanent: true\ntransport:\n${lines.map((l) => `  ${l}\n`).join('')}`;
  const dir = withRoutes({
    'a.yaml': section([
      'type: smtp',
      'host: relay.example',
      'port: "587"',
      'tls: starttls-please',
      'colour: red',
      'connections: 0',
    ]),
    'b.yaml': section([
      'type: smtp',
      'user: alice',
      'password_file: /etc/ferrymail/pw',
      'password_env: RELAY_PW',
      'auth_method: digest-md5',
    ]),
    'c.yaml': section([
      'type: lmtp',
      'socket: run/lmtp.sock',
      'host: x.example',
      'port: 24',
      'mx: true',
      'command: [procmail]',
    ]),
    'd.yaml': section([
      'type: smtp',
      'mx: true',
      'tls: none',
      'fingerprint: "12:34"',
      'connect_timeout: 0',
      'helo: "bad name"',
    ]),
    'e.yaml': section(['type: pipe', 'host: x.example']),
    'f.yaml': section([
      'type: smtp',
      'host: relay.example',
      'port: 465',
      'tls: smtps',
      'user: bob',
      'password_command: [pass, show, relay]',
      `fingerprint: "${'AB:'.repeat(31)}AB"`,
      'auth_method: xoauth2',
      'connections: 4',
      'greeting_timeout: 5',
      'helo: laptop.example.org',
    ]),
    'g.yaml': section(['type: smtp', 'host: relay.example', 'port: 25', 'user: bob']),
    'h.yaml': section([
      'type: smtp',
      'host: relay.example',
      'port: 25',
      'proxy: "http://127.0.0.1:8080"',
      'tls_name: "bad name"',
    ]),
    'i.yaml': section(['type: lmtp', 'socket: /run/lmtp.sock', 'proxy: "socks5://127.0.0.1:1080"']),
    'j.yaml': section([
      'type: smtp',
      'host: smtp.corp.example',
      'port: 587',
      'tls: starttls',
      'proxy: "socks5h://[::1]:1080"',
      'tls_name: smtp.corp.example',
    ]),
  });
  const got = routeIssues(dir);
  const want = [
    /^a\.yaml: transport\.port@5: must be a whole number from 1 to 65535/,
    /^a\.yaml: transport\.tls@6: must be one of starttls, opportunistic, smtps, none/,
    /^a\.yaml: transport\.colour@7: unknown key/,
    /^a\.yaml: transport\.connections@8: must be a whole number from 1 to 100/,
    /^b\.yaml: transport\.password_env@6: password_file and password_env exclude each other/,
    /^b\.yaml: transport\.auth_method@7: must be one of plain, login, cram-md5, xoauth2/,
    /^b\.yaml: transport@-?\d*: needs where to deliver: host and port, socket, or mx: true/,
    /^c\.yaml: transport\.socket@4: must be an absolute path/,
    /^c\.yaml: transport\.mx@7: is not a key of type lmtp/,
    /^c\.yaml: transport\.command@8: is not a key of type lmtp/,
    /^c\.yaml: transport\.socket@4: host and socket and mx exclude each other/,
    /^d\.yaml: transport\.fingerprint@6: must be a SHA-256 fingerprint/,
    /^d\.yaml: transport\.connect_timeout@7: must be a number of seconds/,
    /^d\.yaml: transport\.helo@8: must be a host name/,
    /^d\.yaml: transport\.fingerprint@6: fingerprint needs TLS, but tls is none/,
    /^e\.yaml: transport\.host@4: is not a key of type pipe/,
    /^e\.yaml: transport@\d+: type pipe needs command/,
    /^g\.yaml: transport\.user@6: user needs password_file, password_command or password_env/,
    /^h\.yaml: transport\.proxy@6: must be socks5:\/\/host:port/,
    /^h\.yaml: transport\.tls_name@7: must be a host name/,
    /^i\.yaml: transport\.proxy@5: a unix socket is reached directly/,
  ];
  for (const w of want)
    assert.ok(
      got.some((g) => w.test(g)),
      `${w} in ${JSON.stringify(got, null, 1)}`,
    );
  for (const ok of ['f.yaml', 'j.yaml'])
    assert.ok(
      !got.some((g) => g.startsWith(ok)),
      `${ok} is valid: ${JSON.stringify(got.filter((g) => g.startsWith(ok)))}`,
    );
});

test('ferrymail route explain: routes per recipient, rewritten sender and From, or why it waits', async () => {
  const cfg = await makeConfig();
  fs.mkdirSync(path.join(cfg.configDir, 'routes'));
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '10-lan.yaml'),
    'permanent: true\nallowed_recipients: ["*@lan.example"]\n',
  );
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '20-home.yaml'),
    'name: home-isp\nconnections: [home]\nrewrite:\n  envelope_sender:\n    "*@laptop.local": "*@isp.example"\n  from:\n    alice: alice.smith@isp.example\n',
  );
  const args = [
    'route',
    'explain',
    '--from',
    'alice@laptop.local',
    '--to',
    'bob@x.org',
    'c@lan.example',
    '--header-from',
    'Alice <alice@laptop.local>',
  ];
  const home = await ferrymail(cfg, [...args, '--connection', 'home', '--json']);
  assert.equal(home.code, 0, home.stderr);
  const j = JSON.parse(home.stdout);
  assert.deepEqual(j.recipients[0], {
    recipient: 'bob@x.org',
    routes: ['home-isp'],
    envelope_sender: 'alice@isp.example',
    header_from: ['Alice <alice.smith@isp.example>'],
  });
  assert.deepEqual(j.recipients[1].routes, ['10-lan', 'home-isp']);
  // without --connection: the connection the host is on now (here none)
  const off = await ferrymail(cfg, args);
  assert.equal(off.code, 0, off.stderr);
  assert.match(off.stdout, /<bob@x\.org>: waits: offline/);
  // --header-from as a header value: allowed_from sees the address inside it
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '30-personal.yaml'),
    'name: personal\nconnections: [home]\nallowed_from: ["*@personal.example"]\n',
  );
  fs.writeFileSync(
    path.join(cfg.configDir, 'routes', '20-home.yaml'),
    'name: home-isp\nconnections: [home]\ndenied_from: ["*@personal.example"]\n',
  );
  const personal = await ferrymail(cfg, [
    'route',
    'explain',
    '--from',
    'alice@laptop.local',
    '--to',
    'bob@x.org',
    '--header-from',
    'Alice <alice@personal.example>',
    '--connection',
    'home',
    '--json',
  ]);
  assert.equal(personal.code, 0, personal.stderr);
  assert.deepEqual(JSON.parse(personal.stdout).recipients[0].routes, ['personal']);
  assert.match(off.stdout, /<c@lan\.example>: via 10-lan/);
  const bad = await ferrymail(cfg, ['route', 'explain', '--from', 'not an address', '--to', 'b@x.org']);
  assert.equal(bad.code, 64);
});

test("config check notes a route whose maps can never match this host's own senders", async () => {
  const cfg = await makeConfig();
  fs.mkdirSync(path.join(cfg.configDir, 'routes'), { recursive: true });
  fs.copyFileSync(
    path.join(ROOT, 'routes', '20-home-isp.yaml'),
    path.join(cfg.configDir, 'routes', '20-home-isp.yaml'),
  );
  const r = await ferrymail(cfg, ['config', 'check']);
  assert.match(
    r.stderr,
    /note: route home-isp rewrites \*@laptop\.local, .*USER@test\.example: nothing of it would be rewritten/,
  );
  fs.writeFileSync(
    path.join(cfg.configDir, 'ferrymail.yaml'),
    fs
      .readFileSync(path.join(cfg.configDir, 'ferrymail.yaml'), 'utf8')
      .replace('hostname: test.example', 'hostname: laptop.local'),
  );
  const ok = await ferrymail(cfg, ['config', 'check']);
  assert.doesNotMatch(ok.stderr, /note:/);
});
