// The queue runner with transports that answer as told: fall-through, last_route, retry times, offline,
// failures, uncertain deliveries, expiry and locked messages; every state lands in the spool.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { newRecipient, type Envelope } from '../../src/domain/envelope.js';
import type { Outcome } from '../../src/domain/outcome.js';
import { nullLogger, type Logger } from '../../src/log/logger.js';
import { DEFAULT_RETRY } from '../../src/queue/retry.js';
import { RouteHealth } from '../../src/queue/health.js';
import { runQueue, RunSignal, type RunnerDeps } from '../../src/queue/runner.js';
import type { Route } from '../../src/route/types.js';
import { openStore } from '../../src/spool/store.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import { encodeEnvelope } from '../../src/spool/envelope-codec.js';
import { crc32, trailerFor } from '../../src/spool/trailer.js';
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
    rewrite: {
      envelopeSender: [['*@laptop.local', '*@isp.example']],
      from: [],
      sender: [],
      replyTo: [],
      mailFollowupTo: [],
    },
    lastRoute: false,
    connectErrorFail: false,
    uncertain: 'retry',
    transport: {},
    ...over,
  };
}

/** A spool with one message to the given recipients. */
async function spoolWith(rcpts: string[], arrival = new Date()): Promise<{ root: string; id: string }> {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  w.stream.end('Subject: t\r\n\r\nbody\r\n');
  const env = await w.commit({
    version: 1,
    arrival: arrival.toISOString(),
    sender: 'me@laptop.local',
    recipients: rcpts.map((r) => newRecipient(r)),
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  return { root, id: env.id };
}

/** Runner deps whose transports answer by (route, recipient). */
function deps(
  root: string,
  routes: Route[],
  answer: (route: string, rcpt: string) => Outcome,
  opts: { online?: boolean; now?: number; connection?: string } = {},
) {
  const calls: Array<{ route: string; sender: string; to: string[] }> = [];
  const d: RunnerDeps = {
    store: openStore(root),
    routes,
    online: async () =>
      opts.online === false ? { online: false, why: 'test' } : { online: true, connection: opts.connection ?? 'home' },
    transportFor: (r) => ({
      deliver: async (req) => {
        calls.push({ route: r.name, sender: req.sender, to: req.recipients.map((x) => x.address) });
        return {
          relay: r.name,
          results: req.recipients.map((x) => ({
            address: x.address,
            outcome: answer(r.name, x.address),
            reply: `${answer(r.name, x.address) === 'ok' ? '250 2.0.0' : answer(r.name, x.address) === 'permfail' ? '550 5.1.1' : '451 4.4.1'} from ${r.name}`,
          })),
        };
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
  return openStore(root)
    .get(id)
    .then(
      (e) => e.envelope,
      () => null,
    );
}

test('delivered by the first route: the message leaves the queue, the envelope sender rewritten', async () => {
  const { root, id } = await spoolWith(['a@x.org', 'b@x.org']);
  const { d, calls } = deps(root, [route('r1'), route('r2')], () => 'ok');
  const rep = await runQueue(d);
  assert.equal(rep.delivered, 2);
  assert.deepEqual(calls, [{ route: 'r1', sender: 'me@isp.example', to: ['a@x.org', 'b@x.org'] }]);
  assert.equal(await envelope(root, id), null);
});

test('a run with a route to try cuts an envelope a killed daemon left behind the data; an offline run does not', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const data = path.join(root, 'msg', id);
  const message = fs.readFileSync(data);
  const env = (await envelope(root, id))!;
  // as a daemon killed between its mover's rename into queue/ and its cut leaves it
  const encoded = Buffer.from(encodeEnvelope(env));
  fs.appendFileSync(data, trailerFor(message.length, encoded, crc32(message)));
  assert.ok(fs.statSync(data).size > message.length);
  await runQueue(deps(root, [route('r1')], () => 'tempfail', { online: false }).d);
  assert.ok(fs.statSync(data).size > message.length, 'an offline run writes nothing');
  await runQueue(deps(root, [route('r1')], () => 'tempfail').d);
  assert.deepEqual(fs.readFileSync(data), message);
  assert.equal((await envelope(root, id))!.recipients[0]!.state, 'deferred');
});

test('a temporary failure falls through to the next route, but not past last_route', async () => {
  const a = await spoolWith(['a@x.org']);
  const fall = deps(a.root, [route('r1'), route('r2')], (r) => (r === 'r1' ? 'tempfail' : 'ok'));
  await runQueue(fall.d);
  assert.deepEqual(
    fall.calls.map((c) => c.route),
    ['r1', 'r2'],
  );
  assert.equal(await envelope(a.root, a.id), null);

  const b = await spoolWith(['a@x.org']);
  const now = Date.now();
  const last = deps(b.root, [route('r1', { lastRoute: true }), route('r2')], (r) => (r === 'r1' ? 'tempfail' : 'ok'), {
    now,
  });
  await runQueue(last.d);
  assert.deepEqual(
    last.calls.map((c) => c.route),
    ['r1'],
  );
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

test('offline: a message never tried is counted as waiting and left as it was', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const before = fs.statSync(path.join(root, 'queue', id));
  const { d, calls } = deps(root, [route('r1')], () => 'ok', { online: false });
  const rep = await runQueue(d);
  assert.equal(calls.length, 0);
  assert.equal(rep.deferred, 1);
  const r = (await envelope(root, id))!.recipients[0]!;
  assert.equal(r.state, 'queued');
  assert.equal(r.attempts, 0);
  assert.equal(r.lastError, undefined);
  assert.equal(fs.statSync(path.join(root, 'queue', id)).mtimeMs, before.mtimeMs, 'not written');
});

test('online where no route serves the connection: a run opens a waiting message once, then leaves it unread', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const file = path.join(root, 'queue', id);
  // tried before, elsewhere: its record says why it waited then
  const env = JSON.parse(fs.readFileSync(file, 'utf8'));
  Object.assign(env.recipients[0], { state: 'deferred', attempts: 1, lastError: '451 4.4.1 from r1' });
  fs.writeFileSync(file, JSON.stringify(env));
  const { d, calls } = deps(root, [route('r1')], () => 'ok', { connection: 'cafe' });
  const first = await runQueue(d);
  assert.equal(first.deferred, 1);
  assert.equal(first.unopened ?? 0, 0, 'a new reason is recorded once');
  const r = (await envelope(root, id))!.recipients[0]!;
  assert.equal(r.lastError, '451 4.4.1 no route accepts this recipient on connection cafe');
  const written = fs.statSync(file);
  // not due yet by its retry time: a run by hand tries it all the same
  const again = await runQueue({ ...d, force: true });
  assert.equal(again.deferred, 1);
  assert.equal(again.unopened, 1, 'the same reason: not even read');
  assert.equal(fs.statSync(file).mtimeMs, written.mtimeMs, 'not written');
  // a message never tried waits unread from the first run on
  const fresh = await spoolWith(['b@x.org']);
  const never = await runQueue(deps(fresh.root, [route('r1')], () => 'ok', { connection: 'cafe' }).d);
  assert.equal(never.unopened, 1);
  assert.equal((await envelope(fresh.root, fresh.id))!.recipients[0]!.state, 'queued');
  assert.equal(calls.length, 0);
});

test('offline: a message that owes a delay warning or has expired is still opened', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const file = path.join(root, 'queue', id);
  const env = JSON.parse(fs.readFileSync(file, 'utf8'));
  env.arrival = new Date(Date.now() - 10 * 86400_000).toISOString();
  fs.writeFileSync(file, JSON.stringify(env));
  const { d } = deps(root, [route('r1')], () => 'ok', { online: false });
  const rep = await runQueue(d);
  assert.equal(rep.failed, 1, 'expired after its lifetime, offline or not');
});

test('permanent failures and uncertain deliveries are recorded; the message stays while any is open', async () => {
  const { root, id } = await spoolWith(['ok@x.org', 'bad@x.org', 'maybe@x.org']);
  const { d } = deps(root, [route('r1'), route('r2')], (_r, a) =>
    a.startsWith('ok') ? 'ok' : a.startsWith('bad') ? 'permfail' : 'uncertain',
  );
  const rep = await runQueue(d);
  assert.deepEqual([rep.delivered, rep.failed, rep.uncertain], [1, 1, 1]);
  const env = (await envelope(root, id))!;
  assert.deepEqual(
    env.recipients.map((r) => r.state),
    ['delivered', 'failed', 'deferred'],
    'uncertain: retried once by default',
  );
  assert.equal(env.recipients[2]!.uncertain, 1);
  assert.match(env.recipients[2]!.lastError!, /^uncertain: /);
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
  assert.match(
    n.text,
    /Final-Recipient: rfc822; bad@x\.org\r\nAction: failed\r\nStatus: 5\.1\.1\r\nDiagnostic-Code: smtp; 550 5\.1\.1 from r1/,
  );
  assert.doesNotMatch(n.text, /Final-Recipient: rfc822; ok@x\.org/);
  assert.match(
    n.text,
    /Content-Type: text\/rfc822-headers\r\n\r\nReceived|Content-Type: text\/rfc822-headers\r\n\r\nSubject: t/,
  );
  assert.equal(await envelope(root, id), null);
  const bounceEnv = { ...(await spoolWith(['x@y.org'])), sender: '' };
  assert.equal(
    buildNotice(
      { id: bounceEnv.id, sender: '', arrival: new Date().toISOString() } as Envelope,
      [newRecipient('x@y.org')],
      'failed',
      '',
      'h',
    ),
    null,
  );
  assert.equal(
    buildNotice(
      { id: 'I', sender: 'a@b.org', arrival: new Date().toISOString() } as Envelope,
      [newRecipient('x@y.org', { notify: ['NEVER'] })],
      'failed',
      '',
      'h',
    ),
    null,
  );
});

test('several messages are delivered at once; one transport per route serves the run and is closed once at the end', async () => {
  const root = tempDir();
  const spool = openSpoolWriter(root);
  for (let i = 0; i < 12; i++) {
    const w = await spool.begin();
    w.stream.end(`Subject: ${i}\r\n\r\nbody\r\n`);
    await w.commit({
      version: 1,
      arrival: new Date().toISOString(),
      sender: 'me@laptop.local',
      recipients: [newRecipient(`r${i}@x.org`)],
      origin: { door: 'sendmail' },
      protocol: 'local',
    });
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
        return {
          relay: 'r1',
          results: req.recipients.map((x) => ({ address: x.address, outcome: 'ok' as const, reply: '250 2.0.0 ok' })),
        };
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

/** A logger that keeps its lines. */
function captureLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, log: (event, text, fields) => void lines.push(`${event} ${text} ${JSON.stringify(fields ?? {})}`) };
}

test('an uncertain delivery is retried once with a warning that it may arrive twice; a second one is held until released', async () => {
  const { root, id } = await spoolWith(['maybe@x.org']);
  const t0 = Date.now();
  const first = deps(root, [route('r1')], () => 'uncertain', { now: t0 });
  const log = captureLog();
  first.d.log = log;
  await runQueue(first.d);
  assert.ok(
    log.lines.some((l) => /^warn \S+ delivery uncertain .*retrying once, so the recipient may get it twice/.test(l)),
    log.lines.join('\n'),
  );
  let r = (await envelope(root, id))!.recipients[0]!;
  assert.equal(r.state, 'deferred');
  // the retry, also uncertain: now held for a person, never tried again on its own
  const second = deps(root, [route('r1')], () => 'uncertain', { now: t0 + 301_000 });
  await runQueue(second.d);
  assert.equal(second.calls.length, 1);
  r = (await envelope(root, id))!.recipients[0]!;
  assert.deepEqual([r.state, r.uncertain, r.nextAttempt], ['uncertain', 2, undefined]);
  const third = deps(root, [route('r1')], () => 'ok', { now: t0 + 10 * 86_400_000 });
  assert.equal((await runQueue(third.d)).messages, 0, 'a held uncertain recipient is neither tried nor expired');
  // queue release: tried again
  await openStore(root).release(id);
  assert.equal((await envelope(root, id))!.recipients[0]!.state, 'queued');
  const fourth = deps(root, [route('r1')], () => 'ok', { now: t0 + 302_000 });
  assert.equal((await runQueue(fourth.d)).delivered, 1);
  assert.equal(await envelope(root, id), null);
});

test('a route with uncertain: hold holds the recipient at once; the other recipients go on', async () => {
  const { root, id } = await spoolWith(['maybe@x.org', 'later@x.org']);
  const { d } = deps(root, [route('r1', { uncertain: 'hold' })], (_r, a) =>
    a.startsWith('maybe') ? 'uncertain' : 'tempfail',
  );
  const rep = await runQueue(d);
  assert.equal(rep.uncertain, 1);
  const env = (await envelope(root, id))!;
  assert.deepEqual(
    env.recipients.map((r) => r.state),
    ['uncertain', 'deferred'],
  );
  assert.equal(env.version, 2, 'written in the version that knows the uncertain count');
  await assert.rejects(
    openStore(root)
      .hold(id)
      .then(() => openStore(root).release(id))
      .then(() => openStore(root).release(id)),
    /not held/,
  );
});

test('retry times come from the policy: retry_min doubling up to retry_max', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const t0 = Date.now();
  const policy = { min: 60, max: 150, lifetime: 86_400, warnings: [] };
  const waits: number[] = [];
  let now = t0;
  for (let i = 0; i < 4; i++) {
    const { d } = deps(root, [route('r1')], () => 'tempfail', { now });
    d.retry = policy;
    await runQueue(d);
    const next = Date.parse((await envelope(root, id))!.recipients[0]!.nextAttempt!);
    waits.push((next - now) / 1000);
    now = next;
  }
  assert.deepEqual(waits, [60, 120, 150, 150]);
});

test('a delay notice at each warning age, once, with Will-Retry-Until; the next attempt is brought forward to the warning', async () => {
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  const { root, id } = await spoolWith(['slow@x.org', 'quiet@x.org', 'never@x.org'], new Date(t0));
  const env0 = (await openStore(root).get(id)).envelope;
  env0.recipients[1]!.notify = ['FAILURE'];
  env0.recipients[2]!.notify = ['NEVER'];
  const lock = await openStore(root).lockMessage(id);
  await openStore(root).update(env0, 'queue');
  await lock.release();
  const policy = { min: 3000, max: 7200, lifetime: 86_400, warnings: [3600, 7200] };
  const notices: Array<{ recipient: string; text: string; kind: string }> = [];
  const runAt = async (now: number) => {
    const { d } = deps(root, [route('r1')], () => 'tempfail', { now });
    d.retry = policy;
    d.hostname = 'relay.example';
    d.enqueueNotice = async (n) => void notices.push(n);
    return runQueue(d);
  };
  await runAt(t0 + 1_000_000);
  assert.equal(notices.length, 0);
  // 1000 s + 3000 s backoff would pass the 3600 s warning: the attempt comes at the warning instead
  assert.equal((await envelope(root, id))!.recipients[0]!.nextAttempt, new Date(t0 + 3_600_000).toISOString());
  await runAt(t0 + 3_600_000);
  assert.equal(notices.length, 1);
  const n = notices[0]!;
  assert.equal(n.kind, 'delayed');
  assert.equal(n.recipient, 'me@laptop.local');
  assert.match(n.text, /Final-Recipient: rfc822; slow@x\.org\r\nAction: delayed\r\nStatus: 4\.4\.1\r\n/);
  assert.match(n.text, /Will-Retry-Until: Fri, 02 Jan 2026 00:00:00 \+0000/);
  assert.doesNotMatch(n.text, /quiet@x\.org|never@x\.org/, 'NOTIFY without DELAY, and NEVER, get no delay notice');
  const env = (await envelope(root, id))!;
  assert.deepEqual(
    env.recipients.map((r) => r.warned),
    [[3600], [3600], [3600]],
  );
  assert.equal(env.version, 2);
  await runAt(t0 + 3_700_000);
  assert.equal(notices.length, 1, 'no second notice for the same age');
  await runAt(t0 + 7_300_000);
  assert.equal(notices.length, 2, 'the second age has its own notice');
});

test('no delay notice for a bounce (null sender), but the warning is recorded', async () => {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  w.stream.end('Subject: t\r\n\r\nbody\r\n');
  const t0 = Date.now() - 5 * 3600_000;
  const env = await w.commit({
    version: 1,
    arrival: new Date(t0).toISOString(),
    sender: '',
    recipients: [newRecipient('a@x.org')],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  const notices: unknown[] = [];
  const { d } = deps(root, [route('r1')], () => 'tempfail');
  d.enqueueNotice = async (n) => void notices.push(n);
  await runQueue(d);
  assert.equal(notices.length, 0);
  assert.deepEqual((await envelope(root, env.id))!.recipients[0]!.warned, [14_400]);
});

test('a notice no route can carry now is delivered locally too; one a working route carries is not', async () => {
  // offline: the failure notice of an expired message cannot leave
  const a = await spoolWith(['a@x.org'], new Date(Date.now() - 6 * 86_400_000));
  const local: Array<{ kind: string; summary: string }> = [];
  const off = deps(a.root, [route('r1')], () => 'ok', { online: false });
  off.d.enqueueNotice = async () => undefined;
  off.d.localNotice = async (n) => void local.push(n);
  await runQueue(off.d);
  assert.equal(local.length, 1);
  assert.equal(local[0]!.kind, 'failed');
  assert.match(local[0]!.summary, /^<a@x\.org>: 550 4\.4\.7 message expired/);

  // the only route fails temporarily: the delay notice would wait behind it, so it is delivered locally
  const b = await spoolWith(['b@x.org'], new Date(Date.now() - 5 * 3600_000));
  const stuck = deps(b.root, [route('r1')], () => 'tempfail');
  stuck.d.enqueueNotice = async () => undefined;
  stuck.d.localNotice = async (n) => void local.push(n);
  await runQueue(stuck.d);
  assert.equal(local.length, 2);
  assert.equal(local[1]!.kind, 'delayed');

  // a second route that works would carry it: not local (unless local_notices is always)
  const c = await spoolWith(['c@x.org'], new Date(Date.now() - 5 * 3600_000));
  const two = deps(
    c.root,
    [route('r1', { recipients: { allow: ['*@x.org'], deny: [] }, lastRoute: true }), route('r2')],
    () => 'tempfail',
  );
  two.d.enqueueNotice = async () => undefined;
  two.d.localNotice = async (n) => void local.push(n);
  await runQueue(two.d);
  assert.equal(local.length, 2);
  const e = await spoolWith(['e@x.org'], new Date(Date.now() - 5 * 3600_000));
  const always = deps(
    e.root,
    [route('r1', { recipients: { allow: ['*@x.org'], deny: [] }, lastRoute: true }), route('r2')],
    () => 'tempfail',
  );
  always.d.localNotices = 'always';
  always.d.localNotice = async (n) => void local.push(n);
  await runQueue(always.d);
  assert.equal(local.length, 3);
});

test('a local notice that fails is logged and changes nothing else', async () => {
  const { root, id } = await spoolWith(['a@x.org'], new Date(Date.now() - 5 * 3600_000));
  const { d } = deps(root, [route('r1')], () => 'tempfail', { online: false });
  const log = captureLog();
  d.log = log;
  d.localNotice = async () => {
    throw new Error('mailbox full');
  };
  await runQueue(d);
  assert.ok(log.lines.some((l) => /local notice failed.*mailbox full/.test(l)));
  assert.deepEqual((await envelope(root, id))!.recipients[0]!.warned, [14_400]);
});

test('onlyRoute: only that route is tried; recipients it does not carry stay as they were', async () => {
  const { root, id } = await spoolWith(['lan@lan.example', 'far@x.org']);
  const lan = route('lan', { recipients: { allow: ['*@lan.example'], deny: [] } });
  const isp = route('isp');
  const { d, calls } = deps(root, [lan, isp], () => 'ok');
  d.onlyRoute = 'lan';
  const rep = await runQueue(d);
  assert.deepEqual(
    calls.map((c) => [c.route, c.to]),
    [['lan', ['lan@lan.example']]],
  );
  assert.equal(rep.delivered, 1);
  const r = (await envelope(root, id))!.recipients[1]!;
  assert.deepEqual([r.state, r.attempts, r.lastError, r.nextAttempt], ['queued', 0, undefined, undefined]);
  // with a tempfail on the only route tried there is no fall-through to the others
  const b = await spoolWith(['a@x.org']);
  const only = deps(b.root, [route('r1'), route('r2')], () => 'tempfail');
  only.d.onlyRoute = 'r1';
  await runQueue(only.d);
  assert.deepEqual(
    only.calls.map((c) => c.route),
    ['r1'],
  );
});

test("routes with From filters see the message's From header", async () => {
  const { root } = await spoolWith(['a@x.org']);
  const byFrom = route('work', { fromHeader: { allow: ['*@work.example'], deny: [] } });
  const { d, calls } = deps(root, [byFrom, route('other')], () => 'ok');
  await runQueue(d);
  assert.deepEqual(
    calls.map((c) => c.route),
    ['other'],
    'the spooled message has no work From',
  );
  const root2 = tempDir();
  const w = await openSpoolWriter(root2).begin();
  w.stream.end('From: Me <me@work.example>\r\nSubject: t\r\n\r\nbody\r\n');
  await w.commit({
    version: 1,
    arrival: new Date().toISOString(),
    sender: 'me@laptop.local',
    recipients: [newRecipient('a@x.org')],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  const second = deps(root2, [byFrom, route('other')], () => 'ok');
  await runQueue(second.d);
  assert.deepEqual(
    second.calls.map((c) => c.route),
    ['work'],
  );
});

test('a message held, changed or removed between the listing and its lock is taken as it is then', async () => {
  // held: not delivered, stays in hold/ only
  const a = await spoolWith(['a@x.org']);
  const held = deps(a.root, [route('r1')], () => 'ok');
  const real = held.d.store;
  held.d.store = { ...real, lockMessage: async (id, t) => (await real.hold(id), real.lockMessage(id, t)) };
  assert.equal((await runQueue(held.d)).delivered, 0);
  assert.deepEqual(held.calls, []);
  const listed = await openStore(a.root).list();
  assert.deepEqual(
    listed.entries.map((e) => e.place),
    ['hold'],
  );

  // changed: the recipient another process settled is not delivered again
  const b = await spoolWith(['done@x.org', 'open@x.org']);
  const changed = deps(b.root, [route('r1')], () => 'ok');
  const realB = changed.d.store;
  changed.d.store = {
    ...realB,
    lockMessage: async (id, t) => {
      const e = (await realB.get(id)).envelope;
      e.recipients[0]!.state = 'delivered';
      await realB.update(e, 'queue');
      return realB.lockMessage(id, t);
    },
  };
  await runQueue(changed.d);
  assert.deepEqual(
    changed.calls.map((c) => c.to),
    [['open@x.org']],
  );

  // removed: skipped quietly
  const c = await spoolWith(['gone@x.org']);
  const removed = deps(c.root, [route('r1')], () => 'ok');
  const realC = removed.d.store;
  const lines: string[] = [];
  removed.d.log = { log: (event, text) => void lines.push(`${event} ${text}`) };
  removed.d.store = { ...realC, lockMessage: async (id, t) => (await realC.remove(id), realC.lockMessage(id, t)) };
  assert.equal((await runQueue(removed.d)).delivered, 0);
  assert.deepEqual(removed.calls, []);
  assert.ok(!lines.some((l) => l.startsWith('error')), lines.join('\n'));
});

test('a transport that throws or leaves a recipient out defers those recipients; a notice that cannot be queued keeps the failure for later', async () => {
  const a = await spoolWith(['x@x.org', 'y@x.org']);
  const thrown = deps(a.root, [route('r1')], () => 'ok');
  thrown.d.transportFor = () => ({ deliver: async () => Promise.reject(new Error('boom')) });
  const rep = await runQueue(thrown.d);
  assert.equal(rep.deferred, 2);
  assert.deepEqual(
    (await envelope(a.root, a.id))!.recipients.map((r) => r.state),
    ['deferred', 'deferred'],
  );

  const b = await spoolWith(['x@x.org', 'y@x.org']);
  const partial = deps(b.root, [route('r1')], () => 'ok');
  partial.d.transportFor = () => ({
    deliver: async (req) => ({
      relay: 'r1',
      results: [{ address: req.recipients[0]!.address, outcome: 'ok' as const, reply: '250 ok' }],
    }),
  });
  await runQueue(partial.d);
  const rs = (await envelope(b.root, b.id))!.recipients;
  assert.deepEqual(
    rs.map((r) => r.state),
    ['delivered', 'deferred'],
  );
  assert.match(rs[1]!.lastError!, /gave no result/);

  const c = await spoolWith(['ok@x.org', 'bad@x.org']);
  const full = deps(c.root, [route('r1')], (_r, to) => (to.startsWith('bad') ? 'permfail' : 'ok'));
  full.d.enqueueNotice = async () => Promise.reject(Object.assign(new Error('spool is full'), { code: 'ENOSPC' }));
  await runQueue(full.d);
  const after = (await envelope(c.root, c.id))!.recipients;
  assert.deepEqual(
    after.map((r) => r.state),
    ['delivered', 'deferred'],
    'the delivery is recorded, the failure waits for its notice',
  );
  assert.match(after[1]!.lastError!, /failure notice could not be queued: spool is full/);
});

test('an address listed twice in an envelope is delivered once', async () => {
  const { root, id } = await spoolWith(['twice@x.org', 'Twice@x.org', 'other@x.org']);
  const { d, calls } = deps(root, [route('r1')], () => 'ok');
  const rep = await runQueue(d);
  assert.deepEqual(
    calls.map((c) => c.to),
    [['twice@x.org', 'other@x.org']],
  );
  assert.equal(rep.delivered, 2);
  assert.equal(await envelope(root, id), null);
});

test('of an address listed twice, a copy already delivered wins; a failure whose notice is owed gets no delay notice', async () => {
  const { root, id } = await spoolWith(['twice@x.org', 'twice@x.org']);
  const store = openStore(root);
  const e = (await store.get(id)).envelope;
  e.recipients[1]!.state = 'delivered';
  await store.update(e, 'queue');
  const { d, calls } = deps(root, [route('r1')], () => 'ok');
  await runQueue(d);
  assert.deepEqual(calls, [], 'the delivered copy wins: nothing is sent again');

  // expired past a warning age, its failure notice cannot be queued: no delay notice either
  const old = await spoolWith(['late@x.org'], new Date(Date.now() - 6 * 86_400_000));
  const kinds: string[] = [];
  const full = deps(old.root, [route('r1')], () => 'tempfail');
  full.d.retry = { ...DEFAULT_RETRY, warnings: [3600] };
  full.d.enqueueNotice = async (n) => {
    kinds.push(n.kind);
    if (n.kind === 'failed') throw new Error('spool is full');
  };
  const rep = await runQueue(full.d);
  assert.deepEqual(kinds, ['failed']);
  assert.deepEqual([rep.failed, rep.deferred], [0, 1]);
});

/** Several messages, one recipient each. */
async function spoolMany(n: number): Promise<{ root: string; ids: string[] }> {
  const root = tempDir();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const w = await openSpoolWriter(root).begin();
    w.stream.end('Subject: t\r\n\r\nbody\r\n');
    ids.push(
      (
        await w.commit({
          version: 1,
          arrival: new Date().toISOString(),
          sender: 'me@laptop.local',
          recipients: [newRecipient(`r${i}@x.org`)],
          origin: { door: 'sendmail' },
          protocol: 'local',
        })
      ).id,
    );
  }
  return { root, ids };
}

test('a route whose server cannot be reached is tried once: the rest of its mail is deferred at once or falls through', async () => {
  const { root, ids } = await spoolMany(30);
  let tries = 0;
  const { d } = deps(root, [route('dead'), route('backup')], (r) => (r === 'backup' ? 'ok' : 'tempfail'));
  d.transportFor = (r) => ({
    deliver: async (req) => {
      if (r.name === 'backup')
        return {
          relay: 'b',
          results: req.recipients.map((x) => ({ address: x.address, outcome: 'ok', reply: '250 2.0.0 ok' })),
        };
      tries++;
      return {
        relay: 'dead:25',
        down: { reason: '451 4.4.1 cannot connect to dead:25: ECONNREFUSED' },
        results: req.recipients.map((x) => ({
          address: x.address,
          outcome: 'tempfail',
          reply: '451 4.4.1 cannot connect to dead:25: ECONNREFUSED',
        })),
      };
    },
  });
  const downs: string[] = [];
  d.health = new RouteHealth();
  d.onRouteDown = (r) => downs.push(r.name);
  const rep = await runQueue(d);
  assert.ok(tries <= 8, `${tries} attempts: at most the messages already under way when it went down`);
  assert.equal(rep.delivered, 30, 'all fell through to the backup');
  assert.deepEqual(downs, ['dead'], 'said once');
  for (const id of ids) assert.equal(await envelope(root, id), null);
  // without a backup: deferred at once with the route's reason, no attempt counted
  const more = await spoolMany(5);
  const again = deps(more.root, [route('dead')], () => 'tempfail');
  again.d.health = d.health;
  let tried = 0;
  again.d.transportFor = () => ({
    deliver: async (req) => (
      tried++,
      { relay: 'x', results: req.recipients.map((x) => ({ address: x.address, outcome: 'ok', reply: '250 ok' })) }
    ),
  });
  await runQueue(again.d);
  assert.equal(tried, 0, 'a route that is down is not tried during its hold-down');
  const e = await envelope(more.root, more.ids[0]!);
  assert.equal(e!.recipients[0]!.attempts, 0);
  assert.match(
    e!.recipients[0]!.lastError!,
    /^451 4\.4\.1 route dead is down since .*delivery temporarily suspended: cannot connect to dead:25/,
  );
});

test('a refused login keeps the route down until its settings change', async () => {
  const h = new RouteHealth();
  const r = route('isp', { transport: { host: 'a' } });
  assert.equal(h.mark(r, { reason: '454 4.7.0 AUTH PLAIN failed: 535 bad', auth: true }, 0, 1000), true);
  assert.ok(h.check(r, 10 ** 9), 'still down long after any hold-down');
  h.clear();
  assert.ok(h.check(r, 10 ** 9), 'a change of connection does not clear a refused login');
  assert.equal(h.check(route('isp', { transport: { host: 'b' } }), 10 ** 9), null, 'changed settings clear it');
  h.mark(r, { reason: 'x' }, 0, 1000);
  assert.ok(h.check(r, 500));
  assert.equal(h.check(r, 1000), null, 'an unreachable server is tried again after the hold-down');
});

test('retargeted to another connection, a run starts no further message and cuts the routes it cannot use', async () => {
  const { root } = await spoolMany(20);
  const signal = new RunSignal();
  let aborted = '';
  let started = 0;
  const { d } = deps(root, [route('home'), route('office', { connections: ['office'] })], () => 'ok');
  d.parallel = 2;
  d.signal = signal;
  d.transportFor = () => ({
    deliver: (req) =>
      new Promise((resolve) => {
        started++;
        if (started === 2) signal.retarget({ online: true, connection: 'office', why: 'test' });
        setTimeout(
          () =>
            resolve({
              relay: 'h',
              results: req.recipients.map((x) => ({
                address: x.address,
                outcome: aborted ? 'tempfail' : 'ok',
                reply: aborted ? '451 4.4.2 cut' : '250 ok',
              })),
            }),
          20,
        );
      }),
    abort: (why) => (aborted = why),
  });
  const rep = await runQueue(d);
  assert.match(aborted, /the connection changed to office/);
  assert.ok(rep.messages <= 3, `${rep.messages} messages started`);
});

test('an uncertain recipient is retried only by the route that left it uncertain, unless it says retry-any', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const store = openStore(root);
  const e = (await store.get(id)).envelope;
  Object.assign(e.recipients[0]!, { state: 'deferred', uncertain: 1, route: 'home', attempts: 1 });
  await store.update(e, 'queue');
  // on the office connection the home route is not used: the recipient waits for it
  const office = deps(root, [route('home'), route('office', { connections: ['office'] })], () => 'ok');
  office.d.online = async () => ({ online: true, connection: 'office' });
  await runQueue({ ...office.d, force: true });
  assert.deepEqual(office.calls, []);
  assert.match(
    (await envelope(root, id))!.recipients[0]!.lastError!,
    /waits for route home, which left its last delivery uncertain/,
  );
  const anyRoute = deps(
    root,
    [route('home', { uncertain: 'retry-any' }), route('office', { connections: ['office'] })],
    () => 'ok',
  );
  anyRoute.d.online = async () => ({ online: true, connection: 'office' });
  await runQueue({ ...anyRoute.d, force: true });
  assert.deepEqual(
    anyRoute.calls.map((c) => c.route),
    ['office'],
  );
});

test('connect_error_fail makes a connection failure final with a 5xx reply', async () => {
  const { root, id } = await spoolWith(['a@lan.example', 'b@lan.example']);
  const { d } = deps(root, [route('lan', { connectErrorFail: true })], () => 'tempfail');
  const notices: string[] = [];
  d.enqueueNotice = async (n) => void notices.push(n.summary);
  await runQueue(d);
  assert.equal(await envelope(root, id), null, 'both failed: the message left');
  assert.match(notices.join('\n'), /554 5\.4\.1 from lan \(connect_error_fail\)/);
});

test('a manual run that fails does not push the automatic schedule back', async () => {
  const { root, id } = await spoolWith(['a@x.org']);
  const t0 = Date.parse('2026-12-05T10:00:00Z');
  const auto = deps(root, [route('r')], () => 'tempfail', { now: t0 });
  await runQueue({ ...auto.d, force: false });
  const first = (await envelope(root, id))!.recipients[0]!;
  assert.equal(first.nextAttempt, new Date(t0 + 300_000).toISOString());
  for (let i = 1; i <= 3; i++) {
    const manual = deps(root, [route('r')], () => 'tempfail', { now: t0 + i * 10_000 });
    await runQueue({ ...manual.d, force: true });
  }
  const after = (await envelope(root, id))!.recipients[0]!;
  assert.equal(after.attempts, 4, 'every attempt is counted');
  assert.equal(after.manual, 3);
  assert.equal(after.nextAttempt, first.nextAttempt, 'the automatic attempt stays where it was');
  const next = deps(root, [route('r')], () => 'tempfail', { now: t0 + 300_000 });
  await runQueue({ ...next.d, force: false });
  const later = (await envelope(root, id))!.recipients[0]!;
  assert.equal(
    later.nextAttempt,
    new Date(t0 + 300_000 + 600_000).toISOString(),
    'the second automatic attempt doubles once, not four times',
  );
});
