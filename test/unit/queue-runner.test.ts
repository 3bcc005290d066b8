// The queue runner with transports that answer as told: fall-through, last_route, retry times, offline,
// failures, uncertain deliveries, expiry and locked messages; every state lands in the spool.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { newRecipient, type Envelope } from '../../src/domain/envelope.js';
import type { Outcome } from '../../src/domain/outcome.js';
import { nullLogger } from '../../src/log/logger.js';
import { DEFAULT_RETRY } from '../../src/queue/retry.js';
import { runQueue, type RunnerDeps } from '../../src/queue/runner.js';
import type { Route } from '../../src/route/types.js';
import { openStore } from '../../src/spool/store.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import { tempDir } from '../helpers.js';

/** A route serving "home". */
function route(name: string, over: Partial<Route> = {}): Route {
  const open = { allow: [], deny: [] };
  return {
    name,
    connections: ['home'],
    permanent: false,
    senders: open,
    recipients: open,
    fromHeader: open,
    rewrite: { envelopeSender: [['*@laptop.local', '*@isp.example']], from: [], sender: [], replyTo: [], mailFollowupTo: [] },
    lastRoute: false,
    connectErrorFail: false,
    transport: {},
    ...over,
  };
}

/** A spool with one message to the given recipients. */
async function spoolWith(rcpts: string[], arrival = new Date()): Promise<{ root: string; id: string }> {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  w.stream.end('Subject: t\r\n\r\nbody\r\n');
  const env = await w.commit({ version: 1, arrival: arrival.toISOString(), sender: 'me@laptop.local', recipients: rcpts.map((r) => newRecipient(r)), origin: { door: 'sendmail' }, protocol: 'local' });
  return { root, id: env.id };
}

/** Runner deps whose transports answer by (route, recipient). */
function deps(root: string, routes: Route[], answer: (route: string, rcpt: string) => Outcome, opts: { online?: boolean; now?: number } = {}) {
  const calls: Array<{ route: string; sender: string; to: string[] }> = [];
  const d: RunnerDeps = {
    store: openStore(root),
    routes,
    online: async () => (opts.online === false ? { online: false, why: 'test' } : { online: true, connection: 'home' }),
    transportFor: (r) => ({
      deliver: async (req) => {
        calls.push({ route: r.name, sender: req.sender, to: req.recipients.map((x) => x.address) });
        return { relay: r.name, results: req.recipients.map((x) => ({ address: x.address, outcome: answer(r.name, x.address), reply: `${answer(r.name, x.address) === 'ok' ? '250 2.0.0' : answer(r.name, x.address) === 'permfail' ? '550 5.1.1' : '451 4.4.1'} from ${r.name}` })) };
      },
    }),
    messageFor: () => Readable.from([Buffer.from('x')]),
    retry: DEFAULT_RETRY,
    log: nullLogger,
    now: () => opts.now ?? Date.now(),
  };
  return { d, calls };
}

/** The message's envelope, or null when it left the queue. */
async function envelope(root: string, id: string): Promise<Envelope | null> {
  return openStore(root).get(id).then((e) => e.envelope, () => null);
}

test('delivered by the first route: the message leaves the queue, the envelope sender rewritten', async () => {
  const { root, id } = await spoolWith(['a@x.org', 'b@x.org']);
  const { d, calls } = deps(root, [route('r1'), route('r2')], () => 'ok');
  const rep = await runQueue(d);
  assert.equal(rep.delivered, 2);
  assert.deepEqual(calls, [{ route: 'r1', sender: 'me@isp.example', to: ['a@x.org', 'b@x.org'] }]);
  assert.equal(await envelope(root, id), null);
});

test('a temporary failure falls through to the next route, but not past last_route', async () => {
  const a = await spoolWith(['a@x.org']);
  const fall = deps(a.root, [route('r1'), route('r2')], (r) => (r === 'r1' ? 'tempfail' : 'ok'));
  await runQueue(fall.d);
  assert.deepEqual(fall.calls.map((c) => c.route), ['r1', 'r2']);
  assert.equal(await envelope(a.root, a.id), null);

  const b = await spoolWith(['a@x.org']);
  const now = Date.now();
  const last = deps(b.root, [route('r1', { lastRoute: true }), route('r2')], (r) => (r === 'r1' ? 'tempfail' : 'ok'), { now });
  await runQueue(last.d);
  assert.deepEqual(last.calls.map((c) => c.route), ['r1']);
  const env = (await envelope(b.root, b.id))!;
  assert.equal(env.recipients[0]!.state, 'deferred');
  assert.equal(env.recipients[0]!.attempts, 1);
  assert.equal(env.recipients[0]!.route, 'r1');
  assert.equal(Date.parse(env.recipients[0]!.nextAttempt!), now + 300_000);
  // not due yet: a second run leaves it alone; later it is tried again and succeeds
  const early = deps(b.root, [route('r1')], () => 'ok', { now: now + 1000 });
  assert.equal((await runQueue(early.d)).messages, 0);
  const later = deps(b.root, [route('r1')], () => 'ok', { now: now + 301_000 });
  assert.equal((await runQueue(later.d)).delivered, 1);
  assert.equal(await envelope(b.root, b.id), null);
});

test('offline: deferred with the reason, no attempt counted', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const { d, calls } = deps(root, [route('r1')], () => 'ok', { online: false });
  await runQueue(d);
  assert.equal(calls.length, 0);
  const r = (await envelope(root, id))!.recipients[0]!;
  assert.equal(r.state, 'deferred');
  assert.equal(r.attempts, 0);
  assert.match(r.lastError!, /offline \(test\)/);
});

test('permanent failures and uncertain deliveries are recorded; the message stays while any is open', async () => {
  const { root, id } = await spoolWith(['ok@x.org', 'bad@x.org', 'maybe@x.org']);
  const { d } = deps(root, [route('r1'), route('r2')], (_r, a) => (a.startsWith('ok') ? 'ok' : a.startsWith('bad') ? 'permfail' : 'uncertain'));
  const rep = await runQueue(d);
  assert.deepEqual([rep.delivered, rep.failed, rep.uncertain], [1, 1, 1]);
  const env = (await envelope(root, id))!;
  assert.deepEqual(env.recipients.map((r) => r.state), ['delivered', 'failed', 'uncertain']);
  assert.equal((await runQueue(deps(root, [route('r1')], () => 'ok').d)).messages, 0, 'uncertain is not retried on its own');
});

test('connect_error_fail turns a connection failure into a permanent one; expired mail fails', async () => {
  const a = await spoolWith(['a@lan.example']);
  await runQueue(deps(a.root, [route('lan', { connectErrorFail: true })], () => 'tempfail').d);
  assert.equal(await envelope(a.root, a.id), null, 'failed for good, so it left the queue');

  const b = await spoolWith(['a@x.org'], new Date(Date.now() - 6 * 86_400_000));
  const { d, calls } = deps(b.root, [route('r1')], () => 'ok');
  const rep = await runQueue(d);
  assert.equal(rep.failed, 1);
  assert.equal(calls.length, 0);
});

test('a message locked by someone else is skipped', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const lock = await openStore(root).lockMessage(id);
  const { d, calls } = deps(root, [route('r1')], () => 'ok');
  const rep = await runQueue(d);
  assert.equal(rep.busy, 1);
  assert.equal(calls.length, 0);
  await lock.release();
});

test('a permanent failure queues an RFC 3464 notice to the sender, with the null sender; a bounce is never bounced', async () => {
  const { buildNotice } = await import('../../src/queue/bounce.js');
  const { root, id } = await spoolWith(['ok@x.org', 'bad@x.org']);
  const notices: Array<{ recipient: string; text: string }> = [];
  const { d } = deps(root, [route('r1')], (_r, a) => (a.startsWith('bad') ? 'permfail' : 'ok'));
  d.enqueueNotice = async (n) => void notices.push(n);
  d.hostname = 'relay.example';
  await runQueue(d);
  assert.equal(notices.length, 1);
  const n = notices[0]!;
  assert.equal(n.recipient, 'me@laptop.local');
  assert.match(n.text, /^From: MAILER-DAEMON@relay\.example/);
  assert.match(n.text, /Content-Type: multipart\/report; report-type=delivery-status/);
  assert.match(n.text, /Final-Recipient: rfc822; bad@x\.org\r\nAction: failed\r\nStatus: 5\.1\.1\r\nDiagnostic-Code: smtp; 550 5\.1\.1 from r1/);
  assert.doesNotMatch(n.text, /Final-Recipient: rfc822; ok@x\.org/);
  assert.match(n.text, /Content-Type: text\/rfc822-headers\r\n\r\nReceived|Content-Type: text\/rfc822-headers\r\n\r\nSubject: t/);
  assert.equal(await envelope(root, id), null);
  const bounceEnv = { ...(await spoolWith(['x@y.org'])), sender: '' };
  assert.equal(buildNotice({ id: bounceEnv.id, sender: '', arrival: new Date().toISOString() } as Envelope, [newRecipient('x@y.org')], 'failed', '', 'h'), null);
  assert.equal(buildNotice({ id: 'I', sender: 'a@b.org', arrival: new Date().toISOString() } as Envelope, [newRecipient('x@y.org', { notify: ['NEVER'] })], 'failed', '', 'h'), null);
});

test('several messages are delivered at once; one transport per route serves the run and is closed once at the end', async () => {
  const root = tempDir();
  const spool = openSpoolWriter(root);
  for (let i = 0; i < 12; i++) {
    const w = await spool.begin();
    w.stream.end(`Subject: ${i}\r\n\r\nbody\r\n`);
    await w.commit({ version: 1, arrival: new Date().toISOString(), sender: 'me@laptop.local', recipients: [newRecipient(`r${i}@x.org`)], origin: { door: 'sendmail' }, protocol: 'local' });
  }
  let built = 0;
  let closed = 0;
  let inFlight = 0;
  let most = 0;
  const { d } = deps(root, [route('r1')], () => 'ok');
  d.parallel = 4;
  d.transportFor = () => {
    built++;
    return {
      deliver: async (req) => {
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setImmediate(r));
        inFlight--;
        return { relay: 'r1', results: req.recipients.map((x) => ({ address: x.address, outcome: 'ok' as const, reply: '250 2.0.0 ok' })) };
      },
      close: async () => void closed++,
    };
  };
  const rep = await runQueue(d);
  assert.equal(rep.delivered, 12);
  assert.equal(built, 1);
  assert.equal(closed, 1);
  assert.ok(most > 1 && most <= 4, `at most 4 deliveries at once, more than 1 (saw ${most})`);
  assert.equal((await openStore(root).list()).entries.length, 0);
});
