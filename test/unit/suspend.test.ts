// Suspension of logged-in users: strikes within the window, the list written and read back, a hook's
// own failure not counted, a list changed by the command line seen at once, a damaged list told.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { readSuspended, Suspensions, suspendedFile, withStrikes, writeSuspended } from '../../src/receive/suspend.js';
import type { HookEntry, SessionFacts } from '../../src/receive/stages.js';

const made: string[] = [];
const dir = (): string => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-suspend-'));
  made.push(d);
  return d;
};
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

test('strikes count within the window only; at the limit the user is suspended and the list written', () => {
  const file = suspendedFile(dir());
  const told: string[] = [];
  const s = new Suspensions(file, 3, 60_000, {
    suspended: (user, reason, strikes) => told.push(`${user}: ${reason} (${strikes.length})`),
    trouble: (t) => told.push(`trouble: ${t}`),
  });
  const t = 1_000_000;
  s.strike('ann', 'a', t);
  s.strike('ann', 'b', t + 2000);
  s.strike('ann', 'c', t + 61_500);
  assert.equal(s.suspended('ann'), undefined, 'the first strike fell out of the window');
  s.strike('bob', 'x', t);
  s.strike('ann', 'd', t + 61_900);
  assert.match(s.suspended('ann')?.reason ?? '', /^3 refusals within 60 s, the last: d$/);
  assert.equal(s.suspended('bob'), undefined, 'users are counted apart');
  assert.deepEqual(told, ['ann: 3 refusals within 60 s, the last: d (3)']);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(Object.keys(readSuspended(file)), ['ann']);
});

test('a release by the command line is seen at once; a damaged list is told and counts as unchanged', () => {
  const file = suspendedFile(dir());
  const trouble: string[] = [];
  writeSuspended(file, { ann: { since: '2026-01-01T00:00:00.000Z', reason: 'by hand' } });
  const s = new Suspensions(file, 2, 60_000, { suspended: () => undefined, trouble: (t) => trouble.push(t) });
  assert.equal(s.suspended('ann')?.reason, 'by hand');
  assert.equal(s.suspended('toString'), undefined, 'no name reaches the object prototype');
  writeSuspended(file, {});
  assert.equal(s.suspended('ann'), undefined);
  fs.writeFileSync(file, '{ not json');
  assert.equal(s.suspended('ann'), undefined);
  assert.match(trouble.join('\n'), /not read/);
});

test('withStrikes counts refusals of logged-in users, not passes, not anonymous sessions, not a hook that throws', async () => {
  const struck: string[] = [];
  const entry = (name: string, run: HookEntry['run']): HookEntry => ({
    name,
    run,
    timeoutMs: 1000,
    onError: 'tempfail',
  });
  const hooks = withStrikes(
    {
      rcpt: [
        entry('limit', (_s, i) =>
          i.arg.startsWith('no')
            ? { action: 'defer', reply: { code: 451, enhanced: '4.7.1', text: 'slow down' } }
            : { action: 'continue' },
        ),
        entry('broken', (_s, i) => {
          if (i.arg.startsWith('boom')) throw new Error('bug');
          return { action: 'continue' };
        }),
      ],
      connect: [entry('c', () => ({ action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: 'no' } }))],
    },
    (user, why) => struck.push(`${user}: ${why}`),
  );
  const facts = (user?: string): SessionFacts => ({
    id: 's',
    peer: '192.0.2.1',
    peerPort: 1,
    trusted: false,
    secure: true,
    user,
    recipients: [],
  });
  const [limit, broken] = hooks.rcpt as HookEntry[];
  await limit!.run(facts('ann'), { stage: 'rcpt', verb: 'RCPT', arg: 'no@x' });
  await limit!.run(facts('ann'), { stage: 'rcpt', verb: 'RCPT', arg: 'yes@x' });
  await limit!.run(facts(), { stage: 'rcpt', verb: 'RCPT', arg: 'no@x' });
  await assert.rejects(Promise.resolve(broken!.run(facts('ann'), { stage: 'rcpt', verb: 'RCPT', arg: 'boom@x' })));
  await (hooks.connect as HookEntry[])[0]!.run(facts('ann'), { stage: 'connect', verb: '', arg: '' });
  assert.deepEqual(struck, ['ann: limit at rcpt: 451 slow down']);
});

test('a user named like an Object property is a user like any other', () => {
  const file = suspendedFile(dir());
  writeSuspended(file, JSON.parse('{"__proto__": {"since": "2026-01-01T00:00:00.000Z", "reason": "x"}}'));
  fs.writeFileSync(
    file,
    '{"__proto__": {"since": "2026-01-01T00:00:00.000Z", "reason": "x"}, "ann": {"since": "s", "reason": "r"}}',
  );
  const list = readSuspended(file);
  assert.deepEqual(Object.keys(list).sort(), ['__proto__', 'ann']);
  const s = new Suspensions(file, 1, 60_000, { suspended: () => undefined, trouble: () => undefined });
  assert.equal(s.suspended('__proto__')?.reason, 'x');
  assert.equal(s.suspended('constructor'), undefined);
  s.strike('constructor', 'why');
  assert.equal(s.suspended('constructor')?.reason, '1 refusals within 60 s, the last: why');
  assert.deepEqual(Object.keys(readSuspended(file)).sort(), ['__proto__', 'ann', 'constructor']);
  assert.deepEqual(
    fs.readdirSync(path.dirname(file)).filter((f) => f.endsWith('.tmp')),
    [],
    'no temporary file left behind',
  );
});
