// The admin command's queue, status and config tools, run as a program: queue list / show / rm / hold /
// release with no daemon (straight on the spool) and with one running (through its control socket),
// `ferrymail status` in both states, and `ferrymail config check / get / set`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  queueJson,
  queueShowJson,
  sendmail,
  startDaemon,
  stopDaemon,
  type RunResult,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

/** A well-formed queue id that names no message. */
const UNKNOWN_ID = '0000000000000000';

/** Submits one message through the sendmail command; returns its queue id. */
async function enqueue(cfg: TestConfig, from: string, rcpts: string[], subject: string): Promise<string> {
  const dir = path.join(cfg.spool, 'queue');
  const before = new Set(fs.existsSync(dir) ? fs.readdirSync(dir) : []);
  const r = await sendmail(cfg, ['-i', '-f', from, ...rcpts], `Subject: ${subject}\n\nbody of ${subject}\n`);
  assert.equal(r.code, 0, r.stderr);
  const fresh = fs.readdirSync(dir).filter((x) => !before.has(x));
  assert.equal(fresh.length, 1);
  return fresh[0]!;
}

/** Asserts a command failed with exit code and exactly one line on stderr, nothing on stdout. */
function oneLineFailure(r: RunResult, code: number, mentions: string): void {
  assert.equal(r.code, code, `exit ${r.code}: ${r.stderr}`);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, JSON.stringify(r.stderr));
  assert.ok(r.stderr.includes(mentions), r.stderr);
}

/** The entry of id in a JSON listing. */
async function entry(cfg: TestConfig, id: string): Promise<Record<string, any> | undefined> {
  return (await queueJson(cfg)).find((e) => e.id === id);
}

for (const withDaemon of [false, true]) {
  describe(withDaemon ? 'queue tools with the daemon running' : 'queue tools with no daemon running', () => {
    let cfg: TestConfig;
    let d: RunningDaemon | undefined;
    let a: string; // two recipients; held and released
    let b: string; // removed
    let c: string; // removed together with an unknown id
    before(async () => {
      cfg = await makeConfig();
      if (withDaemon) {
        d = await startDaemon(cfg);
        assert.ok(
          fs.statSync(path.join(cfg.spool, 'control.sock')).isSocket(),
          'the daemon listens on its control socket',
        );
      }
      a = await enqueue(cfg, 'alice@example.com', ['bob@example.org', 'carol@example.net'], 'first');
      b = await enqueue(cfg, 'dave@example.com', ['erin@example.org'], 'second');
      c = await enqueue(cfg, '', ['frank@example.org'], 'third');
    });
    after(async () => {
      await stopDaemon(d);
    });

    test('queue list: one block per message, one line per recipient with its state', async () => {
      const r = await ferrymail(cfg, ['queue', 'list']);
      assert.equal(r.code, 0, r.stderr);
      // with no route files, each waiting recipient says so (it is not simply "queued")
      const why = 'now: no route files \\(.*/routes/\\*\\.yaml\\): nothing can leave';
      assert.match(
        r.stdout,
        new RegExp(
          `^${a}  age \\d+[smhd]  \\d+ bytes  from <alice@example\\.com>\\n  queued +<bob@example\\.org>  attempts 0  ${why}\\n  queued +<carol@example\\.net>  attempts 0  ${why}$`,
          'm',
        ),
      );
      assert.match(r.stdout, new RegExp(`^${b}  age \\d+[smhd]  \\d+ bytes  from <dave@example\\.com>$`, 'm'));
      assert.match(r.stdout, new RegExp(`^${c}  age \\d+[smhd]  \\d+ bytes  from <>$`, 'm'));
      assert.ok(r.stdout.indexOf(a) < r.stdout.indexOf(b) && r.stdout.indexOf(b) < r.stdout.indexOf(c), 'oldest first');
    });

    test('queue list --json: every message with envelope facts', async () => {
      const list = await queueJson(cfg);
      assert.deepEqual(
        list.map((e) => e.id),
        [a, b, c],
      );
      const first = list[0]!;
      assert.equal(first.place, 'queue');
      assert.equal(first.sender, 'alice@example.com');
      assert.equal(first.origin.door, 'sendmail');
      assert.ok(Number.isInteger(first.size) && first.size > 0);
      assert.ok(first.age_seconds >= 0);
      assert.deepEqual(
        first.recipients.map((r: any) => [r.address, r.state, r.attempts]),
        [
          ['bob@example.org', 'queued', 0],
          ['carol@example.net', 'queued', 0],
        ],
      );
      assert.equal(list[2]!.sender, '');
    });

    test('queue list --mailq: the classic listing', async () => {
      const r = await ferrymail(cfg, ['queue', 'list', '--mailq']);
      assert.equal(r.code, 0, r.stderr);
      const list = await queueJson(cfg);
      const kbytes = Math.ceil(list.reduce((n, e) => n + e.size, 0) / 1024);
      assert.match(r.stdout, /^-Queue ID- +--Size-- +----Arrival Time---- +-Sender\/Recipient-+\n/);
      // the reason once, above the recipients it holds for (as Postfix)
      assert.match(
        r.stdout,
        new RegExp(
          `^${a} +\\d+ .+  alice@example\\.com\\n +\\(no route files .*\\)\\n +bob@example\\.org\\n +carol@example\\.net\\n`,
          'm',
        ),
      );
      assert.match(
        r.stdout,
        new RegExp(`^${c} +\\d+ .+  MAILER-DAEMON\\n +\\(no route files .*\\)\\n +frank@example\\.org\\n`, 'm'),
      );
      assert.match(r.stdout, new RegExp(`\\n-- ${kbytes} Kbytes in ${list.length} Requests\\.\\n$`));
    });

    test('queue show ID: envelope facts, then the header section', async () => {
      const r = await ferrymail(cfg, ['queue', 'show', a]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^id: +${a}\\n`));
      assert.match(r.stdout, /^sender: +<alice@example\.com>$/m);
      assert.match(r.stdout, /^origin: +sendmail/m);
      assert.match(
        r.stdout,
        /^recipients:\n {2}<bob@example\.org> queued attempts=0\n {4}now: no route files .*\n {2}<carol@example\.net> queued attempts=0\n {4}now: no route files .*\n\nReceived: /m,
      );
      assert.match(r.stdout, /^Subject: first$/m);
      assert.doesNotMatch(r.stdout, /body of first/);
      const j = await queueShowJson(cfg, a);
      assert.equal(j.id, a);
      assert.equal(j.place, 'queue');
      assert.equal(j.sender, 'alice@example.com');
      assert.match(j.header, /^Received: /);
      assert.match(j.header, /\r\nSubject: first\r\n/);
      assert.ok(j.header.endsWith('\r\n') && !j.header.includes('body of first'));
    });

    test('queue hold: the message shows as held everywhere; release puts it back', async () => {
      const h = await ferrymail(cfg, ['queue', 'hold', a]);
      assert.equal(h.code, 0, h.stderr);
      assert.equal(h.stdout, `${a}: held\n`);
      const held = await queueJson(cfg);
      assert.deepEqual(
        held.map((e) => [e.id, e.place]),
        [
          [a, 'hold'],
          [b, 'queue'],
          [c, 'queue'],
        ],
      );
      assert.match((await ferrymail(cfg, ['queue', 'list'])).stdout, new RegExp(`^${a}  HELD  age`, 'm'));
      assert.match((await ferrymail(cfg, ['queue', 'list', '--mailq'])).stdout, new RegExp(`^${a}! `, 'm'));
      assert.match((await ferrymail(cfg, ['queue', 'show', a])).stdout, new RegExp(`^id: +${a}  \\(held\\)$`, 'm'));
      oneLineFailure(await ferrymail(cfg, ['queue', 'hold', a]), 66, a);

      const rel = await ferrymail(cfg, ['queue', 'release', a]);
      assert.equal(rel.code, 0, rel.stderr);
      assert.equal(rel.stdout, `${a}: released\n`);
      assert.deepEqual(
        (await queueJson(cfg)).map((e) => e.place),
        ['queue', 'queue', 'queue'],
      );
      oneLineFailure(await ferrymail(cfg, ['queue', 'release', a]), 66, a);
    });

    test('queue rm removes the message and its data', async () => {
      const r = await ferrymail(cfg, ['queue', 'rm', b]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${b}: removed\n`);
      assert.equal(await entry(cfg, b), undefined);
      assert.ok(!fs.existsSync(path.join(cfg.spool, 'msg', b)));
      oneLineFailure(await ferrymail(cfg, ['queue', 'rm', b]), 66, b);
    });

    test('an unknown id: exit 66 and one line, for show, rm, hold and release', async () => {
      for (const verb of ['show', 'rm', 'hold', 'release'])
        oneLineFailure(await ferrymail(cfg, ['queue', verb, UNKNOWN_ID]), 66, UNKNOWN_ID);
      oneLineFailure(await ferrymail(cfg, ['queue', 'rm', '../queue/x']), 66, '../queue/x');
    });

    test('queue rm with a known and an unknown id removes the known one and exits 66', async () => {
      const r = await ferrymail(cfg, ['queue', 'rm', c, UNKNOWN_ID]);
      assert.equal(r.code, 66, r.stderr);
      assert.equal(r.stdout, `${c}: removed\n`);
      assert.equal(r.stderr.split('\n').filter(Boolean).length, 1);
      assert.match(r.stderr, new RegExp(UNKNOWN_ID));
      assert.deepEqual(
        (await queueJson(cfg)).map((e) => e.id),
        [a],
      );
    });

    if (withDaemon) {
      test('status: exit 0, running, where it listens, what waits', async () => {
        const r = await ferrymail(cfg, ['status']);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^daemon: running, pid ${d!.child.pid}\\b`, 'm'));
        assert.match(r.stdout, new RegExp(`^listen: .*127\\.0\\.0\\.1:${cfg.port}\\b`, 'm'));
        const j = JSON.parse((await ferrymail(cfg, ['status', '--json'])).stdout);
        assert.equal(j.running, true);
        assert.equal(j.pid, d!.child.pid);
        assert.deepEqual(j.listening, [`127.0.0.1:${cfg.port}`]);
        assert.equal(j.spool, cfg.spool);
        assert.equal(j.queued, (await queueJson(cfg)).filter((e) => e.place === 'queue').length);
      });
    } else {
      test('status: exit 69 and "not running", with the spool and what waits', async () => {
        const r = await ferrymail(cfg, ['status']);
        assert.equal(r.code, 69);
        assert.match(r.stdout, /^daemon: not running$/m);
        assert.ok(r.stdout.includes(cfg.spool));
        const j = await ferrymail(cfg, ['status', '--json']);
        assert.equal(j.code, 69);
        const s = JSON.parse(j.stdout);
        assert.equal(s.running, false);
        assert.equal(s.spool, cfg.spool);
        assert.equal(s.queued, (await queueJson(cfg)).length);
        assert.equal(s.held, 0);
      });
    }
  });
}

describe('status after the daemon stopped', () => {
  let d: RunningDaemon | undefined;
  after(async () => {
    await stopDaemon(d);
  });

  test('a daemon that ran and stopped is reported as not running', async () => {
    const cfg = await makeConfig();
    d = await startDaemon(cfg);
    assert.equal((await ferrymail(cfg, ['status'])).code, 0);
    assert.equal(await d.stop(), 0);
    const r = await ferrymail(cfg, ['status']);
    assert.equal(r.code, 69, r.stdout + r.stderr);
    assert.match(r.stdout, /not running/);
  });
});

describe('ferrymail config', () => {
  const COMMENTED = [
    '# ferrymail settings for this host',
    'hostname: test.example   # used in greetings',
    'listen: ["127.0.0.1:2599"]',
    '',
    'limits:',
    '  # small messages only here',
    '  message_size: 4096',
    '',
    '# end of file',
    '',
  ].join('\n');

  /** A configuration directory holding exactly text as ferrymail.yaml. */
  async function withFile(text: string): Promise<{ cfg: TestConfig; file: string }> {
    const cfg = await makeConfig();
    const file = path.join(cfg.configDir, 'ferrymail.yaml');
    fs.writeFileSync(file, text);
    return { cfg, file };
  }

  test('config check: a good file is ok', async () => {
    const cfg = await makeConfig();
    const r = await ferrymail(cfg, ['config', 'check']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${path.join(cfg.configDir, 'ferrymail.yaml')}: ok\n`);
  });

  test('config check: a file with several errors reports every one, with file:line: key', async () => {
    const lines = [
      'hostname: test.example',
      'listen: ["127.0.0.1:99999", "nonsense"]',
      'log_format: xml',
      'limits:',
      '  message_size: big',
      '  recipients: 0',
      'bogus_key: 1',
    ];
    const { cfg, file } = await withFile(`${lines.join('\n')}\n`);
    const lineOf = (start: string): number => lines.findIndex((l) => l.startsWith(start)) + 1;
    const r = await ferrymail(cfg, ['config', 'check']);
    assert.equal(r.code, 78);
    const got = r.stderr.trimEnd().split('\n');
    const want: Array<[string, number]> = [
      ['listen[0]', lineOf('listen:')],
      ['listen[1]', lineOf('listen:')],
      ['log_format', lineOf('log_format:')],
      ['limits.message_size', lineOf('  message_size:')],
      ['limits.recipients', lineOf('  recipients:')],
      ['bogus_key', lineOf('bogus_key:')],
    ];
    assert.equal(got.length, want.length, r.stderr);
    for (const [key, line] of want) {
      assert.ok(
        got.some((g) => g.startsWith(`${file}:${line}: ${key}: `)),
        `${key} at line ${line} in:\n${r.stderr}`,
      );
    }
  });

  test('config check also checks the route files: every problem as routes/FILE:LINE: key, or how many are fine', async () => {
    const { cfg } = await withFile('hostname: test.example\n');
    const dir = path.join(cfg.configDir, 'routes');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, '10-good.yaml'), 'connections: [home]\ntransport: {type: pipe, command: [cat]}\n');
    fs.writeFileSync(
      path.join(dir, '20-bad.yaml'),
      'connections: [home]\nlast_route: maybe\ntransport:\n  type: smtp\n  host: relay.example\n',
    );
    const bad = await ferrymail(cfg, ['config', 'check']);
    assert.equal(bad.code, 78);
    const got = bad.stderr.trimEnd().split('\n');
    assert.ok(
      got.some((l) => l.startsWith(`${path.join(dir, '20-bad.yaml')}:2: last_route: `)),
      bad.stderr,
    );
    assert.ok(
      got.some((l) => l.startsWith(`${path.join(dir, '20-bad.yaml')}:5: transport.host: host needs port`)),
      bad.stderr,
    );
    fs.rmSync(path.join(dir, '20-bad.yaml'));
    // what only shows at delivery time: a password file others can read, a pipe variable that does not
    // exist; and a route file that cannot be read
    const pw = path.join(cfg.dir, 'pw');
    fs.writeFileSync(pw, 'secret\n', { mode: 0o644 });
    fs.chmodSync(pw, 0o644);
    fs.writeFileSync(
      path.join(dir, '30-pw.yaml'),
      `connections: [home]\ntransport: {type: smtp, host: relay.example, port: 587, user: me, password_file: ${JSON.stringify(pw)}}\n`,
    );
    fs.writeFileSync(
      path.join(dir, '40-pipe.yaml'),
      'connections: [home]\ntransport: {type: pipe, command: [cat, "${reciptient}"]}\n',
    );
    fs.mkdirSync(path.join(dir, '50-dir.yaml'));
    const late = await ferrymail(cfg, ['config', 'check']);
    assert.equal(late.code, 78);
    assert.match(late.stderr, /50-dir\.yaml: \(file\): cannot be read: EISDIR/);
    fs.rmdirSync(path.join(dir, '50-dir.yaml'));
    const late2 = await ferrymail(cfg, ['config', 'check']);
    assert.equal(late2.code, 78);
    assert.match(late2.stderr, /route 30-pw: password_file \S+ must be readable by its owner only/);
    assert.match(late2.stderr, /route 40-pipe: the pipe command names unknown variables: \$\{reciptient\}/);
    assert.doesNotMatch(late2.stderr, /secret/);
    fs.rmSync(path.join(dir, '30-pw.yaml'));
    fs.rmSync(path.join(dir, '40-pipe.yaml'));
    const ok = await ferrymail(cfg, ['config', 'check']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^1 route file: ok$/m);
  });

  test('config get: the effective value, defaults included', async () => {
    const cfg = await makeConfig();
    const r = await ferrymail(cfg, ['config', 'get', 'limits.message_size']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '52428800\n');
    const { cfg: small } = await withFile(COMMENTED);
    assert.equal((await ferrymail(small, ['config', 'get', 'limits.message_size'])).stdout, '4096\n');
    const unknown = await ferrymail(cfg, ['config', 'get', 'limits.nonsense']);
    assert.equal(unknown.code, 64);
  });

  test('usage errors: one line in the form of every other error, exit 64', async () => {
    const cfg = await makeConfig();
    for (const [args, line] of [
      [['queue', 'hold'], "ferrymail: missing required argument 'ids'\n"],
      [['--bogus'], "ferrymail: unknown option '--bogus'\n"],
      [['queue', 'list', '--bogus'], "ferrymail: unknown option '--bogus'\n"],
      [['nosuch'], "ferrymail: unknown command 'nosuch'\n"],
    ] as const) {
      const r = await ferrymail(cfg, [...args]);
      assert.deepEqual([r.code, r.stderr], [64, line], args.join(' '));
    }
  });

  test('config set keeps the comments of the file, and config get then prints the new value', async () => {
    const { cfg, file } = await withFile(COMMENTED);
    const r = await ferrymail(cfg, ['config', 'set', 'limits.recipients', '50']);
    assert.equal(r.code, 0, r.stderr);
    const text = fs.readFileSync(file, 'utf8');
    for (const comment of COMMENTED.split('\n').filter((l) => l.includes('#'))) {
      const c = comment.slice(comment.indexOf('#'));
      assert.ok(text.includes(c), `comment ${JSON.stringify(c)} kept in:\n${text}`);
    }
    assert.equal((await ferrymail(cfg, ['config', 'get', 'limits.recipients'])).stdout, '50\n');
    assert.equal((await ferrymail(cfg, ['config', 'get', 'limits.message_size'])).stdout, '4096\n');
  });

  test('config set with a bad value or key fails with 78 and leaves the file as it was', async () => {
    const { cfg, file } = await withFile(COMMENTED);
    const before = fs.readFileSync(file);
    for (const args of [
      ['limits.recipients', 'many'],
      ['limits.recipients', '0'],
      ['no_such_key', '1'],
    ]) {
      const r = await ferrymail(cfg, ['config', 'set', ...args]);
      assert.equal(r.code, 78, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
      assert.ok(r.stderr.includes(args[0]!.split('.').pop()!), r.stderr);
      assert.deepEqual(fs.readFileSync(file), before, `file unchanged after ${args.join(' ')}`);
    }
    assert.equal((await ferrymail(cfg, ['config', 'get', 'limits.recipients'])).stdout, '1000\n');
  });
});
