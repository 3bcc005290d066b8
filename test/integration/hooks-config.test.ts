// Hooks named in ferrymail.yaml: modules loaded by the daemon at start and on reload, each verdict with
// its own reply, a hook that throws or hangs deferred (or passed over with on_error: accept) with a log
// line, `ferrymail hooks list`, and modules that may not be loaded refused with a clear error.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  ferrymail,
  freePort,
  makeConfig,
  messageData,
  queueJson,
  RawSmtp,
  run,
  startDaemon,
  stopDaemon,
  type TestConfig,
  waitUntil,
  writeRoute,
} from '../helpers.js';

/** Writes a hook module into the configuration directory (0644) and returns its path. */
function hookFile(cfg: TestConfig, name: string, body: string): string {
  const file = path.join(cfg.configDir, 'hooks', name);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  fs.writeFileSync(file, body, { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  return file;
}

const POLICY = `
export default function (options, api) {
  return {
    mail(s, i) {
      if (i.arg === options.deferred) return { action: 'defer', reply: { code: 450, enhanced: '4.7.1', text: 'greylisted, come back later' } };
      return { action: 'continue' };
    },
    rcpt(s, i) {
      if (i.arg.endsWith('@blocked.example')) return { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'no mail for ' + i.arg } };
      if (i.arg === 'vip@remote.example') return { action: 'accept' };
      return { action: 'continue' };
    },
    unknown(s, i) {
      return i.verb === 'XBYE' ? { action: 'disconnect', reply: { code: 421, enhanced: '4.7.0', text: 'so long' } } : { action: 'continue' };
    },
  };
}
`;

/** A module whose rcpt handler refuses everyone: it runs after the first, so "accept" must skip it. */
const STRICT = `export default () => ({ rcpt: () => ({ action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: 'strict says no' } }) });`;
const THROWS = `export default () => ({ helo(s, i) { if (i.arg === 'boom.example') throw new Error('kaput'); return { action: 'continue' }; } });`;
const HANGS = `export default () => ({ helo(s, i) { return i.arg === 'slow.example' ? new Promise(() => {}) : { action: 'continue' }; } });`;
const NONSENSE = `export default () => ({ helo(s, i) { return i.arg === 'odd.example' ? { action: 'reject', reply: { code: 250, enhanced: '2.0.0', text: 'x' } } : { action: 'continue' }; } });`;

test('configured hooks: defer, reject, accept, disconnect with their own replies; failures deferred or passed as configured', async () => {
  const cfg = await makeConfig();
  const policy = hookFile(cfg, 'policy.js', POLICY);
  const strict = hookFile(cfg, 'strict.js', STRICT);
  const throws = hookFile(cfg, 'throws.js', THROWS);
  const hangs = hookFile(cfg, 'hangs.js', HANGS);
  const lenient = hookFile(cfg, 'lenient.js', HANGS.replace('slow.example', 'lenient.example'));
  const nonsense = hookFile(cfg, 'nonsense.js', NONSENSE);
  fs.appendFileSync(
    path.join(cfg.configDir, 'ferrymail.yaml'),
    [
      'hooks:',
      `  - path: ${policy}`,
      '    options: { deferred: "grey@remote.example" }',
      `  - path: ${strict}`,
      '    name: strict',
      '    stages: [rcpt]',
      `  - path: ${throws}`,
      `  - path: ${hangs}`,
      '    timeout: 1s',
      `  - path: ${lenient}`,
      '    timeout: 1s',
      '    on_error: accept',
      `  - path: ${nonsense}`,
      '',
    ].join('\n'),
  );
  const list = await ferrymail(cfg, ['hooks', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^rcpt:\n {2}1\. policy .*\n {2}2\. strict {2}timeout 30s {2}on_error tempfail /m);
  assert.match(
    list.stdout,
    /^helo:\n {2}1\. throws .*\n {2}2\. hangs {2}timeout 1s {2}on_error tempfail .*\n {2}3\. lenient {2}timeout 1s {2}on_error accept /m,
  );
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO boom.example'), /^451 4\.3\.0 /, 'a hook that throws defers');
    assert.match(await c.cmd('EHLO slow.example'), /^451 4\.4\.5 /, 'a hook that hangs defers at its timeout');
    assert.match(await c.cmd('EHLO lenient.example'), /^250/, 'on_error: accept passes over a hanging hook');
    assert.match(await c.cmd('EHLO odd.example'), /^451 4\.3\.0 /, 'a reject with a 250 is no verdict');
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    assert.match(await c.cmd('MAIL FROM:<grey@remote.example>'), /^450 4\.7\.1 greylisted, come back later/);
    assert.match(await c.cmd('MAIL FROM:<someone@remote.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<x@blocked.example>'), /^550 5\.7\.1 no mail for x@blocked\.example/);
    assert.match(await c.cmd('RCPT TO:<vip@remote.example>'), /^250/, 'accept skips the later hooks of the stage');
    assert.match(await c.cmd('RCPT TO:<other@remote.example>'), /^554 5\.7\.1 strict says no/);
    assert.match(await c.cmd('XBYE now'), /^421 4\.7\.0 so long/);
    await c.waitClose();
    const log = d.log();
    assert.match(log, /hook throws failed at helo: kaput; deferred/);
    assert.match(log, /hook hangs failed at helo: no answer within 1000 ms; deferred/);
    assert.match(log, /hook lenient failed at helo: no answer within 1000 ms; passed \(on_error: accept\)/);
    assert.match(log, /hook nonsense failed at helo: answered reject with the reply code 250/);
  } finally {
    await stopDaemon(d);
  }
});

test('a reload loads a changed hook module anew; one that cannot be loaded keeps the hooks in use', async () => {
  const cfg = await makeConfig();
  const file = hookFile(
    cfg,
    'greet.js',
    `export default () => ({ helo: () => ({ action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'first version' } }) });`,
  );
  fs.appendFileSync(path.join(cfg.configDir, 'ferrymail.yaml'), `hooks:\n  - path: ${file}\n`);
  const d = await startDaemon(cfg);
  try {
    const ask = async (): Promise<string> => {
      const c = await RawSmtp.connect(cfg.port);
      await c.reply();
      const r = await c.cmd('EHLO client.example');
      c.close();
      return r;
    };
    assert.match(await ask(), /first version/);
    fs.writeFileSync(
      file,
      `export default () => ({ helo: () => ({ action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'second version' } }) });`,
    );
    d.child.kill('SIGHUP');
    assert.ok(await waitUntil(() => d.log().includes('configuration reloaded'), 10_000), d.log());
    assert.match(await ask(), /second version/);
    // a module others may write is refused: the reload is, and the second version stays
    fs.chmodSync(file, 0o666);
    d.child.kill('SIGHUP');
    assert.ok(
      await waitUntil(() => /configuration not reloaded.*writable by no one else/.test(d.log()), 10_000),
      d.log(),
    );
    assert.match(await ask(), /second version/);
  } finally {
    await stopDaemon(d);
  }
});

test('hooks that cannot be used are configuration errors: a missing module, a stage it has no handler for', async () => {
  const cfg = await makeConfig();
  const file = hookFile(cfg, 'only-rcpt.js', STRICT);
  const yaml = path.join(cfg.configDir, 'ferrymail.yaml');
  const base = fs.readFileSync(yaml, 'utf8');
  fs.writeFileSync(yaml, `${base}hooks:\n  - path: ${file}\n    stages: [mail]\n`);
  const r = await ferrymail(cfg, ['hooks', 'list']);
  assert.equal(r.code, 78, r.stderr);
  assert.match(r.stderr, /hooks\[0\] \(.*only-rcpt\.js\): the module has no handler for mail/);
  fs.writeFileSync(yaml, `${base}hooks:\n  - path: hooks/nowhere.js\n`);
  const m = await ferrymail(cfg, ['hooks', 'list']);
  assert.equal(m.code, 78, m.stderr);
  assert.match(m.stderr, /hooks\[0\] \(.*nowhere\.js\): not loaded: ENOENT/);
  await assert.rejects(startDaemon(cfg), /nowhere\.js\): not loaded: ENOENT/);
});

const SCANNER = `
export default function () {
  return {
    async data_end(s, i) {
      const m = i.message;
      const subject = m.headers.find((h) => h.name.toLowerCase() === 'subject')?.value ?? '';
      if (subject.includes('SPAM')) return { action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: 'looks like spam to me' } };
      let body = '';
      for await (const chunk of m.read()) body += Buffer.from(chunk).toString('latin1');
      if (body.includes('TEMPFAIL-ME')) return { action: 'defer', reply: { code: 451, enhanced: '4.7.1', text: 'scanner busy' } };
      return {
        action: 'continue',
        headers: {
          add: [{ name: 'X-Scanned', value: 'bytes=' + body.length + ' of ' + m.size }],
          change: [{ name: 'Subject', value: '[scanned] ' + subject }],
          remove: ['X-Remove-Me'],
        },
        notes: { score: '3.5' },
      };
    },
  };
}
`;
const SECOND = `export default () => ({ data_end: (s, i) => ({ action: 'continue', headers: { add: [{ name: 'X-Score-Seen', value: i.message.notes.score ?? 'none' }] } }) });`;

test('data_end hooks see the whole message, refuse or defer it with their reply, change its header and set notes', async () => {
  const cfg = await makeConfig();
  const scanner = hookFile(cfg, 'scanner.js', SCANNER);
  const second = hookFile(cfg, 'second.js', SECOND);
  fs.appendFileSync(path.join(cfg.configDir, 'ferrymail.yaml'), `hooks:\n  - path: ${scanner}\n  - path: ${second}\n`);
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    assert.match(await c.reply(), /^220/);
    assert.match(await c.cmd('EHLO client.example'), /^250/);
    const send = async (head: string, body: string): Promise<string> => {
      assert.match(await c.cmd('MAIL FROM:<a@remote.example>'), /^250/);
      assert.match(await c.cmd('RCPT TO:<b@remote.example>'), /^250/);
      assert.match(await c.cmd('DATA'), /^354/);
      c.send(`${head}\r\n\r\n${body}\r\n.\r\n`);
      return c.reply();
    };
    assert.match(await send('Subject: buy SPAM now', 'x'), /^554 5\.7\.1 looks like spam to me/, d.log());
    assert.match(await send('Subject: hello', 'please TEMPFAIL-ME'), /^451 4\.7\.1 scanner busy/);
    assert.deepEqual(await queueJson(cfg), [], 'nothing kept of a refused message');
    const ok = await send('Subject: hello\r\nX-Remove-Me: yes\r\nX-Keep: 1', 'a fine body');
    assert.match(ok, /^250 2\.0\.0 Ok: queued as /, d.log());
    c.close();
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    const data = messageData(cfg, q[0]!.id);
    assert.match(data, /^Subject: \[scanned\] hello\r$/m);
    assert.doesNotMatch(data, /X-Remove-Me/);
    assert.match(data, /^X-Keep: 1\r$/m);
    assert.match(data, /^X-Scanned: bytes=\d+ of \d+\r$/m);
    assert.match(data, /^X-Score-Seen: 3\.5\r$/m, 'the second hook saw the note of the first');
    assert.match(data, /\r\n\r\na fine body\r\n$/, 'the body is whole after the new header');
    assert.match(data, /^Received: from client\.example/, "the door's Received line is still first");
    assert.equal(q[0]!.size, Buffer.byteLength(data, 'latin1'), 'the envelope has the new size');
    const shown = await ferrymail(cfg, ['queue', 'show', q[0]!.id, '--json']);
    assert.equal(JSON.parse(shown.stdout).notes?.score, '3.5', shown.stdout);
    assert.match(d.log(), /<= \S+ .*note\.score=3\.5/);
  } finally {
    await stopDaemon(d);
  }
});

const CLASSES = `
export default () => ({
  rcpt: (s, i) => ({ action: 'continue', policy: i.arg.endsWith('@strict.example') ? 'strict' : 'lax' }),
  data_end: (s) => ({ action: 'continue', headers: { add: [{ name: 'X-Policy', value: s.policy ?? 'none' }] } }),
});
`;

/** Sends one message the way a client that honours 452 4.5.3 does: the refused recipients again, in a
 * transaction of their own, until none is left. Prints the rounds as JSON. */
const SPLITTING_CLIENT = `
import json, smtplib, sys
a = json.loads(sys.argv[1])
left = a['rcpts']
rounds = []
while left:
    s = smtplib.LMTP('127.0.0.1', a['port']) if a['lmtp'] else smtplib.SMTP('127.0.0.1', a['port'])
    refused = s.sendmail('a@remote.example', left, b'Subject: classes\\r\\n\\r\\nbody\\r\\n')
    s.quit()
    rounds.append({'sent': [r for r in left if r not in refused], 'refused': {k: [v[0], v[1].decode()] for k, v in refused.items()}})
    left = [r for r, (code, _) in refused.items() if code == 452]
    if len(rounds) > 5: break
print(json.dumps(rounds))
`;

test('recipients of different policy classes come back in transactions of their own (smtplib over SMTP and LMTP)', async () => {
  const lmtpPort = await freePort();
  const cfg = await makeConfig(`lmtp_listen: ["127.0.0.1:${lmtpPort}"]`);
  const file = hookFile(cfg, 'classes.js', CLASSES);
  fs.appendFileSync(path.join(cfg.configDir, 'ferrymail.yaml'), `hooks:\n  - path: ${file}\n`);
  const d = await startDaemon(cfg);
  try {
    for (const [lmtp, port] of [
      [false, cfg.port],
      [true, lmtpPort],
    ] as const) {
      const rcpts = ['a@strict.example', 'b@lax.example', 'c@strict.example', 'd@lax.example'];
      const r = await run('python3', ['-c', SPLITTING_CLIENT, JSON.stringify({ port, lmtp, rcpts })], {
        timeoutMs: 20_000,
      });
      assert.equal(r.code, 0, r.stderr);
      const rounds = JSON.parse(r.stdout) as Array<{ sent: string[]; refused: Record<string, [number, string]> }>;
      assert.deepEqual(
        rounds.map((x) => x.sent),
        [
          ['a@strict.example', 'c@strict.example'],
          ['b@lax.example', 'd@lax.example'],
        ],
        r.stdout,
      );
      assert.match(rounds[0]!.refused['b@lax.example']![1], /^4\.5\.3 Too many recipients/);
    }
    const q = await queueJson(cfg);
    const byClass = q.map((m) => ({
      rcpts: m.recipients.map((x: Record<string, string>) => x.address).join(','),
      policy: /^X-Policy: (\S+)\r$/m.exec(messageData(cfg, m.id))?.[1],
      door: m.origin.door,
    }));
    const seen = byClass.map((x) => `${x.door} ${x.policy} ${x.rcpts}`).sort();
    assert.deepEqual(seen, [
      'lmtp lax b@lax.example,d@lax.example',
      'lmtp strict a@strict.example,c@strict.example',
      'smtp lax b@lax.example,d@lax.example',
      'smtp strict a@strict.example,c@strict.example',
    ]);
  } finally {
    await stopDaemon(d);
  }
});

const OBSERVER = `
import fs from 'node:fs';
export default (options) => {
  const note = (e) => fs.appendFileSync(options.file, JSON.stringify(e) + '\\n');
  return {
    queued: note,
    delivering: note,
    delivered: note,
    deferred: note,
    bounced: note,
  };
};
`;
const THROWING_OBSERVER = `export default () => ({ delivered() { throw new Error('observer broke'); } });`;

test('observer hooks: queued, delivering, delivered and deferred events, a throwing observer changes nothing', async () => {
  const cfg = await makeConfig();
  const events = path.join(cfg.dir, 'events.jsonl');
  const observer = hookFile(cfg, 'observer.js', OBSERVER);
  const throwing = hookFile(cfg, 'throwing.js', THROWING_OBSERVER);
  fs.appendFileSync(
    path.join(cfg.configDir, 'ferrymail.yaml'),
    `hooks:\n  - path: ${observer}\n    options: { file: ${JSON.stringify(events)} }\n  - path: ${throwing}\n`,
  );
  // the remote recipient's route is a server that refuses connections: its delivery is deferred
  writeRoute(cfg, '10-closed.yaml', [
    'name: closed',
    'permanent: true',
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${await freePort()}`,
    '  tls: none',
  ]);
  const list = await ferrymail(cfg, ['hooks', 'list']);
  assert.match(list.stdout, /^queued:\n {2}1\. observer/m);
  const d = await startDaemon(cfg);
  try {
    const c = await RawSmtp.connect(cfg.port);
    await c.reply();
    await c.cmd('EHLO client.example');
    await c.cmd('MAIL FROM:<a@remote.example>');
    assert.match(await c.cmd('RCPT TO:<root@test.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<someone@far.example>'), /^250/);
    await c.cmd('DATA');
    c.send('Subject: watched\r\n\r\nhello\r\n.\r\n');
    const id = /queued as (\S+)/.exec(await c.reply())![1]!;
    c.close();
    // the observer may be caught between creating the file and writing its line: whole lines only
    const seen = async (): Promise<Array<Record<string, any>>> =>
      fs.existsSync(events)
        ? fs
            .readFileSync(events, 'utf8')
            .split('\n')
            .slice(0, -1) // what follows the last line end is a line not yet whole
            .map((l) => JSON.parse(l))
        : [];
    assert.ok(
      await waitUntil(async () => (await seen()).some((e) => e.kind === 'delivered'), 15_000),
      `${JSON.stringify(await seen())}\n${d.log()}`,
    );
    assert.ok(await waitUntil(async () => (await seen()).some((e) => e.kind === 'deferred'), 15_000), d.log());
    const all = await seen();
    assert.ok(all.every((e) => e.id === id));
    const queued = all.find((e) => e.kind === 'queued')!;
    assert.deepEqual(queued.recipients, ['root@test.example', 'someone@far.example']);
    assert.equal(queued.door, 'smtp');
    assert.ok(all.some((e) => e.kind === 'delivering' && e.route === 'local'));
    const delivered = all.find((e) => e.kind === 'delivered')!;
    assert.deepEqual(delivered.recipients, ['root@test.example']);
    assert.match(delivered.reply, /^250 /);
    assert.deepEqual(all.find((e) => e.kind === 'deferred')!.recipients, ['someone@far.example']);
    assert.ok(
      await waitUntil(() => /hook throwing failed at delivered: observer broke; it only observes/.test(d.log()), 5000),
    );
  } finally {
    await stopDaemon(d);
  }
});
