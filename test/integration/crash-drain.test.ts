// Crash safety of the queue run: `ferrymail flush` drains a queue to a recording server and is killed with
// SIGKILL at random moments, at least 100 times, each time started again on the same spool. No message
// may be lost, and none may reach the server twice: a recipient whose hand-over a kill cut short is held
// as uncertain (the route says `uncertain: hold`), never sent again as if nothing had happened.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { newRecipient, type Envelope } from '../../src/domain/envelope.js';
import { openStore } from '../../src/spool/store.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import { FERRYMAIL, makeConfig, queueJson, smtpRoute, spoolFiles, writeRoute, type TestConfig } from '../helpers.js';
import { startSink, type Sink } from '../support/sink.js';

const KILLS = 100;
/** Bounded by its progress (KILLS kills of a run that was still going); this cap only keeps a hung run
 * from hanging the suite. */
const SAFETY_MS = 240_000;
const BATCH = 150;

let sink: Sink | null = null;
let cfg: TestConfig | null = null;
after(async () => {
  await sink?.close();
  if (cfg) fs.rmSync(cfg.dir, { recursive: true, force: true });
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Queues n messages straight into the spool (the door is not what this test is about); returns their
 * tokens. */
async function fill(spool: string, n: number, from: number): Promise<string[]> {
  const writer = openSpoolWriter(spool);
  const tokens: string[] = [];
  for (let i = from; i < from + n; i++) {
    const token = `drain-${i}`;
    const w = await writer.begin();
    w.stream.end(Buffer.from(`From: alice@laptop.local\r\nSubject: ${token}\r\n\r\n${token}\r\n`));
    const partial: Omit<Envelope, 'id' | 'size'> = {
      version: 1,
      arrival: new Date().toISOString(),
      sender: 'alice@laptop.local',
      recipients: [newRecipient(`${token}@example.org`)],
      origin: { door: 'smtp', peer: '127.0.0.1' },
      protocol: 'ESMTP',
    };
    await w.commit(partial);
    tokens.push(token);
  }
  return tokens;
}

/** One run of `ferrymail flush`; kill(ms) kills it after ms unless it ended first. */
function flushRun(c: TestConfig): { killAfter(ms: number): Promise<boolean>; done: Promise<number | null> } {
  const child = spawn(process.execPath, [FERRYMAIL, '--config-dir', c.configDir, 'flush', '--connection', 'home'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr.resume();
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    done,
    killAfter: async (ms) => {
      const ended = await Promise.race([done.then(() => true), sleep(ms).then(() => false)]);
      if (ended) return false;
      child.kill('SIGKILL');
      await done;
      return true;
    },
  };
}

test('SIGKILL of queue runs at random moments loses no message and sends none twice', {
  timeout: 400_000,
}, async () => {
  sink = await startSink();
  cfg = await makeConfig();
  writeRoute(cfg, '10-home.yaml', smtpRoute('home', 'home', sink.port, { more: ['uncertain: hold'] }));
  const tokens = await fill(cfg.spool, BATCH, 0);
  let kills = 0;
  let runs = 0;
  const started = Date.now();
  while (kills < KILLS && Date.now() - started < SAFETY_MS) {
    // most kills land in the first half second: start-up, recovery, the listing and the first sessions
    const r = flushRun(cfg);
    runs++;
    if (await r.killAfter(40 + Math.floor(Math.random() * 500))) kills++;
    // the queue ran dry before the kill: more mail, so that the next kills land in a drain again
    else if (sink.got.length >= tokens.length - 20) tokens.push(...(await fill(cfg.spool, BATCH, tokens.length)));
  }
  assert.equal(kills, KILLS, `reached ${KILLS} kills (${runs} runs in ${Date.now() - started} ms)`);
  // a last run that is not killed sends what waits
  assert.equal(await flushRun(cfg).done, 0);

  const seen = new Map<string, number>();
  for (const m of sink.got) {
    const token = /^Subject: (drain-\d+)\r$/m.exec(m.data)?.[1];
    assert.ok(token, 'every message the server got is one of ours, whole');
    assert.ok(m.data.endsWith(`\r\n${token}\r\n`), `${token} arrived whole`);
    seen.set(token, (seen.get(token) ?? 0) + 1);
  }
  const twice = [...seen].filter(([, n]) => n > 1).map(([t]) => t);
  assert.deepEqual(twice, [], 'no message reached the server twice');

  const q = await queueJson(cfg);
  const held = new Set<string>();
  for (const e of q)
    for (const rc of e.recipients as { state: string; address: string }[]) {
      assert.equal(rc.state, 'uncertain', `only recipients a kill left uncertain wait: ${JSON.stringify(rc)}`);
      held.add(rc.address.replace(/@.*/, ''));
    }
  const lost = tokens.filter((t) => !seen.has(t) && !held.has(t));
  assert.deepEqual(lost, [], 'every message reached the server or is held as uncertain');
  assert.ok(held.size < kills, `fewer uncertain recipients (${held.size}) than kills (${kills})`);

  const files = spoolFiles(cfg);
  assert.deepEqual(files.corrupt, [], 'corrupt/ empty');
  assert.deepEqual(files.tmp, [], 'tmp/ empty: files of killed runs removed by the next run');
  // a kill between a removal's two unlinks (the envelope, then the data) leaves data no envelope names:
  // recovery removes it once it is older than its grace period, and nothing else
  const left = new Set(q.map((e) => e.id as string));
  const orphans = files.msg.filter((id) => !left.has(id));
  const old = new Date(Date.now() - 3600_000);
  for (const id of orphans) fs.utimesSync(path.join(cfg.spool, 'msg', id), old, old);
  const report = await openStore(cfg.spool).recover();
  assert.equal(report.orphansRemoved, orphans.length);
  assert.deepEqual(spoolFiles(cfg).msg.sort(), [...left].sort(), 'msg/ holds the data of the messages still queued');
});
