// ferrymail watch and status --short against the real daemon: the connection as it changes (a state file
// rewritten), a message queued, sent through a route to a recording sink, one refused (bounced), each a
// JSON line as it happens; the text form with control characters replaced; a watch that ends when the
// daemon stops; no daemon, exit 69.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  FERRYMAIL,
  ferrymail,
  makeConfig,
  sendmail,
  smtpRoute,
  startDaemon,
  stopDaemon,
  waitUntil,
  writeRoute,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';
import { type Sink, startSink } from '../support/sink.js';

let cfg: TestConfig;
let d: RunningDaemon | undefined;
let sink: Sink;

before(async () => {
  sink = await startSink();
  cfg = await makeConfig('online:\n  state_file: online');
  fs.writeFileSync(path.join(cfg.configDir, 'online'), '');
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', sink.port));
});
after(async () => {
  await stopDaemon(d);
  await sink.close();
});

/** Runs ferrymail watch; its output lines so far, and a way to end it. */
function watch(args: string[]): { lines(): string[]; done: Promise<number | null>; stop(): void } {
  const child = spawn(process.execPath, [FERRYMAIL, '--config-dir', cfg.configDir, 'watch', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout.on('data', (c) => (text += c));
  child.stderr.on('data', (c) => (text += c));
  const done = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  return { lines: () => text.split('\n').filter(Boolean), done, stop: () => child.kill('SIGTERM') };
}

test('no daemon: watch exits 69 and says so; status --short is one line', async () => {
  const w = watch([]);
  assert.equal(await w.done, 69);
  assert.match(w.lines().join('\n'), /no daemon runs: nothing to watch/);
  const s = await ferrymail(cfg, ['status', '--short']);
  assert.equal(s.code, 69);
  assert.match(s.stdout, /^not running, offline \(.*\) · 0 queued\n$/);
});

test('watch --json: the connection as it changes, queued, sent and bounced, one JSON line each', async () => {
  d = await startDaemon(cfg);
  const w = watch(['--json']);
  const events = (): Array<Record<string, any>> => w.lines().map((l) => JSON.parse(l));
  assert.ok(await waitUntil(() => events().some((e) => e.kind === 'status'), 10_000), w.lines().join('\n'));
  assert.equal(events()[0]!.kind, 'status');
  fs.writeFileSync(path.join(cfg.configDir, 'online'), 'home\n');
  assert.ok(await waitUntil(() => events().some((e) => e.kind === 'online' && e.connection === 'home'), 10_000));
  const ok = await sendmail(cfg, ['-f', 'alice@laptop.local', 'friend@remote.example'], 'Subject: hi\n\nhello\n');
  assert.equal(ok.code, 0, ok.stderr);
  const bad = await sendmail(cfg, ['-f', 'alice@laptop.local', 'nobody@remote.example'], 'Subject: no\n\nno\n');
  assert.equal(bad.code, 0, bad.stderr);
  assert.ok(
    await waitUntil(
      () =>
        events().some((e) => e.kind === 'delivered' && e.recipients[0] === 'friend@remote.example') &&
        events().some((e) => e.kind === 'bounced' && e.recipients[0] === 'nobody@remote.example'),
      20_000,
    ),
    w.lines().join('\n'),
  );
  const kinds = events().map((e) => e.kind);
  assert.ok(kinds.indexOf('queued') < kinds.indexOf('delivered'), kinds.join(' '));
  const sent = events().find((e) => e.kind === 'delivered')!;
  assert.equal(sent.route, 'home');
  assert.match(sent.reply, /^250 /);
  assert.match(events().find((e) => e.kind === 'bounced')!.reply, /^550 5\.1\.1/);
  for (const e of events()) assert.match(e.at, /^\d{4}-\d\d-\d\dT/);
  const short = await ferrymail(cfg, ['status', '--short']);
  assert.match(short.stdout, /^online home · \d+ queued\n$/);
  w.stop();
  await w.done;
});

test('the text form, and a watch that ends when the daemon stops', async () => {
  const w = watch(['--no-colour']);
  assert.ok(await waitUntil(() => w.lines().some((l) => /^watching the daemon/.test(l)), 10_000), w.lines().join('\n'));
  assert.match(w.lines()[0]!, /^watching the daemon \(pid \d+\): online home · \d+ queued/);
  const r = await sendmail(cfg, ['-f', 'alice@laptop.local', 'friend2@remote.example'], 'Subject: x\n\nx\n');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(
    await waitUntil(
      () => w.lines().some((l) => / sent +\S+ to <friend2@remote\.example> by home: 250 /.test(l)),
      20_000,
    ),
    w.lines().join('\n'),
  );
  assert.ok(!w.lines().join('\n').includes('\x1b['), 'no colour codes');
  await stopDaemon(d);
  d = undefined;
  assert.equal(await w.done, 0);
  assert.match(w.lines().at(-1)!, /the daemon stopped/);
});

test('desktop notifications: a bounce, and mail waiting longer than desktop.waiting_after, each told once', async () => {
  const told = path.join(cfg.dir, 'told');
  const c = await makeConfig(
    [
      'online:',
      '  state_file: online',
      'desktop:',
      '  notify: true',
      `  command: [sh, -c, 'printf "%s|%s\\n" "$*" >> ${told}', notify]`,
      '  waiting_after: 2s',
    ].join('\n'),
  );
  fs.writeFileSync(path.join(c.configDir, 'online'), '');
  writeRoute(c, '10-home.yaml', smtpRoute('home', 'home', sink.port));
  const daemon = await startDaemon(c);
  try {
    const r = await sendmail(c, ['-f', 'alice@laptop.local', 'waits@remote.example'], 'Subject: w\n\nw\n');
    assert.equal(r.code, 0, r.stderr);
    const lines = (): string[] =>
      fs.existsSync(told) ? fs.readFileSync(told, 'utf8').split('\n').filter(Boolean) : [];
    assert.ok(
      await waitUntil(() => lines().some((l) => /1 message waiting for over 2 s/.test(l)), 10_000),
      lines().join('\n'),
    );
    assert.match(lines()[0]!, /offline: /);
    fs.writeFileSync(path.join(c.configDir, 'online'), 'home\n');
    const b = await sendmail(c, ['-f', 'alice@laptop.local', 'nobody@remote.example'], 'Subject: b\n\nb\n');
    assert.equal(b.code, 0, b.stderr);
    assert.ok(
      await waitUntil(() => lines().some((l) => /Mail could not be delivered/.test(l)), 20_000),
      lines().join('\n'),
    );
    assert.match(
      lines().find((l) => /could not be delivered/.test(l))!,
      /^--urgency=critical Mail could not be delivered to nobody@remote\.example: 550 5\.1\.1/,
    );
    await new Promise((res) => setTimeout(res, 2500));
    assert.equal(lines().filter((l) => /waiting/.test(l)).length, 1, 'the waiting message is told of once');
  } finally {
    await stopDaemon(daemon);
  }
});
