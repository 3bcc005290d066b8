// Configuration: defaults, validation with every error and its line, -C files, config set.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load.js';
import { configSet, jsonSchema } from '../../src/config/store.js';
import { FIELDS } from '../../src/config/schema.js';
import { validateSettings } from '../../src/config/validate.js';
import { tempDir } from '../helpers.js';

test('no file: the embedded default listens on loopback 2525', () => {
  const dir = tempDir();
  const cfg = loadConfig(dir);
  assert.equal(cfg.fromFile, false);
  assert.deepEqual(cfg.listen, ['127.0.0.1:2525', '[::1]:2525']);
  assert.equal(cfg.limits.message_size, 52_428_800);
  assert.equal(cfg.smtp.bare_line_ends, 'reject');
  assert.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.limits));
});

test('relative paths are taken from the configuration directory', () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'ferrymail.yaml'), 'spool: sp\n');
  assert.equal(loadConfig(dir).spool, path.join(dir, 'sp'));
});

test('every error is reported at once, with its line and key', () => {
  const dir = tempDir();
  fs.writeFileSync(
    path.join(dir, 'ferrymail.yaml'),
    [
      '# comment',
      'listen: ["127.0.0.1:99999", "nonsense"]',
      'limits:',
      '  recipients: -1',
      '  bogus: 1',
      'smtp:',
      '  bare_line_ends: maybe',
      'colour: blue',
      '',
    ].join('\n'),
  );
  try {
    loadConfig(dir);
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    const got = err.issues.map((i) => `${i.line}:${i.key}`).sort();
    assert.deepEqual(
      got,
      [
        '2:listen[0]',
        '2:listen[1]',
        '4:limits.recipients',
        '5:limits.bogus',
        '7:smtp.bare_line_ends',
        '8:colour',
      ].sort(),
    );
    assert.match(err.message, /and 5 more/);
  }
});

test('YAML syntax errors carry their line', () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'ferrymail.yaml'), 'hostname: a\nlisten: [unclosed\n');
  assert.throws(
    () => loadConfig(dir),
    (e: unknown) =>
      e instanceof ConfigError && e.issues.some((i) => i.key === '(syntax)' && typeof i.line === 'number'),
  );
});

test('tls.cert without tls.key and unreadable files are errors', () => {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'ferrymail.yaml'), 'tls:\n  cert: nothere.pem\n');
  assert.throws(
    () => loadConfig(dir),
    (e: unknown) => e instanceof ConfigError && e.issues.length === 2,
  );
});

test('-C FILE names a settings file directly', () => {
  const dir = tempDir();
  const f = path.join(dir, 'other.yaml');
  fs.writeFileSync(f, 'hostname: other.example\n');
  const cfg = loadConfig(f);
  assert.equal(cfg.hostname, 'other.example');
  assert.equal(cfg.file, f);
});

test('config set keeps comments, converts types, validates before writing', () => {
  const dir = tempDir();
  const file = path.join(dir, 'ferrymail.yaml');
  fs.writeFileSync(file, '# my relay\nhostname: a.example # the name\nlimits:\n  # per message\n  recipients: 10\n');
  configSet(dir, [['limits.recipients', '50']]);
  configSet(dir, [['local_nets', '192.168.1.0/24, fd00::/8']]);
  configSet(dir, [['smtp.reverse_lookup', 'true']]);
  const text = fs.readFileSync(file, 'utf8');
  assert.match(text, /# my relay/);
  assert.match(text, /# the name/);
  assert.match(text, /# per message/);
  const cfg = loadConfig(dir);
  assert.equal(cfg.limits.recipients, 50);
  assert.deepEqual(cfg.local_nets, ['192.168.1.0/24', 'fd00::/8']);
  assert.equal(cfg.smtp.reverse_lookup, true);
  assert.throws(() => configSet(dir, [['limits.recipients', 'many']]), ConfigError);
  assert.throws(() => configSet(dir, [['no.such', '1']]), ConfigError);
  assert.equal(fs.readFileSync(file, 'utf8'), text, 'unchanged after refused sets');
});

test('config set creates the file when missing', () => {
  const dir = path.join(tempDir(), 'new');
  configSet(dir, [['hostname', 'made.example']]);
  assert.equal(loadConfig(dir).hostname, 'made.example');
});

test('the JSON schema and the validator cover every field', () => {
  const schema = jsonSchema();
  for (const f of FIELDS) {
    const [a, b] = f.key.split('.') as [string, string | undefined];
    assert.ok(b ? (schema[a]!.properties as Record<string, unknown>)[b] : schema[a], f.key);
  }
  assert.deepEqual(validateSettings({ hostname: 'ok.example', limits: { errors: 3 } }), []);
  assert.equal(validateSettings({ limits: 5 }).length, 1);
  assert.equal(validateSettings([1]).length, 1);
});

test('docs/configuration.md documents every key of the settings table', async () => {
  const { ROOT } = await import('../helpers.js');
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'configuration.md'), 'utf8');
  const missing = FIELDS.filter((f) => !doc.includes(`\`${f.key}\``));
  assert.deepEqual(
    missing.map((f) => f.key),
    [],
  );
});

test('the sendmail snapshot follows every change of the settings file', async () => {
  const { loadConfigQuick } = await import('../../src/config/snapshot.js');
  const cache = tempDir();
  const saved = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = cache;
  try {
    const dir = tempDir();
    const file = path.join(dir, 'ferrymail.yaml');
    fs.writeFileSync(file, 'hostname: one.example\n');
    assert.equal((await loadConfigQuick(dir)).hostname, 'one.example');
    const snaps = fs.readdirSync(path.join(cache, 'ferrymail'));
    assert.equal(snaps.length, 1);
    assert.equal((await loadConfigQuick(dir)).hostname, 'one.example', 'served from the snapshot');
    fs.writeFileSync(file, 'hostname: two.example\n');
    assert.equal((await loadConfigQuick(dir)).hostname, 'two.example');
    fs.writeFileSync(file, 'hostname: 3\n');
    await assert.rejects(loadConfigQuick(dir), ConfigError);
    fs.rmSync(file);
    assert.equal((await loadConfigQuick(dir)).fromFile, false);
    assert.ok(Object.isFrozen(await loadConfigQuick(dir)));
  } finally {
    if (saved === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = saved;
  }
});

test('config set takes keys that belong together in one change, all or none', () => {
  const dir = tempDir();
  const cert = path.join(dir, 'c.pem');
  const key = path.join(dir, 'k.pem');
  fs.writeFileSync(cert, 'x');
  fs.writeFileSync(key, 'x');
  assert.throws(() => configSet(dir, [['tls.cert', cert]]), /go together/);
  assert.throws(
    () =>
      configSet(dir, [
        ['tls.cert', cert],
        ['limits.errors', 'none'],
      ]),
    ConfigError,
  );
  assert.equal(fs.existsSync(path.join(dir, 'ferrymail.yaml')), false, 'nothing written');
  configSet(dir, [
    ['tls.cert', cert],
    ['tls.key', key],
  ]);
  const cfg = loadConfig(dir);
  assert.equal(cfg.tls.cert, cert);
  assert.equal(cfg.tls.key, key);
});

test("queue durations: written as 30s, 5m, 4h, 5d or whole seconds, held in seconds; defaults are Postfix's", async () => {
  const { parseDuration, formatDuration } = await import('../../src/config/schema.js');
  assert.deepEqual(['30s', '5m', '4h', '5d', '90', 90].map(parseDuration), [30, 300, 14_400, 432_000, 90, 90]);
  assert.deepEqual(['', '4w', '-5m', '1.5h', '5 m', null, 1.5].map(parseDuration), [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
  ]);
  assert.deepEqual([14_400, 90, 86_400 * 2].map(formatDuration), ['4h', '90s', '2d']);
  const dflt = loadConfig(tempDir()).queue;
  assert.deepEqual(
    [dflt.retry_min, dflt.retry_max, dflt.lifetime, dflt.delay_warnings],
    [300, 14_400, 432_000, [14_400]],
  );
  const dir = tempDir();
  fs.writeFileSync(
    path.join(dir, 'ferrymail.yaml'),
    'queue:\n  retry_min: 30s\n  retry_max: 1h\n  lifetime: 2d\n  delay_warnings: [1d, 2h]\n  notice_mailbox: notices.mbox\n',
  );
  const q = loadConfig(dir).queue;
  assert.deepEqual([q.retry_min, q.retry_max, q.lifetime, q.delay_warnings], [30, 3600, 172_800, [7200, 86_400]]);
  assert.equal(q.notice_mailbox, path.join(dir, 'notices.mbox'));
});

test('bad queue durations are reported with their line; retry_min above retry_max and warnings past the lifetime too', () => {
  const dir = tempDir();
  fs.writeFileSync(
    path.join(dir, 'ferrymail.yaml'),
    'queue:\n  retry_min: 5 minutes\n  lifetime: 10s\n  delay_warnings: [4h, soon]\n',
  );
  try {
    loadConfig(dir);
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(
      err.issues.map((i) => `${i.line}:${i.key}:${i.message}`),
      [
        '2:queue.retry_min:must be a duration such as 30s, 5m, 4h or 5d',
        '3:queue.lifetime:must be at least 60 s',
        '4:queue.delay_warnings[1]:"soon": must be a duration such as 30s, 5m, 4h or 5d',
      ],
    );
  }
  fs.writeFileSync(
    path.join(dir, 'ferrymail.yaml'),
    'queue:\n  retry_min: 2h\n  retry_max: 1h\n  lifetime: 1d\n  delay_warnings: [1d]\n',
  );
  assert.throws(
    () => loadConfig(dir),
    (e: unknown) =>
      e instanceof ConfigError && e.issues.map((i) => i.key).join() === 'queue.retry_min,queue.delay_warnings',
  );
});

test('config set takes durations and lists of durations, and refuses what is not one', () => {
  const dir = tempDir();
  configSet(dir, [
    ['queue.lifetime', '3d'],
    ['queue.delay_warnings', '[1h, 1d]'],
  ]);
  assert.match(fs.readFileSync(path.join(dir, 'ferrymail.yaml'), 'utf8'), /lifetime: 3d/);
  const q = loadConfig(dir).queue;
  assert.deepEqual([q.lifetime, q.delay_warnings], [259_200, [3600, 86_400]]);
  assert.throws(
    () => configSet(dir, [['queue.retry_max', 'forever']]),
    (e: unknown) => e instanceof ConfigError && /queue\.retry_max: must be a duration/.test(e.message),
  );
  assert.equal(loadConfig(dir).queue.retry_max, 14_400, 'nothing written');
  const schema = jsonSchema().queue!.properties as Record<string, { anyOf: Array<{ pattern?: string }> }>;
  assert.ok(new RegExp(schema.retry_min!.anyOf[0]!.pattern!).test('5m'));
});

test('online.rules: a list of rules, each key checked, every problem with its line', () => {
  const dir = tempDir();
  fs.writeFileSync(
    path.join(dir, 'ferrymail.yaml'),
    [
      'online:', //                                     1
      '  probe_timeout: 50', //                         2
      '  rules:', //                                    3
      '    - connection: home', //                      4
      '      ssid: HomeNet', //                         5
      '      kind: wireless', //                        6
      '    - connection: "bad name"', //                7
      '      kind: wifi', //                            8
      '      gateway: 192.168.1', //                    9
      '      cidr: 10.0.0.0/33', //                    10
      '      probe: mail.example.org', //              11
      '      colour: blue', //                         12
      '    - interface: tun0', //                      13
      '      default_route: maybe', //                 14
      '    - just a string', //                        15
      '',
    ].join('\n'),
  );
  try {
    loadConfig(dir);
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    const got = err.issues.map((i) => `${i.line}:${i.key}`);
    assert.deepEqual(
      got.sort(),
      [
        '2:online.probe_timeout',
        '7:online.rules[1].connection',
        '8:online.rules[1].kind',
        '9:online.rules[1].gateway',
        '10:online.rules[1].cidr',
        '11:online.rules[1].probe',
        '12:online.rules[1].colour',
        '13:online.rules[2].connection',
        '14:online.rules[2].default_route',
        '15:online.rules[3]',
      ].sort(),
    );
    assert.match(err.issues.find((i) => i.key === 'online.rules[2].connection')!.message, /missing/);
  }
  fs.writeFileSync(path.join(dir, 'ferrymail.yaml'), 'online:\n  rules: {connection: home}\n');
  assert.throws(
    () => loadConfig(dir),
    (e: unknown) => e instanceof ConfigError && e.issues[0]!.message === 'must be a list of mappings',
  );
});

test('online.rules: valid rules load as written; the default is none, probes get 2 s', () => {
  const dir = tempDir();
  assert.deepEqual(loadConfig(dir).online.rules, []);
  assert.equal(loadConfig(dir).online.probe_timeout, 2000);
  fs.writeFileSync(
    path.join(dir, 'ferrymail.yaml'),
    'online:\n  rules:\n    - {connection: vpn, interface: "tun*", cidr: 10.8.0.0/24, default_route: false}\n    - {connection: office, kind: wired, gateway: "fe80::1", probe: "[2001:db8::25]:587"}\n    - {connection: lan, probe: "[fe80::1%wlan0]:25"}\n',
  );
  const cfg = loadConfig(dir);
  assert.deepEqual(cfg.online.rules, [
    { connection: 'vpn', interface: 'tun*', cidr: '10.8.0.0/24', default_route: false },
    { connection: 'office', kind: 'wired', gateway: 'fe80::1', probe: '[2001:db8::25]:587' },
    { connection: 'lan', probe: '[fe80::1%wlan0]:25' },
  ]);
  assert.ok(Object.isFrozen(cfg.online.rules[0]));
});

test('config set online.rules takes a YAML or JSON list, checked like the file', () => {
  const dir = tempDir();
  configSet(dir, [['online.rules', '[{connection: home, ssid: "Home Net"}, {"connection": "any"}]']]);
  assert.deepEqual(loadConfig(dir).online.rules, [{ connection: 'home', ssid: 'Home Net' }, { connection: 'any' }]);
  assert.throws(
    () => configSet(dir, [['online.rules', '[{ssid: x}]']]),
    (e: unknown) => e instanceof ConfigError && /online\.rules\[0\]\.connection/.test(e.message),
  );
  assert.throws(() => configSet(dir, [['online.rules', 'home']]), ConfigError);
  const schema = jsonSchema().online!.properties as Record<string, { items?: { required?: string[] } }>;
  assert.deepEqual(schema.rules!.items!.required, ['connection']);
});

test('the sendmail command keeps at most 16 configuration snapshots', async () => {
  const { loadConfigQuick } = await import('../../src/config/snapshot.js');
  const cache = tempDir();
  const saved = process.env.XDG_CACHE_HOME;
  process.env.XDG_CACHE_HOME = cache;
  try {
    for (let i = 0; i < 24; i++) {
      const dir = tempDir();
      fs.writeFileSync(path.join(dir, 'ferrymail.yaml'), `hostname: h${i}.example\n`);
      assert.equal((await loadConfigQuick(dir)).hostname, `h${i}.example`);
    }
    const snaps = fs.readdirSync(path.join(cache, 'ferrymail'));
    assert.ok(snaps.length <= 16 && snaps.length > 0, `${snaps.length} snapshots kept`);
  } finally {
    if (saved === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = saved;
  }
});

test('~/ in a path is the home directory; config check reports a notice mailbox folder that is missing and a password command that is not there', async () => {
  const { loadConfig } = await import('../../src/config/load.js');
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'ferrymail.yaml'), 'queue:\n  notice_mailbox: "~/Mail/notices"\n');
  assert.equal(loadConfig(dir).queue.notice_mailbox, path.join(os.homedir(), 'Mail', 'notices'));
  const { makeConfig, ferrymail, writeRoute } = await import('../helpers.js');
  const cfg = await makeConfig('queue:\n  notice_mailbox: /nonexistent-folder/notices');
  writeRoute(cfg, '10-isp.yaml', [
    'name: isp',
    'permanent: true',
    'transport:',
    '  type: smtp',
    '  host: smtp.example',
    '  port: 587',
    '  user: me',
    '  password_command: [no-such-program-here, get]',
  ]);
  const r = await ferrymail(cfg, ['config', 'check']);
  assert.equal(r.code, 78);
  assert.match(r.stderr, /queue\.notice_mailbox: the folder \/nonexistent-folder does not exist/);
  assert.match(r.stderr, /password_command no-such-program-here is not a program this host has/);
});

test('config set reads a list as YAML flow text, quotes and all, like the file', async () => {
  const { parseValue } = await import('../../src/config/store.js');
  const list = { key: 'x', type: 'string[]', doc: '' } as const;
  assert.deepEqual(parseValue(list, '[notify-send, "${subject}", "${summary}"]'), [
    'notify-send',
    '${subject}',
    '${summary}',
  ]);
  assert.deepEqual(parseValue(list, '127.0.0.1:25, [::1]:25'), ['127.0.0.1:25', '[::1]:25']);
  assert.deepEqual(parseValue(list, '[127.0.0.1:25, [::1]:25]'), ['127.0.0.1:25', '[::1]:25']);
  assert.deepEqual(parseValue(list, '[]'), []);
});
