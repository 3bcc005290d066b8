// An offline queue run writes nothing: a message that waits because the host is offline is deferred
// once with the reason, and later runs (the daemon's every minute, a flush by hand) leave its envelope
// untouched while the reason stays the same; once online, it leaves at once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ferrymail, makeConfig, queueJson, sendmail, smtpRoute, type TestConfig, writeRoute } from '../helpers.js';
import { type Sink, startSink } from '../support/sink.js';

let cfg: TestConfig;
let sink: Sink;

before(async () => {
  sink = await startSink();
  cfg = await makeConfig('online:\n  state_file: online');
  fs.writeFileSync(path.join(cfg.configDir, 'online'), '');
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', sink.port));
});
after(() => sink.close());

test('offline runs after the first leave the envelope untouched; online, the message leaves', async () => {
  const r = await sendmail(cfg, ['-f', 'alice@laptop.local', 'friend@remote.example'], 'Subject: wait\n\nwait\n');
  assert.equal(r.code, 0, r.stderr);
  const first = await ferrymail(cfg, ['flush']);
  assert.match(first.stdout, /1 deferred/);
  const [m] = await queueJson(cfg);
  assert.match(m!.recipients[0].last_error, /^451 4\.4\.1 offline/);
  const file = path.join(cfg.spool, 'queue', m!.id);
  const before = fs.statSync(file);
  const text = fs.readFileSync(file, 'utf8');
  for (let i = 0; i < 3; i++) {
    const again = await ferrymail(cfg, ['flush']);
    assert.match(again.stdout, /1 deferred/, 'still counted as waiting');
  }
  const after = fs.statSync(file);
  assert.equal(after.ino, before.ino, 'not replaced');
  assert.equal(after.mtimeMs, before.mtimeMs, 'not written');
  assert.equal(fs.readFileSync(file, 'utf8'), text);
  fs.writeFileSync(path.join(cfg.configDir, 'online'), 'home\n');
  const online = await ferrymail(cfg, ['flush']);
  assert.match(online.stdout, /1 delivered/, online.stdout);
  assert.equal(sink.got.length, 1);
});
