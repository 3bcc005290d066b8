// The spool: ids, the envelope codec, durable commit, listing, hold/release/remove, locks, recovery.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { newRecipient, type Envelope } from '../../src/domain/envelope.js';
import { FerryError } from '../../src/errors.js';
import { decodeEnvelope, encodeEnvelope } from '../../src/spool/envelope-codec.js';
import { type RawEnvelope, readSlices, startReaderThread } from '../../src/spool/envelope-file.js';
import { idTime, isId, newId } from '../../src/spool/id.js';
import { lock, tryLock } from '../../src/spool/lock.js';
import { forgetBriefs, keptBriefs } from '../../src/spool/queue-index.js';
import { applyChange, type Entry, openStore, queueCounts, queueNames } from '../../src/spool/store.js';
import { DirSyncer, namesIn } from '../../src/spool/layout.js';
import { freeBytes, spent } from '../../src/spool/space.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import { envelopeBehind, TRAILER_BYTES } from '../../src/spool/trailer.js';
import { ROOT, tempDir } from '../helpers.js';

/** An envelope body for commit(). */
function partial(rcpts = ['b@example.org']): Omit<Envelope, 'id' | 'size'> {
  return {
    version: 1,
    arrival: new Date().toISOString(),
    sender: 'a@example.org',
    recipients: rcpts.map((r) => newRecipient(r)),
    origin: { door: 'smtp', peer: '127.0.0.1' },
    protocol: 'ESMTP',
  };
}

/** Commits one message with the given text. */
async function commit(root: string, text: string, rcpts?: string[]): Promise<Envelope> {
  const w = await openSpoolWriter(root).begin();
  w.stream.end(Buffer.from(text));
  return w.commit(partial(rcpts));
}

test("a changed header is written over a small message's own file, a large one's into a new file", async () => {
  const root = tempDir();
  const spool = openSpoolWriter(root);
  const cases: Array<{ text: string; head: string; body?: string; want: string }> = [
    { text: 'A: 1\r\n\r\nbody\r\n', head: 'X-Signed: yes\r\nA: 1\r\n', want: 'X-Signed: yes\r\nA: 1\r\n\r\nbody\r\n' },
    { text: 'A: a long field\r\nB: 2\r\n\r\nbody\r\n', head: 'B: 2\r\n', want: 'B: 2\r\n\r\nbody\r\n' },
    { text: 'A: 1\r\n\r\nold body\r\n', head: 'A: 1\r\n', body: 'new\r\n', want: 'A: 1\r\n\r\nnew\r\n' },
    { text: `A: 1\r\n\r\n${'x'.repeat(300 * 1024)}\r\n`, head: 'Z: 9\r\nA: 1\r\n', want: '' },
  ];
  cases[3]!.want = `Z: 9\r\n${cases[3]!.text}`;
  for (const c of cases) {
    const w = await spool.begin();
    w.stream.end(Buffer.from(c.text, 'latin1'));
    const headBytes = c.text.indexOf('\r\n\r\n') + 2;
    await w.rewriteHead!(headBytes, Buffer.from(c.head, 'latin1'), c.body ? Buffer.from(c.body, 'latin1') : undefined);
    assert.equal(w.bytesWritten(), c.want.length);
    const read: Buffer[] = [];
    for await (const chunk of w.read!()) read.push(chunk as Buffer);
    assert.equal(Buffer.concat(read).toString('latin1'), c.want, 'read back as rewritten');
    const env = await w.commit(partial());
    assert.equal(env.size, c.want.length);
    assert.equal(fs.readFileSync(path.join(root, 'msg', env.id), 'latin1'), c.want, 'committed as rewritten');
    assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), [], 'nothing left in tmp/');
  }
});

test('an in-place header rewrite that fails leaves the old message, or, when the old bytes cannot be put back, a message that is never committed', async () => {
  const root = tempDir();
  const spool = openSpoolWriter(root);
  const text = 'A: 1\r\n\r\nbody\r\n';
  const realWrite = fs.writeSync;
  // the rewrite's writes are the only positional ones: fail the first `fails` of them
  const failing = (fails: number) => {
    let n = 0;
    (fs as { writeSync: unknown }).writeSync = (...a: unknown[]) => {
      if (typeof a[4] === 'number' && n++ < fails) throw Object.assign(new Error('no space left'), { code: 'ENOSPC' });
      return (realWrite as (...x: unknown[]) => number)(...a);
    };
  };
  try {
    const w = await spool.begin();
    w.stream.end(Buffer.from(text));
    failing(1);
    await assert.rejects(w.rewriteHead!(6, Buffer.from('X: a much longer field than before\r\nA: 1\r\n')), {
      code: 'spool-full',
    });
    fs.writeSync = realWrite;
    const env = await w.commit(partial());
    assert.equal(fs.readFileSync(path.join(root, 'msg', env.id), 'latin1'), text, 'the old bytes were put back');

    const w2 = await spool.begin();
    w2.stream.end(Buffer.from(text));
    failing(2);
    await assert.rejects(w2.rewriteHead!(6, Buffer.from('X: 2\r\nA: 1\r\n')), { code: 'spool-full' });
    fs.writeSync = realWrite;
    await assert.rejects(w2.rewriteHead!(6, Buffer.from('X: 3\r\nA: 1\r\n')), { code: 'spool-full' }, 'not again');
    await assert.rejects(w2.commit(partial()), { code: 'spool-full' });
    assert.deepEqual(fs.readdirSync(path.join(root, 'queue')), [env.id], 'the damaged message was not queued');
    assert.deepEqual(fs.readdirSync(path.join(root, 'msg')), [env.id], 'and its data is gone');
    const w3 = await spool.begin();
    w3.stream.end(Buffer.from(text));
    await w3.abort();
    await assert.rejects(w3.rewriteHead!(6, Buffer.from('X: 4\r\nA: 1\r\n')), { code: 'spool-io' }, 'dropped');
  } finally {
    fs.writeSync = realWrite;
  }
});

test('ids are unique, sortable by time, and well formed', () => {
  const ids = Array.from({ length: 5000 }, () => newId());
  assert.equal(new Set(ids).size, ids.length);
  assert.deepEqual([...ids].sort(), ids);
  assert.ok(ids.every(isId));
  const t = Date.now();
  assert.ok(Math.abs(idTime(newId(t)) - t) <= 1);
  assert.equal(isId('../../etc/passwd'), false);
  assert.equal(isId('01M847TEDR4CPA9I'), false); // I is not in the alphabet
});

test('envelope codec round-trips and refuses damaged text', () => {
  const env = { ...partial(), id: newId(), size: 12 } as Envelope;
  assert.deepEqual(decodeEnvelope(encodeEnvelope(env), env.id), JSON.parse(JSON.stringify(env)));
  const text = encodeEnvelope(env);
  assert.throws(() => decodeEnvelope(text.slice(0, text.length / 2)));
  assert.throws(() => decodeEnvelope(text, 'OTHERIDOTHERID00'), /id does not match/);
  assert.throws(() => decodeEnvelope(text.replace('"version": 1', '"version": 9')), /version/);
  assert.throws(() => decodeEnvelope(text.replace('"queued"', '"lost"')), /state/);
});

test('commit makes data and envelope visible together; abort leaves nothing', async () => {
  const root = tempDir();
  const env = await commit(root, 'Subject: x\r\n\r\nhello\r\n');
  assert.equal(env.size, 21);
  assert.equal(fs.readFileSync(path.join(root, 'msg', env.id), 'latin1'), 'Subject: x\r\n\r\nhello\r\n');
  assert.equal(fs.readdirSync(path.join(root, 'tmp')).length, 0);
  const w = await openSpoolWriter(root).begin();
  w.stream.write('partial');
  await w.abort();
  assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), []);
  assert.deepEqual(fs.readdirSync(path.join(root, 'queue')), [env.id]);
  assert.deepEqual(fs.readdirSync(path.join(root, 'msg')), [env.id], 'the dropped message left no data');
  await w.abort();
  const mode = fs.statSync(path.join(root, 'queue', env.id)).mode & 0o777;
  assert.equal(mode, 0o600);
});

test('many concurrent commits share directory syncs and all land', async () => {
  const root = tempDir();
  const envs = await Promise.all(Array.from({ length: 50 }, (_, i) => commit(root, `n: ${i}\r\n\r\nbody ${i}\r\n`)));
  const { entries } = await openStore(root).list();
  assert.equal(entries.length, 50);
  assert.deepEqual(new Set(entries.map((e) => e.envelope.id)), new Set(envs.map((e) => e.id)));
});

test('hold, release and remove; unknown and malformed ids', async () => {
  const root = tempDir();
  const store = openStore(root);
  const env = await commit(root, 'a: b\r\n\r\nc\r\n');
  await store.hold(env.id);
  assert.equal((await store.get(env.id)).place, 'hold');
  await assert.rejects(store.hold(env.id), /already held/);
  await store.release(env.id);
  assert.equal((await store.get(env.id)).place, 'queue');
  await store.remove(env.id);
  await assert.rejects(store.get(env.id), (e: unknown) => e instanceof FerryError && e.code === 'not-found');
  assert.equal(fs.existsSync(path.join(root, 'msg', env.id)), false);
  const res = await applyChange(store, 'rm', ['../../x', env.id]);
  assert.deepEqual(
    res.map((r) => [r.ok, r.code]),
    [
      [false, 'not-found'],
      [false, 'not-found'],
    ],
  );
});

test('a corrupt envelope moves to corrupt/ and is reported, never deleted', async () => {
  const root = tempDir();
  const env = await commit(root, 'a: b\r\n\r\nc\r\n');
  const good = await commit(root, 'a: b\r\n\r\nd\r\n');
  fs.writeFileSync(path.join(root, 'queue', env.id), '{"version": 1, "id": "trunc');
  const { entries, corrupt } = await openStore(root).list();
  assert.deepEqual(
    entries.map((e) => e.envelope.id),
    [good.id],
  );
  assert.equal(corrupt.length, 1);
  assert.equal(corrupt[0]!.id, env.id);
  assert.ok(fs.existsSync(path.join(root, 'corrupt', env.id)));
  assert.ok(fs.existsSync(path.join(root, 'msg', env.id)), 'data kept');
});

test('recovery removes temp files of dead writers and old orphaned data, keeps live ones', async () => {
  const root = tempDir();
  const store = openStore(root);
  const env = await commit(root, 'a: b\r\n\r\nc\r\n');
  fs.writeFileSync(path.join(root, 'tmp', `${newId()}.999999999.msg`), 'x'); // no such pid
  fs.writeFileSync(path.join(root, 'tmp', `${newId()}.${process.ppid}.msg`), 'x'); // a live pid
  const orphan = newId();
  fs.writeFileSync(path.join(root, 'msg', orphan), 'x');
  const old = new Date(Date.now() - 3600_000);
  fs.utimesSync(path.join(root, 'msg', orphan), old, old);
  const young = newId();
  fs.writeFileSync(path.join(root, 'msg', young), 'x');
  const r = await store.recover();
  assert.equal(r.tmpRemoved, 1);
  assert.equal(r.orphansRemoved, 1);
  assert.ok(fs.existsSync(path.join(root, 'msg', young)), 'a young orphan may be a commit in progress');
  assert.ok(fs.existsSync(path.join(root, 'msg', env.id)));
});

test('a commit cut short is undone by recovery; a live writer keeps its data however old', async () => {
  const root = tempDir();
  const store = openStore(root);
  const done = await commit(root, 'a: b\r\n\r\nc\r\n');
  // a writer in the middle of its message: claim and data exist, nothing in queue/
  const w = await openSpoolWriter(root).begin();
  w.stream.write('Subject: slow\r\n');
  const old = new Date(Date.now() - 3600_000);
  fs.utimesSync(path.join(root, 'msg', w.id), old, old);
  let r = await store.recover();
  assert.equal(r.orphansRemoved, 0, 'a live writer whose client stalled for an hour keeps its data');
  assert.ok(fs.existsSync(path.join(root, 'msg', w.id)));
  const env = await (w.stream.end('\r\nbody\r\n'), w.commit(partial()));
  assert.equal(fs.readFileSync(path.join(root, 'msg', env.id), 'latin1'), 'Subject: slow\r\n\r\nbody\r\n');
  // a writer that died before its commit (its claim names a pid that does not exist), data still young
  const dead = newId();
  fs.writeFileSync(path.join(root, 'tmp', `${dead}.999999999.env`), '');
  fs.writeFileSync(path.join(root, 'msg', dead), 'Subject: half');
  r = await store.recover();
  assert.equal(r.orphansRemoved, 1);
  assert.ok(!fs.existsSync(path.join(root, 'msg', dead)), 'the uncommitted data went with its claim');
  // (a lock this process took and released is kept in tmp/ for its next lock)
  const left = fs.readdirSync(path.join(root, 'tmp')).filter((n) => !n.startsWith(`lock.${process.pid}.`));
  assert.deepEqual(left, []);
  // a claim under this very pid that this process's writer does not hold: a former process's (a restart
  // that got the same pid)
  const former = newId();
  fs.writeFileSync(path.join(root, 'tmp', `${former}.${process.pid}.env`), '');
  fs.writeFileSync(path.join(root, 'msg', former), 'Subject: before the restart');
  r = await store.recover();
  assert.ok(!fs.existsSync(path.join(root, 'msg', former)), "a former process's claim is a dead one's");
  // a dead claim beside a committed envelope (never the case in a commit, but a hand-made spool) keeps it
  fs.writeFileSync(path.join(root, 'tmp', `${done.id}.999999999.env`), '');
  r = await store.recover();
  assert.equal(r.orphansRemoved, 0);
  assert.ok(fs.existsSync(path.join(root, 'msg', done.id)));
  assert.deepEqual((await store.list()).entries.map((e) => e.envelope.id).sort(), [done.id, env.id].sort());
});

test('data removed under its writer (an older orphan sweep) fails the commit instead of queuing an empty message', async () => {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  w.stream.write('Subject: slow\r\n\r\n');
  fs.rmSync(path.join(root, 'msg', w.id));
  w.stream.end('body\r\n');
  await assert.rejects(w.commit(partial()), /cannot commit a message/);
  assert.deepEqual(fs.readdirSync(path.join(root, 'queue')), []);
  assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), []);
});

test('a message written by the previous commit (tmp/ID.PID.msg linked into msg/) is read as before', async () => {
  const root = tempDir();
  const store = openStore(root);
  await commit(root, 'x: y\r\n\r\nz\r\n'); // creates the spool
  // what the previous writer left: a committed message, and one cut short between its link and rename
  const id = newId();
  const env = { ...partial(), id, size: 10 } as Envelope;
  fs.writeFileSync(path.join(root, 'msg', id), 'a: b\r\n\r\nc\r\n'.slice(0, 10));
  fs.writeFileSync(path.join(root, 'queue', id), encodeEnvelope(env), { mode: 0o600 });
  const cut = newId();
  fs.writeFileSync(path.join(root, 'tmp', `${cut}.999999999.msg`), 'q');
  fs.writeFileSync(path.join(root, 'tmp', `${cut}.999999999.env`), encodeEnvelope({ ...env, id: cut }));
  fs.writeFileSync(path.join(root, 'msg', cut), 'q');
  const r = await store.recover();
  assert.equal(r.tmpRemoved, 2);
  assert.ok(!fs.existsSync(path.join(root, 'msg', cut)));
  assert.equal((await store.get(id)).envelope.size, 10);
});

test('fresh(): an entry a queue run read is kept while its file is unchanged; a listed one is read again', async () => {
  const root = tempDir();
  const env = await commit(root, 'a: b\r\n\r\nc\r\n');
  const store = openStore(root);
  const [run] = (await store.queued(() => true)).entries;
  assert.ok(run);
  assert.equal(await store.fresh(run), run, 'unchanged since the run read it: the same entry');
  const listed: Entry[] = [];
  for await (const slice of store.scan()) listed.push(...slice.entries);
  assert.equal(listed.length, 1);
  const again = await store.fresh(listed[0]!);
  assert.notEqual(again, listed[0], 'a listing has no stamps: read again');
  assert.deepEqual(again.envelope, listed[0]!.envelope);
  const tried = run.envelope.recipients.map((r) => ({ ...r, attempts: 3 }));
  await store.update({ ...run.envelope, recipients: tried }, 'queue');
  assert.equal((await store.fresh(run)).envelope.recipients[0]!.attempts, 3, 'changed since: read again');
  assert.equal(env.id, run.envelope.id);
});

test('a listing moves a pipe, a socket and an undecodable envelope aside, and lists the rest', async () => {
  const root = tempDir();
  const kept = await commit(root, 'a: b\r\n\r\nkept\r\n');
  const odd = ['01M00000000000P1', '01M00000000000S1', '01M00000000000B1'];
  execFileSync('mkfifo', ['-m', '600', path.join(root, 'hold', odd[0]!)]);
  const server = net.createServer().listen(path.join(root, 'queue', odd[1]!));
  await once(server, 'listening');
  try {
    fs.writeFileSync(path.join(root, 'queue', odd[2]!), '{"version":1,"cut sh', { mode: 0o600 });
    for (const id of odd) fs.writeFileSync(path.join(root, 'msg', id), 'a: b\r\n\r\n', { mode: 0o600 });
    const listed: string[] = [];
    const corrupt: string[] = [];
    for await (const slice of openStore(root).scan()) {
      listed.push(...slice.entries.map((e) => e.envelope.id));
      corrupt.push(...slice.corrupt.map((c) => c.id));
    }
    assert.deepEqual(listed, [kept.id]);
    assert.deepEqual(corrupt.sort(), [...odd].sort());
    for (const id of odd) assert.ok(fs.existsSync(path.join(root, 'corrupt', id)), `${id} moved aside`);
  } finally {
    server.close();
  }
});

test('a listing checks a spool that was not there when the store was opened, before it reads its names', async () => {
  const parent = tempDir();
  const root = path.join(parent, 'spool');
  const store = openStore(root);
  // made after the store was opened: no folder of it was ever checked, so each envelope is
  const made = tempDir();
  const env = await commit(made, 'a: b\r\n\r\nc\r\n');
  fs.renameSync(made, root);
  fs.chmodSync(path.join(root, 'queue'), 0o777);
  await assert.rejects(
    async () => {
      for await (const _ of store.scan());
    },
    /writable by group or others/,
    'checked before its names are read',
  );
  fs.chmodSync(path.join(root, 'queue'), 0o700);
  const listed: Entry[] = [];
  for await (const slice of store.scan()) listed.push(...slice.entries);
  assert.deepEqual(
    listed.map((e) => e.envelope.id),
    [env.id],
  );
});

test('queued(): briefs are used again while queue/ is unchanged, and read anew after any change', async () => {
  const root = tempDir();
  const a = await commit(root, 'a: b\r\n\r\nc\r\n');
  const b = await commit(root, 'a: b\r\n\r\nd\r\n');
  const store = openStore(root);
  const queueDir = path.join(root, 'queue');
  // a listing is kept only when queue/ last changed more than two seconds before it (a time set back by
  // hand does not count: the change time says when)
  await new Promise((r) => setTimeout(r, 2100));
  const seen: string[] = [];
  const first = await store.queued((x) => (seen.push(x.id), true));
  assert.deepEqual(seen, [a.id, b.id], 'every queued message is judged, oldest first');
  assert.deepEqual(
    first.entries.map((e) => e.envelope.id),
    [a.id, b.id],
  );
  assert.equal(keptBriefs(store.layout)?.length, 2);
  // an envelope changed in place moves no directory time: the kept briefs stand, and a run that wants no
  // message reads none (the damage is not even noticed)
  fs.writeFileSync(path.join(queueDir, a.id), '{"version": 1, "id": "trunc');
  const none = await store.queued(() => false);
  assert.deepEqual(none, { entries: [], corrupt: [] });
  // any rename or unlink in queue/ is a change: everything is read again
  await commit(root, 'a: b\r\n\r\ne\r\n');
  assert.equal(keptBriefs(store.layout), null, 'a change of queue/ voids the kept briefs');
  const again = await store.queued(() => true);
  assert.deepEqual(
    again.corrupt.map((c) => c.id),
    [a.id],
  );
  assert.equal(again.entries.length, 2);
  // taken within two seconds of the change, this listing is not trusted for the next run
  assert.equal(keptBriefs(store.layout), null, 'a listing taken right after a change is read again');
  forgetBriefs(store.layout);
});

test('locks are exclusive and released; a waiting lock gets it once free', async () => {
  const root = tempDir();
  const a = await tryLock(root, 'x');
  assert.ok(a);
  assert.equal(await tryLock(root, 'x'), null);
  assert.ok(await tryLock(root, 'y'));
  const waiting = lock(root, 'x', 2000);
  setTimeout(() => void a.release(), 50);
  const b = await waiting;
  assert.ok(b, 'acquired after release');
  assert.equal(await lock(root, 'x', 50), null, 'times out while held');
  await b.release();
});

test('a message being changed is locked against a second changer', async () => {
  const root = tempDir();
  const store = openStore(root);
  const env = await commit(root, 'a: b\r\n\r\nc\r\n');
  const l = await store.lockMessage(env.id);
  await assert.rejects(openStore(root).remove(env.id), (e: unknown) => e instanceof FerryError && e.code === 'locked');
  await l.release();
  await store.remove(env.id);
});

test('locks live in the owner-only spool: no abstract socket, nothing outside it', async () => {
  const a = tempDir();
  const la = await tryLock(a, 'daemon');
  assert.ok(la);
  const abstract = fs
    .readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .filter((l) => l.includes('@ferrymail'));
  assert.deepEqual(abstract, [], 'no lock in the abstract namespace, which every user can see and bind');
  const dir = path.join(a, 'lock', 'daemon');
  const [sock] = fs.readdirSync(dir);
  assert.match(sock!, new RegExp(`^s\\.${process.pid}\\.`));
  assert.ok(fs.statSync(path.join(dir, sock!)).isSocket());
  await la.release();
  assert.equal(fs.existsSync(dir), false, 'released: nothing left');
});

test('a lock whose holder was killed is taken over; racing takers never both hold it', async () => {
  const root = tempDir();
  // a holder killed with SIGKILL leaves its directory and socket file behind
  const script = `import('${path.join(ROOT, 'dist', 'src', 'spool', 'lock.js')}').then(async (m) => { const l = await m.tryLock(${JSON.stringify(root)}, 'runner'); process.stdout.write(l ? 'held' : 'busy'); setInterval(() => {}, 1000); });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const said = await new Promise<string>((r) => child.stdout!.once('data', (d) => r(String(d))));
  assert.equal(said, 'held');
  assert.equal(await tryLock(root, 'runner'), null, 'held by the child');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.equal(fs.readdirSync(path.join(root, 'lock', 'runner')).length, 1, 'the dead holder left its socket');
  // eight processes race for the stale lock: exactly one gets it
  const racers = Array.from(
    { length: 8 },
    () =>
      new Promise<string>((resolve) => {
        const c = spawn(
          process.execPath,
          ['-e', script.replace('setInterval(() => {}, 1000)', 'setTimeout(() => process.exit(0), 4000)')],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
        let out = '';
        c.stdout!.on('data', (d) => (out += d));
        c.once('exit', () => resolve(out));
      }),
  );
  const results = await Promise.all(racers);
  assert.equal(results.filter((r) => r === 'held').length, 1, results.join(','));
  assert.equal(results.filter((r) => r === 'busy').length, 7, results.join(','));
});

test('a released lock directory is used again by the next lock of the process, and gone when it exits', async () => {
  const root = tempDir();
  const spareDirs = (): string[] => fs.readdirSync(path.join(root, 'tmp')).filter((n) => n.startsWith('lock.'));
  const a = await tryLock(root, 'msg/A');
  assert.ok(a);
  const sockA = fs.readdirSync(path.join(root, 'lock', 'msg.A'))[0];
  await a.release();
  assert.equal(fs.existsSync(path.join(root, 'lock', 'msg.A')), false, 'released: the lock is free');
  assert.equal(spareDirs().length, 1, 'its directory waits in tmp/');
  const b = await tryLock(root, 'msg/B');
  assert.ok(b);
  assert.deepEqual(fs.readdirSync(path.join(root, 'lock', 'msg.B')), [sockA], 'the same directory, moved in');
  assert.equal(spareDirs().length, 0);
  assert.equal(await tryLock(root, 'msg/B'), null, 'held by this process');
  await b.release();
  // a process that ends leaves no spare directory behind
  const script = `import('${path.join(ROOT, 'dist', 'src', 'spool', 'lock.js')}').then(async (m) => { for (const n of ['m1', 'm2', 'm3']) { const l = await m.tryLock(${JSON.stringify(root)}, n); await l.release(); } process.stdout.write(String(require('node:fs').readdirSync(${JSON.stringify(path.join(root, 'tmp'))}).length)); })`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  await new Promise((r) => child.once('exit', r));
  assert.ok(Number(out) >= 2, `the child had its spare directory while running (${out})`);
  assert.equal(spareDirs().length, 1, 'only ours is left: the child removed its own at exit');
  assert.deepEqual(
    fs.readdirSync(path.join(root, 'lock')).filter((n) => !n.startsWith('proc.')),
    [],
  );
});

test('reading a spool that does not exist yet creates nothing and lists nothing', async () => {
  const root = path.join(tempDir(), 'not-yet');
  const { entries } = await openStore(root).list();
  assert.deepEqual(entries, []);
  assert.equal(fs.existsSync(root), false);
});

test('envelope versions: 1 still loads; 2 is written only when a recipient was warned or uncertain', async () => {
  const env = { ...partial(['b@example.org', 'c@example.org']), id: newId(), size: 12 } as Envelope;
  assert.match(
    encodeEnvelope(env),
    /^\{\n "version": 1,/,
    'nothing of version 2 used: stays readable by older versions',
  );
  env.recipients[0]!.warned = [14_400];
  env.recipients[1]!.uncertain = 1;
  const v2 = encodeEnvelope(env);
  assert.match(v2, /^\{\n "version": 2,/);
  const back = decodeEnvelope(v2, env.id);
  assert.deepEqual([back.recipients[0]!.warned, back.recipients[1]!.uncertain], [[14_400], 1]);
  assert.throws(
    () => decodeEnvelope(v2.replace('"version": 2', '"version": 1'), env.id),
    /version 1 envelope with version 2 fields/,
  );
  assert.throws(() => decodeEnvelope(v2.replace('"uncertain": 1', '"uncertain": "x"'), env.id), /bad uncertain/);
  assert.throws(
    () => decodeEnvelope(v2.replace(/"warned": \[\n\s+14400\n\s+\]/, '"warned": [-1]'), env.id),
    /bad warned/,
  );
  // an old envelope file, as an earlier version wrote it, is read and listed
  const root = tempDir();
  const old = await commit(root, 'Subject: x\r\n\r\nbody\r\n');
  const file = openStore(root).layout.envelope('queue', old.id);
  assert.match(fs.readFileSync(file, 'utf8'), /"version": 1/);
  assert.equal((await openStore(root).list()).entries.length, 1);
});

test('release turns recipients held as uncertain back into queued ones, held message or not', async () => {
  const root = tempDir();
  const store = openStore(root);
  const env = await commit(root, 'Subject: x\r\n\r\nbody\r\n', ['b@example.org', 'c@example.org']);
  env.recipients[0]!.state = 'uncertain';
  env.recipients[0]!.uncertain = 1;
  env.recipients[1]!.state = 'deferred';
  env.recipients[1]!.nextAttempt = new Date(Date.now() + 60_000).toISOString();
  const l = await store.lockMessage(env.id);
  await store.update(env, 'queue');
  await l.release();
  await store.release(env.id);
  let got = (await store.get(env.id)).envelope;
  assert.deepEqual(
    got.recipients.map((r) => r.state),
    ['queued', 'deferred'],
    'only the uncertain one changes',
  );
  assert.equal(got.recipients[0]!.uncertain, 1, 'the count stays: another uncertain attempt holds it again');
  await assert.rejects(store.release(env.id), /not held/);
  await store.hold(env.id);
  const held = (await store.get(env.id)).envelope;
  held.recipients[1]!.state = 'uncertain';
  const l2 = await store.lockMessage(env.id);
  await store.update(held, 'hold');
  await l2.release();
  await store.release(env.id);
  got = (await store.get(env.id)).envelope;
  assert.equal((await store.get(env.id)).place, 'queue');
  assert.deepEqual(
    got.recipients.map((r) => r.state),
    ['queued', 'queued'],
  );
});

test('readHead returns the header section whatever its size: ends inside the first read, across a read boundary, past it, or never', async () => {
  const root = tempDir();
  const spool = openSpoolWriter(root);
  const store = openStore(root);
  const cases: Array<[string, string]> = [];
  // blank line straddling the 16 KB first read at every offset around it, and a 100 KB header
  for (const len of [10, 16_380, 16_381, 16_382, 16_383, 16_384, 100_000]) {
    const head = `X-Pad: ${'a'.repeat(len - 10)}\r\n`;
    cases.push([head, `${head}\r\nbody\r\n`]);
  }
  cases.push(['Subject: no body\r\n', 'Subject: no body\r\n']);
  for (const [head, data] of cases) {
    const w = await spool.begin();
    w.stream.end(Buffer.from(data, 'latin1'));
    const env = await w.commit({
      version: 1,
      arrival: new Date().toISOString(),
      sender: 'a@b.org',
      recipients: [newRecipient('c@d.org')],
      origin: { door: 'sendmail' },
      protocol: 'local',
    });
    assert.equal(await store.readHead(env), head, `header of ${head.length} bytes`);
  }
  const w = await spool.begin();
  w.stream.end(Buffer.from(`X-Big: ${'b'.repeat(300_000)}\r\n\r\nbody`, 'latin1'));
  const big = await w.commit({
    version: 1,
    arrival: new Date().toISOString(),
    sender: 'a@b.org',
    recipients: [newRecipient('c@d.org')],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  assert.equal((await store.readHead(big, 262_144)).length, 262_144, 'cut at max');
});

test('directory syncs follow a spool directory that was replaced while the process runs', async () => {
  const dir = path.join(tempDir(), 'queue');
  fs.mkdirSync(dir);
  const links = (): string[] =>
    fs.readdirSync('/proc/self/fd').map((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    });
  await DirSyncer.of(dir).sync();
  assert.ok(links().includes(dir), 'a descriptor kept open on the directory');
  fs.rmSync(dir, { recursive: true });
  fs.mkdirSync(dir);
  await DirSyncer.of(dir).sync();
  assert.ok(links().includes(dir), 'one on the new directory');
  assert.ok(!links().includes(`${dir} (deleted)`), 'none left on the old one');
});

/** Lists the spool at root with store.scan() in a node process of its own, killed after capMs: how it
 * ended, and the entries and corrupt envelopes it counted. */
async function scanInChild(
  root: string,
  capMs: number,
): Promise<{ code: number | null; signal: string | null; entries: number; corrupt: number }> {
  const script = `import('${path.join(ROOT, 'dist', 'src', 'spool', 'store.js')}').then(async (m) => { const n = { entries: 0, corrupt: 0 }; for await (const s of m.openStore(${JSON.stringify(root)}).scan()) { n.entries += s.entries.length; n.corrupt += s.corrupt.length; } process.stdout.write(JSON.stringify(n)); })`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), capMs);
  const [code, signal] = await new Promise<[number | null, string | null]>((r) =>
    child.once('exit', (c, sig) => r([c, sig])),
  );
  clearTimeout(timer);
  const counted = out ? (JSON.parse(out) as { entries: number; corrupt: number }) : { entries: -1, corrupt: -1 };
  return { code, signal, ...counted };
}

test('a long listing read ahead by a worker is the listing read here: order, missing files, corrupt and planted ones', async () => {
  const root = tempDir();
  const store = openStore(root);
  await commit(root, 'a: b\r\n\r\nc\r\n'); // makes the spool
  const ids: string[] = [];
  for (let i = 0; i < 2100; i++) {
    const id = newId();
    ids.push(id);
    const env = { ...partial([`r${i}@example.org`]), id, size: 3 };
    fs.writeFileSync(path.join(root, 'queue', id), encodeEnvelope(env as Envelope));
    fs.writeFileSync(path.join(root, 'msg', id), 'x\r\n');
  }
  // a broken envelope and a symbolic link planted where an envelope belongs, late in the list
  fs.writeFileSync(path.join(root, 'queue', ids[1500]!), '{ not json');
  fs.rmSync(path.join(root, 'queue', ids[1700]!));
  fs.symlinkSync(path.join(root, 'queue', ids[0]!), path.join(root, 'queue', ids[1700]!));
  const slices = [];
  for await (const s of store.scan(100)) slices.push(s);
  assert.ok(slices.length >= 21, 'read a slice at a time');
  const got = slices.flatMap((s) => s.entries.map((e) => e.envelope.id));
  const corrupt = slices.flatMap((s) => s.corrupt.map((c) => c.id)).sort();
  assert.equal(got.length, 2099, 'every envelope but the two bad ones, and the first commit');
  assert.deepEqual(
    got.slice(1),
    ids.filter((_, i) => i !== 1500 && i !== 1700),
    'in order',
  );
  assert.deepEqual(corrupt, [ids[1500], ids[1700]].sort());
  assert.ok(fs.existsSync(path.join(root, 'corrupt', ids[1700]!)), 'the link moved aside, not followed');
  assert.equal(fs.readFileSync(path.join(root, 'queue', ids[0]!), 'utf8').includes(ids[0]!), true);
  // the same listing in a process of its own ends by itself: no reader thread is left running
  const child = await scanInChild(root, 60_000);
  assert.deepEqual([child.code, child.signal], [0, null], 'the listing process ended by itself');
  assert.equal(child.entries, 2099);
});

test('the read-ahead gives each file its own result in order, and ends its worker when the reader stops early', async () => {
  const dir = tempDir();
  const files: string[] = [];
  for (let i = 0; i < 2500; i++) {
    const f = path.join(dir, `f${i}`);
    if (i % 997 !== 5) fs.writeFileSync(f, `text ${i}`); // some never exist
    files.push(f);
  }
  const seen: RawEnvelope[] = [];
  for await (const [at, slice] of readSlices(files.length, (i) => files[i]!, 300)) {
    assert.equal(at, seen.length);
    seen.push(...slice);
  }
  assert.equal(seen.length, 2500);
  for (const [i, r] of seen.entries()) {
    if (i % 997 === 5) assert.equal('code' in r && r.code, 'ENOENT');
    else assert.equal('text' in r && r.text, `text ${i}`);
  }
  // a reader that stops after two slices: the generator's end stops the worker (the test would not end)
  let slices = 0;
  for await (const [, slice] of readSlices(files.length, (i) => files[i]!, 300)) {
    assert.equal(slice.length, 300);
    if (++slices === 2) break;
  }
  assert.equal(slices, 2);
});

test('a listing read gives each text without a stamp, a long file whole, and a folder as an error', async () => {
  const dir = tempDir();
  const files: string[] = [];
  for (let i = 0; i < 2500; i++) {
    const f = path.join(dir, `f${i}`);
    // one file longer than the reader's buffer, read again by its size
    fs.writeFileSync(f, i === 1234 ? `long ${'x'.repeat(100_000)}` : `text ${i}`);
    files.push(f);
  }
  fs.mkdirSync(path.join(dir, 'f7-folder'));
  files[7] = path.join(dir, 'f7-folder');
  for (const mode of ['listed', 'stamped'] as const) {
    const seen: RawEnvelope[] = [];
    for await (const [at, slice] of readSlices(files.length, (i) => files[i]!, 300, undefined, mode)) {
      assert.equal(at, seen.length, 'the slices in order, the ones read by the caller among them');
      seen.push(...slice);
    }
    assert.equal(seen.length, 2500);
    for (const [i, r] of seen.entries()) {
      if (i === 7) assert.equal('code' in r && r.code, mode === 'listed' ? 'EISDIR' : 'EPERM');
      else {
        assert.ok('text' in r, `file ${i} read`);
        assert.equal(r.text, i === 1234 ? `long ${'x'.repeat(100_000)}` : `text ${i}`);
        assert.equal(r.stamp === undefined, mode === 'listed', `a stamp only when stamped (file ${i})`);
      }
    }
  }
});

test('a queue folder grown large by names that are not messages starts the reader early; a short listing ends it', async () => {
  const root = tempDir();
  for (const t of ['a', 'b', 'c']) await commit(root, `a: b\r\n\r\n${t}\r\n`);
  // names no listing takes for a message, enough to make any file system's folder 64 KB or more
  for (let i = 0; i < 4000; i++)
    fs.writeFileSync(path.join(root, 'queue', `not-a-message-${String(i).padStart(6, '0')}`), '');
  assert.ok(fs.statSync(path.join(root, 'queue')).size >= 65_536, 'the folder is large enough to start the reader');
  // in a process of its own, which must end by itself: a reader thread left running would keep it
  const child = await scanInChild(root, 30_000);
  assert.deepEqual([child.code, child.signal], [0, null], 'the listing process ended by itself');
  assert.equal(child.entries + child.corrupt, 3, 'the three messages, none of the other names');
});

test('a folder is read a batch at a time: every name once across batches, the filter kept, none for a missing folder', async () => {
  const dir = tempDir();
  const made = new Set<string>();
  for (let i = 0; i < 9000; i++) {
    const name = i % 10 === 0 ? `skip-${i}` : `keep-${i}`;
    fs.writeFileSync(path.join(dir, name), '');
    if (!name.startsWith('skip')) made.add(name);
  }
  const got = await namesIn(dir, (n) => n.startsWith('keep-'));
  assert.equal(got.length, made.size, 'no name twice, none lost');
  assert.deepEqual(new Set(got), made);
  assert.equal((await namesIn(dir)).length, 9000);
  assert.deepEqual(await namesIn(path.join(dir, 'absent')), []);
  fs.writeFileSync(path.join(dir, 'a-file'), '');
  await assert.rejects(namesIn(path.join(dir, 'a-file')), { code: 'ENOTDIR' });
});

test('free space: an answer younger than the age asked for is given again, an older one is read anew', () => {
  const root = tempDir();
  const t = 1_000_000;
  const first = freeBytes(root, 0, t);
  assert.ok(Number.isFinite(first) && first > 0, 'read from the file system');
  fs.rmSync(root, { recursive: true });
  assert.equal(freeBytes(root, 100, t + 50), first, 'within 100 ms: the same answer, not read again');
  spent(root, 4096);
  assert.equal(freeBytes(root, 100, t + 60), first - 4096, 'less what this process wrote since');
  assert.equal(freeBytes(root, 100, t + 150), Infinity, 'older: read again (the folder is gone: unknown)');
  assert.equal(freeBytes(root, 0, t + 150), Infinity, 'no age given: always read');
});

test('the read-ahead given a reader thread that has already ended reads everything itself', async () => {
  const dir = tempDir();
  const files: string[] = [];
  for (let i = 0; i < 2100; i++) {
    const f = path.join(dir, `f${i}`);
    fs.writeFileSync(f, `text ${i}`);
    files.push(f);
  }
  const thread = await startReaderThread();
  assert.ok(thread, 'a reader thread starts');
  await thread.worker.terminate();
  const seen: RawEnvelope[] = [];
  for await (const [, slice] of readSlices(files.length, (i) => files[i]!, 300, Promise.resolve(thread)))
    seen.push(...slice);
  assert.deepEqual(
    seen.map((r) => 'text' in r && r.text),
    files.map((_, i) => `text ${i}`),
  );
});

test('status counts: saved with the folder stamps they were taken at, used while the folders stay unchanged', async () => {
  const root = tempDir();
  await commit(root, 'a: b\r\n\r\nc\r\n');
  await commit(root, 'a: b\r\n\r\nd\r\n');
  const layout = openStore(root).layout;
  // counted as if some seconds after the last change (a count right after a change is not saved)
  const later = (): number => Date.now() + 10_000;
  assert.deepEqual(await queueCounts(layout, later()), { queued: 2, held: 0 });
  const file = path.join(root, 'counts');
  const saved = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(saved.queued, 2);
  // the saved file is what answers while nothing changed: a hand-made count shows through
  fs.writeFileSync(file, JSON.stringify({ ...saved, queued: 7 }), { mode: 0o600 });
  assert.deepEqual(await queueCounts(layout, later()), { queued: 7, held: 0 });
  // any change of queue/ voids it; a count taken right after a change is not saved
  await commit(root, 'a: b\r\n\r\ne\r\n');
  assert.deepEqual(await queueCounts(layout), { queued: 3, held: 0 });
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).queued, 7, 'too recent a change: nothing saved');
  // times set back by hand (as rsync or tar do) do not make a recent change look old
  const past = new Date(Date.now() - 10_000);
  fs.utimesSync(path.join(root, 'queue'), past, past);
  assert.deepEqual(await queueCounts(layout), { queued: 3, held: 0 });
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).queued, 7, 'the change time still says recent');
  assert.deepEqual(await queueCounts(layout, later()), { queued: 3, held: 0 });
  assert.equal(JSON.parse(fs.readFileSync(file, 'utf8')).queued, 3);
  assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), [], 'no temporary file left');
  // a spool of another user's (root looking at it) is counted, and nothing is written there
  if (process.geteuid?.() === 0) {
    fs.rmSync(file);
    fs.chownSync(root, 65534, 65534);
    try {
      assert.deepEqual(await queueCounts(layout, later()), { queued: 3, held: 0 });
      assert.equal(fs.existsSync(file), false, "no counts file in another user's spool");
    } finally {
      fs.chownSync(root, 0, 0);
    }
    await queueCounts(layout, later());
  }
  // a planted link or a broken file is no count
  fs.rmSync(file);
  fs.symlinkSync(path.join(root, 'queue'), file);
  assert.deepEqual(await queueCounts(layout, later()), { queued: 3, held: 0 });
  fs.writeFileSync(`${file}.x`, '{"queued": ');
  fs.renameSync(`${file}.x`, file);
  assert.deepEqual(await queueCounts(layout, later()), { queued: 3, held: 0 });
});

test('a listing of the whole queue saves the counts status reads', async () => {
  const root = tempDir();
  await commit(root, 'a: b\r\n\r\nc\r\n');
  const store = openStore(root);
  await store.hold((await commit(root, 'a: b\r\n\r\nd\r\n')).id);
  await new Promise((r) => setTimeout(r, 2100)); // counts are saved only when the last change is older
  assert.equal((await store.list()).entries.length, 2);
  const saved = JSON.parse(fs.readFileSync(path.join(root, 'counts'), 'utf8'));
  assert.deepEqual([saved.queued, saved.held], [1, 1]);
});

test('the names of queue/ and hold/ come oldest first across both folders, each with its place', async () => {
  const root = tempDir();
  const ids: string[] = [];
  for (let i = 0; i < 7; i++) ids.push((await commit(root, `a: b\r\n\r\n${i}\r\n`)).id);
  const store = openStore(root);
  // held: the first, a middle one and the last, so that the two folders interleave
  for (const i of [0, 3, 6]) await store.hold(ids[i]!);
  fs.writeFileSync(path.join(root, 'queue', 'not-a-message'), '');
  const names = await queueNames(store.layout);
  assert.deepEqual(names.ids, ids, 'every id once, in the order they were drawn');
  assert.deepEqual(
    names.places,
    ids.map((_, i) => ([0, 3, 6].includes(i) ? 'hold' : 'queue')),
  );
  assert.deepEqual(await queueNames(store.layout, ['hold']), {
    ids: [ids[0], ids[3], ids[6]],
    places: ['hold', 'hold', 'hold'],
  });
  assert.deepEqual(
    await queueNames(openStore(tempDir()).layout),
    { ids: [], places: [] },
    'a spool with no folders yet',
  );
});

test("the sendmail command's direct commit: its syncs in the commit's order on the calling thread; a failure after the rename that cannot take the envelope back keeps the message whole and closes its files", async () => {
  const root = tempDir();
  const spool = openSpoolWriter(root, { direct: true });
  const inodeOf = (fd: number): string => {
    const st = fs.fstatSync(fd);
    for (const [name, p] of [
      ['msg/', path.join(root, 'msg')],
      ['queue/', path.join(root, 'queue')],
    ] as const)
      if (fs.statSync(p).ino === st.ino) return name;
    return 'file';
  };
  const seen: string[] = [];
  const { fsyncSync, renameSync, rmSync } = fs;
  let failQueueSync = false;
  let failRemove = false;
  fs.fsyncSync = (fd: number) => {
    const what = inodeOf(fd);
    seen.push(`fsync ${what}`);
    if (failQueueSync && what === 'queue/') throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    return fsyncSync(fd);
  };
  fs.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
    seen.push(`rename ${path.basename(path.dirname(String(to)))}/`);
    return renameSync(from, to);
  };
  fs.rmSync = (p: fs.PathLike, opts?: fs.RmOptions) => {
    if (failRemove && path.basename(path.dirname(String(p))) === 'queue')
      throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    return rmSync(p, opts);
  };
  try {
    const w = await spool.begin();
    w.stream.end(Buffer.from('a: b\r\n\r\nfirst\r\n'));
    const env = await w.commit(partial());
    // two files, then msg/, the rename into queue/, then queue/: as the pooled commit, one at a time
    assert.deepEqual(seen, ['fsync file', 'fsync file', 'fsync msg/', 'rename queue/', 'fsync queue/']);
    assert.ok(fs.existsSync(path.join(root, 'queue', env.id)));
    const fds = fs.readdirSync('/proc/self/fd').length;
    failQueueSync = true;
    failRemove = true;
    const w2 = await spool.begin();
    w2.stream.end(Buffer.from('a: b\r\n\r\nsecond\r\n'));
    await assert.rejects(w2.commit(partial()), (e: unknown) => e instanceof FerryError && e.code === 'spool-io');
    assert.equal(fs.readdirSync('/proc/self/fd').length, fds, 'its two files closed');
    // the envelope could not be taken back: its data stays beside it, a whole message
    assert.equal(fs.readFileSync(path.join(root, 'msg', w2.id), 'latin1'), 'a: b\r\n\r\nsecond\r\n');
    assert.ok(fs.existsSync(path.join(root, 'queue', w2.id)));
    failQueueSync = false;
    failRemove = false;
    seen.length = 0;
    // and the next commit is direct again
    const w3 = await spool.begin();
    w3.stream.end(Buffer.from('a: b\r\n\r\nthird\r\n'));
    await w3.commit(partial());
    assert.deepEqual(seen, ['fsync file', 'fsync file', 'fsync msg/', 'rename queue/', 'fsync queue/']);
  } finally {
    fs.fsyncSync = fsyncSync;
    fs.renameSync = renameSync;
    fs.rmSync = rmSync;
  }
});

/** A deferred writer's message whose mover has not run: its data file (message and envelope behind it),
 * copied into another spool beside a claim of a dead writer, as a daemon killed after its answer leaves it. */
async function answeredNotMoved(text: string, rcpts?: string[]): Promise<{ env: Envelope; file: Buffer }> {
  const root = tempDir();
  const spool = openSpoolWriter(root, { deferred: { waitMs: 60_000 } });
  const w = await spool.begin();
  w.stream.end(Buffer.from(text));
  const env = await w.commit(partial(rcpts));
  const file = fs.readFileSync(path.join(root, 'msg', env.id));
  await spool.settle?.();
  return { env, file };
}

test('a deferred commit answers with the envelope behind the data; the mover puts it into queue/ and cuts the data back', async () => {
  const root = tempDir();
  const placed: string[] = [];
  const spool = openSpoolWriter(root, {
    deferred: { waitMs: 60_000, onPlaced: (envs) => placed.push(...envs.map((e) => e.id)) },
  });
  const text = 'Subject: deferred\r\n\r\nbody\r\n';
  const w = await spool.begin();
  w.stream.end(Buffer.from(text));
  const env = await w.commit(partial(['b@example.org', 'bcc@example.net']));
  const data = path.join(root, 'msg', env.id);
  assert.equal(env.size, text.length);
  assert.ok(!fs.existsSync(path.join(root, 'queue', env.id)), 'not in queue/ before the mover runs');
  const file = fs.readFileSync(data);
  assert.equal(file.subarray(0, env.size).toString('latin1'), text);
  assert.equal(file.length, env.size + Buffer.byteLength(encodeEnvelope(env)) + TRAILER_BYTES);
  const fd = fs.openSync(data, 'r');
  assert.deepEqual(envelopeBehind(fd, env.id), env, 'the envelope behind the data checks out');
  assert.equal(envelopeBehind(fd, newId()), null, 'under another id it does not');
  fs.closeSync(fd);
  // readers stop at the message's size: a header section with no body never reads into the envelope
  const store = openStore(root);
  await spool.settle?.();
  assert.deepEqual(placed, [env.id]);
  assert.deepEqual((await store.get(env.id)).envelope, env);
  assert.equal(fs.readFileSync(data, 'latin1'), text, 'cut back to the message');
  assert.deepEqual(fs.readdirSync(path.join(root, 'tmp')), [], 'the claim became the envelope');
  // a held message keeps both sync phases (nothing behind its data)
  const h = await spool.begin();
  h.stream.end(Buffer.from(text));
  const held = await h.commit(partial(), 'hold');
  assert.ok(fs.existsSync(path.join(root, 'hold', held.id)));
  assert.equal(fs.statSync(path.join(root, 'msg', held.id)).size, text.length);
});

test('readers stop at the size: an envelope left behind the data never reaches a header read', async () => {
  const root = tempDir();
  const { env, file } = await answeredNotMoved('Subject: no body, no blank line\r\n', ['hidden@example.net']);
  // as after a power loss that undid the mover's cut: the envelope in queue/, the data still long
  openSpoolWriter(root); // makes the folders
  fs.writeFileSync(path.join(root, 'msg', env.id), file);
  fs.writeFileSync(path.join(root, 'queue', env.id), encodeEnvelope(env));
  const store = openStore(root);
  const head = await store.readHead(env);
  assert.equal(head, 'Subject: no body, no blank line\r\n');
  assert.ok(!head.includes('hidden'));
  // the next run with a route to try cuts it (the runner holds the message's lock); then nothing is left
  const data = path.join(root, 'msg', env.id);
  assert.equal(await store.cutBehind(env), true);
  assert.equal(fs.readFileSync(data, 'latin1'), 'Subject: no body, no blank line\r\n');
  assert.equal(await store.cutBehind(env), false);
  // bytes behind the message that are not an envelope and trailer stay, and so does a trailer that names
  // another size than the envelope in queue/
  const foreign = Buffer.concat([file.subarray(0, env.size), Buffer.from('x'.repeat(TRAILER_BYTES + 10))]);
  fs.writeFileSync(data, foreign);
  assert.equal(await store.cutBehind(env), false);
  assert.deepEqual(fs.readFileSync(data), foreign);
  fs.writeFileSync(data, file);
  assert.equal(await store.cutBehind({ ...env, size: env.size - 1 }), false);
  assert.deepEqual(fs.readFileSync(data), file);
});

test('recovery rolls a whole answered message forward, and removes one whose data or envelope is damaged', async () => {
  const text = 'Subject: rolled\r\n\r\nbody line\r\n';
  const { env, file } = await answeredNotMoved(text);
  const root = tempDir();
  const put = (bytes: Buffer, claim = true): void => {
    fs.writeFileSync(path.join(root, 'msg', env.id), bytes);
    if (claim) fs.writeFileSync(path.join(root, 'tmp', `${env.id}.999999999.env`), '');
  };
  openSpoolWriter(root); // makes the folders
  put(file);
  const store = openStore(root);
  let r = await store.recover();
  assert.equal(r.rolledForward, 1);
  assert.equal(r.orphansRemoved, 0);
  assert.deepEqual((await store.get(env.id)).envelope, env);
  assert.equal(fs.readFileSync(path.join(root, 'msg', env.id), 'latin1'), text, 'cut back after the envelope');
  assert.ok(!fs.existsSync(path.join(root, 'tmp', `${env.id}.999999999.env`)));
  // damaged files were never acknowledged: each is removed with its claim
  const flipped = Buffer.from(file);
  flipped[3] = flipped[3]! ^ 1;
  const envAt = env.size;
  const damaged: Array<[string, Buffer]> = [
    ['data cut short', Buffer.concat([file.subarray(0, envAt - 4), file.subarray(envAt)])],
    ['a byte of the data changed', flipped],
    [
      'the envelope cut in half',
      Buffer.concat([file.subarray(0, envAt + 20), file.subarray(file.length - TRAILER_BYTES)]),
    ],
    ['no trailer', file.subarray(0, file.length - TRAILER_BYTES)],
    ['the trailer cut', file.subarray(0, file.length - 3)],
  ];
  for (const [why, bytes] of damaged) {
    fs.rmSync(path.join(root, 'queue', env.id), { force: true });
    put(bytes);
    r = await store.recover();
    assert.equal(r.rolledForward, 0, why);
    assert.equal(r.orphansRemoved, 1, why);
    assert.ok(!fs.existsSync(path.join(root, 'msg', env.id)), why);
    assert.ok(!fs.existsSync(path.join(root, 'queue', env.id)), why);
  }
  // a whole file whose claim a power loss took (tmp/ is never synced) is rolled forward by the orphan sweep
  put(file, false);
  const old = new Date(Date.now() - 3600_000);
  fs.utimesSync(path.join(root, 'msg', env.id), old, old);
  r = await store.recover();
  assert.equal(r.orphansRemoved, 0);
  assert.equal(r.rolledForward, 1);
  assert.deepEqual((await store.get(env.id)).envelope, env);
});
