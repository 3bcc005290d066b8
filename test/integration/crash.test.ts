// Crash safety of the SMTP door: clients keep sending while the daemon is killed with SIGKILL at random
// moments and restarted on the same configuration, spool and port. Every message that got "250 ... queued
// as ID" must be in the queue with its data intact, and no queue entry may be half-written.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { decodeEnvelope } from '../../src/spool/envelope-codec.js';
import { isId } from '../../src/spool/id.js';
import { envelopeBehind } from '../../src/spool/trailer.js';
import {
  makeConfig,
  messageData,
  queueJson,
  RawSmtp,
  spoolFiles,
  startDaemon,
  type RunningDaemon,
  type TestConfig,
} from '../helpers.js';

const CLIENTS = 4;
const KILLS = 100;
/** The loop is bounded by its progress (KILLS kills, each after a restart that listens again), not by a
 * time a loaded machine may not meet; this cap only keeps a hung daemon from hanging the suite. */
const SAFETY_MS = 240_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let d: RunningDaemon | null = null;
let cfg: TestConfig | null = null;
after(async () => {
  if (d && d.child.exitCode === null && d.child.signalCode === null) await d.kill();
  if (cfg) fs.rmSync(cfg.dir, { recursive: true, force: true });
});

/** What the clients saw. */
interface Tally {
  /** queue id → the token its body carries, for every "250 ... queued as ID". */
  acked: Map<string, string>;
  attempts: number;
  failures: number;
}

/** One client: sends small messages in a loop on one connection, reconnecting after any failure. */
async function client(n: number, port: number, tally: Tally, running: () => boolean): Promise<void> {
  let seq = 0;
  while (running()) {
    let c: RawSmtp | null = null;
    try {
      c = await RawSmtp.connect(port);
      const expect = async (line: string | null, re: RegExp): Promise<string> => {
        if (line !== null) c!.send(`${line}\r\n`);
        const r = await c!.reply(5000);
        if (!re.test(r)) throw new Error(`unexpected reply ${r}`);
        return r;
      };
      await expect(null, /^220 /);
      await expect('EHLO crash.example', /^250[ -]/);
      while (running()) {
        const token = `token-${n}-${seq++}-${crypto.randomUUID()}`;
        tally.attempts++;
        await expect(`MAIL FROM:<client${n}@crash.example>`, /^250 /);
        await expect('RCPT TO:<rcpt@example.org>', /^250 /);
        await expect('DATA', /^354 /);
        const lines = 1 + crypto.randomInt(40);
        const body = Array.from({ length: lines }, (_, i) => `line ${i} of ${token}`).join('\r\n');
        const reply = await expect(`Subject: ${token}\r\n\r\n${body}\r\n${token}\r\n.`, /^250 /);
        const id = /queued as ([0-9A-Z]+)/.exec(reply)?.[1];
        if (!id) throw new Error(`250 without an id: ${reply}`);
        tally.acked.set(id, token);
      }
    } catch {
      // the daemon was killed under us, or is not listening yet: expected, try again
      tally.failures++;
      await sleep(5 + crypto.randomInt(20));
    } finally {
      c?.close();
    }
  }
}

test('SIGKILL at random moments loses no acknowledged message and leaves no half-written entry', {
  timeout: 300_000,
}, async (t) => {
  cfg = await makeConfig();
  d = await startDaemon(cfg);
  const tally: Tally = { acked: new Map(), attempts: 0, failures: 0 };
  let running = true;
  const clients = Array.from({ length: CLIENTS }, (_, i) => client(i, cfg!.port, tally, () => running));

  const started = Date.now();
  let kills = 0;
  let ackedAtLastKill = 0;
  let killsWithProgress = 0;
  try {
    while (kills < KILLS && Date.now() - started < SAFETY_MS) {
      await sleep(20 + crypto.randomInt(230));
      if (tally.acked.size > ackedAtLastKill) killsWithProgress++;
      ackedAtLastKill = tally.acked.size;
      await d.kill();
      kills++;
      d = await startDaemon(cfg);
    }
  } finally {
    running = false;
    await Promise.all(clients);
  }
  t.diagnostic(
    `${kills} kills in ${Date.now() - started} ms, ${tally.attempts} attempts, ${tally.acked.size} acknowledged, ${tally.failures} client failures`,
  );
  assert.equal(kills, KILLS, `reached ${KILLS} kills`);
  assert.ok(
    killsWithProgress >= KILLS / 2,
    `messages were acknowledged between most kills (${killsWithProgress} of ${kills})`,
  );
  assert.ok(tally.failures > 0, 'the kills did interrupt clients');

  // a clean stop of the last daemon (it recovered the spool when it started)
  assert.equal(await d.stop(), 0, d.log());
  d = null;

  // every envelope in queue/ decodes and has its complete data file, read straight from the spool
  const files = spoolFiles(cfg);
  assert.deepEqual(files.corrupt, [], 'corrupt/ empty');
  assert.deepEqual(files.hold, [], 'hold/ empty');
  assert.deepEqual(files.tmp, [], 'tmp/ empty: files of killed writers removed at start-up');
  let cutLater = 0;
  for (const id of files.queue) {
    assert.ok(isId(id), `queue/ holds only queue ids: ${id}`);
    const env = decodeEnvelope(fs.readFileSync(path.join(cfg.spool, 'queue', id), 'utf8'), id);
    const dataFile = path.join(cfg.spool, 'msg', id);
    assert.ok(fs.existsSync(dataFile), `${id} has its data file`);
    // a kill between the mover's rename and its cut of the data leaves the envelope behind the message:
    // whole, naming the same message, and never read (readers stop at the size)
    const file = fs.readFileSync(dataFile);
    if (file.length !== env.size) {
      const fd = fs.openSync(dataFile, 'r');
      const behind = envelopeBehind(fd, id);
      fs.closeSync(fd);
      assert.deepEqual(behind && { ...behind, recipients: [] }, { ...env, recipients: [] }, `${id}: behind the data`);
      cutLater++;
    }
    const data = file.subarray(0, env.size).toString('latin1');
    assert.equal(Buffer.byteLength(data, 'latin1'), env.size, `${id}: data file as long as the envelope says`);
    assert.ok(data.endsWith('\r\n'), `${id}: data ends with CRLF`);
    const token = /^Subject: (token-\d+-\d+-[0-9a-f-]{36})\r$/m.exec(data)?.[1];
    assert.ok(token && data.endsWith(`\r\n${token}\r\n`), `${id}: a whole message`);
    assert.equal(env.recipients.length, 1);
  }
  t.diagnostic(`${cutLater} data files still carried their envelope behind the message`);

  // the listing shows exactly what queue/ holds, and nothing was moved to corrupt/ by reading it
  const listed = await queueJson(cfg);
  assert.deepEqual(listed.map((e) => e.id as string).sort(), [...files.queue].sort(), 'listing = queue/');
  assert.deepEqual(spoolFiles(cfg).corrupt, [], 'corrupt/ still empty');

  // every acknowledged message is there with its own token
  const byId = new Map(listed.map((e) => [e.id as string, e]));
  const missing = [...tally.acked.keys()].filter((id) => !byId.has(id));
  assert.deepEqual(missing, [], 'every acknowledged id is queued');
  for (const [id, token] of tally.acked) {
    const data = messageData(cfg, id);
    assert.ok(
      data.includes(`\r\nSubject: ${token}\r\n`) && data.endsWith(`\r\n${token}\r\n`),
      `${id} carries ${token}`,
    );
    const n = /^token-(\d+)-/.exec(token)![1];
    assert.equal(byId.get(id)!.sender, `client${n}@crash.example`);
  }
  const orphans = files.msg.filter((id) => !files.queue.includes(id));
  t.diagnostic(
    `${files.queue.length} queued (${files.queue.length - tally.acked.size} stored but never acknowledged), ${orphans.length} data files without envelope`,
  );
});
