// The policy delegation protocol on the wire: the request's lines (a client's text never adds one) and
// every answer Postfix documents, table-tested.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAction, requestText, targetOf } from '../../src/receive/policy-server.js';

test('answers map to verdicts, soft deferrals, headers and log lines', () => {
  const table: Array<[string, unknown]> = [
    ['OK', { verdict: { action: 'accept' } }],
    ['dunno', { verdict: { action: 'continue' } }],
    ['REJECT', { verdict: { action: 'reject', reply: { code: 554, enhanced: '5.7.1', text: 'Access denied' } } }],
    [
      'REJECT 5.7.0 no thanks',
      { verdict: { action: 'reject', reply: { code: 554, enhanced: '5.7.0', text: 'no thanks' } } },
    ],
    ['DEFER busy', { verdict: { action: 'defer', reply: { code: 450, enhanced: '4.7.1', text: 'busy' } } }],
    ['450 4.2.0 full', { verdict: { action: 'defer', reply: { code: 450, enhanced: '4.2.0', text: 'full' } } }],
    [
      '550 no such user',
      { verdict: { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'no such user' } } },
    ],
    ['DEFER_IF_PERMIT Greylisted', { verdict: { action: 'continue' }, soft: { when: 'permit', text: 'Greylisted' } }],
    ['DEFER_IF_REJECT hm', { verdict: { action: 'continue' }, soft: { when: 'reject', text: 'hm' } }],
    [
      'PREPEND Received-SPF: Pass (mailfrom) identity=mailfrom',
      {
        verdict: { action: 'continue' },
        prepend: { name: 'Received-SPF', value: 'Pass (mailfrom) identity=mailfrom' },
      },
    ],
    ['WARN odd client', { verdict: { action: 'continue' }, log: 'WARN odd client' }],
    ['HOLD', { verdict: { action: 'continue' }, log: 'HOLD is not carried out here; taken as DUNNO' }],
  ];
  for (const [action, want] of table) assert.deepEqual(parseAction(action), want, action);
  for (const bad of ['', 'MAYBE', '250 fine', 'PREPEND no colon here', 'PREPEND X: a\u0001b'])
    assert.throws(() => parseAction(bad), Error, bad);
});

test('a request is name=value lines and an empty line; newlines in a value cannot add an attribute', () => {
  const text = requestText(
    'RCPT',
    {
      id: 's1',
      peer: '192.0.2.7',
      peerPort: 1,
      trusted: false,
      secure: true,
      helo: 'h\nrecipient=evil',
      sender: 'a@b',
      recipients: ['x@y'],
    },
    { stage: 'rcpt', verb: 'RCPT', arg: 'x@y' },
    { instance: 's1.1' },
  );
  assert.ok(text.endsWith('\n\n'));
  const lines = text.trimEnd().split('\n');
  assert.equal(lines.filter((l) => l.startsWith('recipient=')).length, 1);
  assert.ok(lines.includes('helo_name=h recipient=evil'));
  assert.ok(lines.includes('client_address=192.0.2.7'));
  assert.ok(lines.includes('instance=s1.1'));
  assert.ok(lines.includes('protocol_state=RCPT'));
});

test('server addresses: inet and unix forms', () => {
  assert.deepEqual(targetOf('inet:127.0.0.1:10023'), { host: '127.0.0.1', port: 10023 });
  assert.deepEqual(targetOf('[::1]:10023'), { host: '::1', port: 10023 });
  assert.deepEqual(targetOf('unix:/run/policyd.sock'), { path: '/run/policyd.sock' });
  for (const bad of [undefined, '', 'localhost', 'inet:host:99999']) assert.throws(() => targetOf(bad));
});
