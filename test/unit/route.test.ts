// Route selection, fall-through and address rewriting, as tables of cases.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { matchAddress } from '../../src/route/glob.js';
import { rewriteAddress, rewriteMailbox } from '../../src/route/rewrite.js';
import { accepts, candidates, fallThrough, plan, type OnlineState } from '../../src/route/select.js';
import type { Route } from '../../src/route/types.js';

/** A route with open filters, changed by over. */
function route(name: string, over: Partial<Route> = {}): Route {
  const open = { allow: [], deny: [] };
  return {
    name,
    connections: [],
    permanent: false,
    senders: open,
    recipients: open,
    fromHeader: open,
    rewrite: { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] },
    lastRoute: false,
    connectErrorFail: false,
    uncertain: 'retry',
    transport: {},
    ...over,
  };
}

test('address globs', () => {
  const cases: [string, string, boolean][] = [
    ['*@example.org', 'a@example.org', true],
    ['*@example.org', 'a@EXAMPLE.org', true],
    ['*@example.org', 'a@sub.example.org', false],
    ['*@*.example.org', 'a@sub.example.org', true],
    ['alice', 'alice@anywhere.net', true],
    ['al?ce', 'alice@x.org', true],
    ['alice', 'alicia@x.org', false],
    ['<>', '', true],
    ['*', '', false],
    ['a.b@x.org', 'aXb@x.org', false],
  ];
  for (const [glob, addr, want] of cases) assert.equal(matchAddress(glob, addr), want, `${glob} ~ ${addr}`);
});

const home = route('home-isp', { connections: ['home'] });
const work = route('work', { connections: ['office', 'vpn'], recipients: { allow: ['*@corp.example'], deny: [] } });
const lan = route('lan', {
  permanent: true,
  recipients: { allow: ['*@lan.example'], deny: [] },
  connectErrorFail: true,
});
const gmail = route('gmail', { connections: ['home', 'office'], senders: { allow: ['*@gmail.example'], deny: [] } });
const routes = [home, work, lan, gmail];

test("candidates: permanent first, then the connection's routes in file order", () => {
  const names = (s: OnlineState): string[] => candidates(routes, s).map((r) => r.name);
  assert.deepEqual(names({ online: true, connection: 'home' }), ['lan', 'home-isp', 'gmail']);
  assert.deepEqual(names({ online: true, connection: 'office' }), ['lan', 'work', 'gmail']);
  assert.deepEqual(names({ online: true, connection: 'cafe' }), ['lan']);
  assert.deepEqual(names({ online: false }), ['lan']);
});

test('filters: sender, recipient and From header; deny beats allow; <> for the null sender', () => {
  const r = route('r', {
    senders: { allow: ['*@me.example', '<>'], deny: ['noreply@me.example'] },
    recipients: { allow: [], deny: ['*@blocked.example'] },
    fromHeader: { allow: ['*@me.example'], deny: [] },
  });
  const cases: [string, string, string[], boolean][] = [
    ['a@me.example', 'x@y.org', ['a@me.example'], true],
    ['noreply@me.example', 'x@y.org', ['a@me.example'], false],
    ['', 'x@y.org', ['a@me.example'], true],
    ['a@other.example', 'x@y.org', ['a@me.example'], false],
    ['a@me.example', 'x@blocked.example', ['a@me.example'], false],
    ['a@me.example', 'x@y.org', ['a@other.example'], false],
    ['a@me.example', 'x@y.org', [], false],
  ];
  for (const [s, rc, from, want] of cases) assert.equal(accepts(r, s, rc, from), want, `${s} -> ${rc} from ${from}`);
});

test('plan: routes per recipient, or a deferral saying why', () => {
  const p = plan(
    routes,
    { online: true, connection: 'office' },
    'me@gmail.example',
    ['a@corp.example', 'b@lan.example', 'c@else.example'],
    [],
  );
  assert.deepEqual(
    p.map((x) => ('routes' in x ? [x.recipient, x.routes.map((r) => r.name)] : [x.recipient, x.defer])),
    [
      ['a@corp.example', ['work', 'gmail']],
      ['b@lan.example', ['lan', 'gmail']],
      ['c@else.example', ['gmail']],
    ],
  );
  const off = plan([home], { online: false, why: 'state file empty' }, 'me@x.org', ['a@b.org'], []);
  assert.deepEqual(off, [{ recipient: 'a@b.org', defer: 'offline (state file empty)' }]);
  const none = plan([work], { online: true, connection: 'office' }, 'me@x.org', ['a@b.org'], []);
  assert.deepEqual(none, [{ recipient: 'a@b.org', defer: 'no route accepts this recipient on connection office' }]);
});

test('fall-through: only a temporary failure passes on, and not past last_route', () => {
  const rest = [gmail];
  assert.deepEqual(fallThrough(home, 'tempfail', rest), rest);
  assert.deepEqual(fallThrough(route('x', { lastRoute: true }), 'tempfail', rest), []);
  assert.deepEqual(fallThrough(home, 'permfail', rest), []);
  assert.deepEqual(fallThrough(home, 'ok', rest), []);
  assert.deepEqual(fallThrough(home, 'uncertain', rest), []);
});

test('rewriting: first match wins, *@domain keeps the local part, display names are kept', () => {
  const map: [string, string][] = [
    ['alice', 'alice.smith@isp.example'],
    ['*@laptop.local', '*@isp.example'],
  ];
  const cases: [string, string][] = [
    ['alice@laptop.local', 'alice.smith@isp.example'],
    ['bob@laptop.local', 'bob@isp.example'],
    ['carol@elsewhere.example', 'carol@elsewhere.example'],
    ['', ''],
  ];
  for (const [a, want] of cases) assert.equal(rewriteAddress(map, a), want, a);
  assert.equal(rewriteMailbox(map, '"Bob B." <bob@laptop.local>'), '"Bob B." <bob@isp.example>');
  assert.equal(rewriteMailbox(map, ' bob@laptop.local'), ' bob@isp.example');
});

test('user filters: who handed the message in (a login or a local account), deny beating allow', () => {
  const ann = route('ann-isp', { users: { allow: ['ann', 'a?n2'], deny: [] } });
  const notBob = route('not-bob', { users: { allow: [], deny: ['bob'] } });
  const cases: [Route, string | undefined, boolean][] = [
    [ann, 'ann', true],
    [ann, 'ANN', true],
    [ann, 'axn2', true],
    [ann, 'bob', false],
    [ann, undefined, false],
    [notBob, 'bob', false],
    [notBob, 'ann', true],
    [notBob, undefined, true],
    [route('open'), undefined, true],
  ];
  for (const [r, user, want] of cases)
    assert.equal(accepts(r, 's@x.org', 'r@y.org', [], user), want, `${r.name} ${user}`);
  const [p] = plan(
    [ann, notBob].map((r) => ({ ...r, permanent: true })),
    { online: true },
    's@x.org',
    ['r@y.org'],
    [],
    'bob',
  );
  assert.ok(p && 'defer' in p, 'bob: no route');
});

test('max_size: a large message waits for a route that takes it, and says why', () => {
  const phone = route('phone', { connections: ['phone'], maxSize: 1024 * 1024 });
  const home = route('home', { connections: ['home'] });
  const on = (connection: string, size: number) =>
    plan([phone, home], { online: true, connection }, 's@x.org', ['r@y.org'], [], undefined, size)[0]!;
  const small = on('phone', 5000);
  assert.deepEqual('routes' in small ? small.routes.map((r) => r.name) : [], ['phone'], 'small: the metered link');
  const big = on('phone', 5 * 1024 * 1024);
  assert.ok('defer' in big);
  assert.match(big.defer, /^5242880 bytes is more than the max_size of the routes on connection phone: it waits/);
  assert.ok('routes' in on('home', 5 * 1024 * 1024), 'at home it goes');
});
