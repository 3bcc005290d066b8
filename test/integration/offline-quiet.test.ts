// An offline queue run writes nothing: a message never tried stays as it was queued (the listing says it
// waits because the host is offline), one deferred for being offline is left alone while that reason stays
// the same, by the daemon's runs every minute and by a flush by hand; once online, it leaves at once.
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

test('offline runs leave the envelope untouched; online, the message leaves', async () => {
  const r = await sendmail(cfg, ['-f', 'alice@laptop.local', 'friend@remote.example'], 'Subject: wait\n\nwait\n');
  assert.equal(r.code, 0, r.stderr);
  const [queued] = await queueJson(cfg);
  const file = path.join(cfg.spool, 'queue', queued!.id);
  const before = fs.statSync(file);
  const text = fs.readFileSync(file, 'utf8');
  const first = await ferrymail(cfg, ['flush']);
  assert.match(first.stdout, /1 deferred/);
  const [m] = await queueJson(cfg);
  assert.equal(m!.recipients[0].state, 'queued', 'never tried, and so recorded');
  assert.equal(m!.recipients[0].last_error, null);
  assert.match(m!.recipients[0].now, /offline/, 'the listing says why it waits');
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

test('a recipient deferred offline by an earlier version keeps its record while the reason stays', async () => {
  fs.writeFileSync(path.join(cfg.configDir, 'online'), '');
  const r = await sendmail(cfg, ['-f', 'alice@laptop.local', 'friend@remote.example'], 'Subject: old\n\nold\n');
  assert.equal(r.code, 0, r.stderr);
  const [m] = await queueJson(cfg);
  const file = path.join(cfg.spool, 'queue', m!.id);
  // what the first offline run of earlier versions wrote
  const env = JSON.parse(fs.readFileSync(file, 'utf8'));
  const why = (await ferrymail(cfg, ['online'])).stdout.trim().replace(/^offline: /, '');
  Object.assign(env.recipients[0], { state: 'deferred', attempts: 1, lastError: `451 4.4.1 offline (${why})` });
  fs.writeFileSync(`${file}.new`, JSON.stringify(env, null, 1));
  fs.renameSync(`${file}.new`, file);
  const before = fs.statSync(file);
  const again = await ferrymail(cfg, ['flush']);
  assert.match(again.stdout, /1 deferred/);
  const after = fs.statSync(file);
  assert.equal(after.ino, before.ino, 'not replaced');
  assert.equal(after.mtimeMs, before.mtimeMs, 'not written');
});
