// Settling what a killed queue run left in the in-flight journal: the attempts count a note carries
// decides whether an outcome was written after it, whatever the clock did; a message whose note cannot
// be settled now (another process holds its lock) is left alone by the run instead of being sent as if
// it had never been.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { newRecipient } from '../../src/domain/envelope.js';
import { nullLogger } from '../../src/log/logger.js';
import { settleInflight } from '../../src/queue/recover.js';
import { DEFAULT_RETRY } from '../../src/queue/retry.js';
import { runQueue } from '../../src/queue/runner.js';
import type { Route } from '../../src/route/types.js';
import { openStore } from '../../src/spool/store.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import { tempDir } from '../helpers.js';

const route: Route = {
  name: 'r1',
  connections: ['*'],
  permanent: true,
  senders: { allow: [], deny: [] },
  recipients: { allow: [], deny: [] },
  fromHeader: { allow: [], deny: [] },
  rewrite: { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] },
  lastRoute: false,
  connectErrorFail: false,
  uncertain: 'hold',
  transport: {},
};

/** A spool with one message whose recipient has `attempts` attempts, the last at `last`. */
async function spoolWith(attempts: number, last: Date): Promise<{ root: string; id: string }> {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  w.stream.end('Subject: t\r\n\r\nbody\r\n');
  const r = { ...newRecipient('a@x.org'), attempts, state: 'deferred' as const, lastAttempt: last.toISOString() };
  const env = await w.commit({
    version: 1,
    arrival: new Date().toISOString(),
    sender: 'me@x.org',
    recipients: [r],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  return { root, id: env.id };
}

/** Leaves a journal note as a killed run would. */
function note(root: string, n: Record<string, unknown>): void {
  fs.appendFileSync(path.join(root, 'inflight'), `${JSON.stringify(n)}\n`);
}

test('an outcome written after the note is seen by the attempts count even when the clock went back', async () => {
  // the note says 1 attempt before; the envelope recorded a 2nd one, stamped earlier than the note
  const s = await spoolWith(2, new Date(Date.now() - 3_600_000));
  note(s.root, { id: s.id, route: 'r1', addresses: ['a@x.org'], attempts: [1], t: Date.now() });
  const r = await settleInflight(openStore(s.root), [route], nullLogger);
  assert.deepEqual(r, { clean: true, unsettled: new Set() });
  const env = (await openStore(s.root).get(s.id)).envelope;
  assert.equal(env.recipients[0]!.state, 'deferred', 'not made uncertain');
  assert.equal(env.recipients[0]!.attempts, 2);
});

test('no outcome after the note is seen even when the clock jumped ahead of it', async () => {
  // the last attempt is stamped after the note, but the count did not grow: the hand-over's outcome is unknown
  const s = await spoolWith(1, new Date(Date.now() + 3_600_000));
  note(s.root, { id: s.id, route: 'r1', addresses: ['a@x.org'], attempts: [1], t: Date.now() });
  await settleInflight(openStore(s.root), [route], nullLogger);
  const env = (await openStore(s.root).get(s.id)).envelope;
  assert.equal(env.recipients[0]!.state, 'uncertain');
  assert.equal(env.recipients[0]!.attempts, 2);
});

test('a note of an older version, without counts, is judged by time', async () => {
  const s = await spoolWith(1, new Date(Date.now() - 60_000));
  note(s.root, { id: s.id, route: 'r1', addresses: ['a@x.org'], t: Date.now() });
  await settleInflight(openStore(s.root), [route], nullLogger);
  assert.equal((await openStore(s.root).get(s.id)).envelope.recipients[0]!.state, 'uncertain');
});

test('a message whose note cannot be settled now is not delivered by the run', async () => {
  const s = await spoolWith(1, new Date(Date.now() - 60_000));
  note(s.root, { id: s.id, route: 'r1', addresses: ['a@x.org'], attempts: [1], t: Date.now() });
  const store = openStore(s.root);
  // another process holds the message's lock through the settling
  const held = await store.lockMessage(s.id, 0);
  assert.ok(held);
  const settled = await settleInflight(store, [route], nullLogger);
  await held.release();
  assert.equal(settled.clean, false, 'the journal must be kept');
  assert.deepEqual([...settled.unsettled], [s.id]);
  const calls: string[] = [];
  const report = await runQueue({
    store,
    routes: [route],
    online: async () => ({ online: true, connection: 'home' }),
    transportFor: () => ({
      deliver: async (req) => {
        calls.push(req.id);
        return {
          relay: 'r1',
          results: req.recipients.map((x) => ({ address: x.address, outcome: 'ok', reply: '250' })),
        };
      },
    }),
    messageFor: () => Readable.from([Buffer.from('x')]),
    retry: DEFAULT_RETRY,
    log: nullLogger,
    enqueueNotice: async () => undefined,
    hostname: 'x.org',
    force: true,
    unsettled: settled.unsettled,
  });
  assert.deepEqual(calls, [], 'not handed over again while its note is open');
  assert.equal(report.delivered, 0);
  assert.equal((await store.get(s.id)).envelope.recipients[0]!.state, 'deferred');
  // a later run that can settle it makes it uncertain, as the note says
  const again = await settleInflight(store, [route], nullLogger);
  assert.equal(again.clean, true);
  assert.equal((await store.get(s.id)).envelope.recipients[0]!.state, 'uncertain');
});
