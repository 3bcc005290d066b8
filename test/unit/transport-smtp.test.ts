// The SMTP transport against a server that misbehaves on purpose (test/support/fault-smtp.ts, on
// loopback): each fault ends in the right per-recipient outcome, a drop after the final dot is
// "uncertain", sessions are reused with RSET in between and limited to `connections` at once.
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { smtpTransport, type SmtpSettings } from '../../src/transport/smtp.js';
import type { DeliveryRequest, Transport } from '../../src/transport/types.js';
import { tempDir } from '../helpers.js';
import { closeAll, faultServer, type Answer, type FaultOptions, type Step } from '../support/fault-smtp.js';

const transports: Transport[] = [];
after(async () => {
  await Promise.all(transports.map((t) => t.close?.()));
  await closeAll();
});

/** A request for the given envelope. */
function request(sender: string, rcpts: string[], body = 'Subject: t\r\n\r\nhello\r\n'): DeliveryRequest {
  return {
    id: 'T1',
    sender,
    recipients: rcpts.map((address) => ({ address })),
    message: () => Readable.from([Buffer.from(body)]),
    size: body.length,
  };
}

/** The transport for a port with short timeouts. */
function via(port: number, extra: Partial<SmtpSettings> = {}): Transport {
  const t = smtpTransport({
    host: '127.0.0.1',
    port,
    name: 'ferry.example',
    starttls: 'never',
    timeouts: { connect: 2000, greeting: 2000, command: 3000 },
    ...extra,
  });
  transports.push(t);
  return t;
}

/** A fault server whose hook answers from a table of step → answer (a function for address-dependent ones). */
function serverWith(
  table: Partial<Record<Step, Answer | ((arg: string, conn: number) => Answer)>>,
  opts: FaultOptions = {},
) {
  return faultServer({
    ...opts,
    hook: (step, arg, conn) => {
      const a = table[step];
      return typeof a === 'function' ? a(arg, conn) : a;
    },
  });
}

/** Outcomes in recipient order. */
const outcomes = (r: { results: { outcome: string }[] }): string[] => r.results.map((x) => x.outcome);

test('RCPT: accepted, refused for good and refused for now, each recipient on its own', async () => {
  const s = await serverWith({
    rcpt: (a) =>
      a.startsWith('perm') ? '550 5.1.1 no such user' : a.startsWith('temp') ? '450 4.2.0 mailbox busy' : undefined,
  });
  const r = await via(s.port).deliver(request('a@x.org', ['ok@y.org', 'perm@y.org', 'temp@y.org']));
  assert.deepEqual(
    r.results.map((x) => [x.address, x.outcome]),
    [
      ['ok@y.org', 'ok'],
      ['perm@y.org', 'permfail'],
      ['temp@y.org', 'tempfail'],
    ],
  );
  assert.match(r.results[0]!.reply, /^250 2\.0\.0 queued as F1/);
  assert.match(r.results[1]!.reply, /^550 5\.1\.1/);
  assert.equal(s.received.length, 1);
  assert.deepEqual(s.received[0]!.to, ['ok@y.org']);
  assert.match(s.received[0]!.data, /hello/);
});

test('MAIL refused for good or for now applies to every recipient', async () => {
  const s = await serverWith({
    mail: (a) =>
      a.startsWith('refused') ? '550 5.7.1 sender refused' : a.startsWith('busy') ? '451 4.3.0 try later' : undefined,
  });
  const t = via(s.port);
  const perm = await t.deliver(request('refused@x.org', ['a@y.org', 'b@y.org']));
  assert.deepEqual(outcomes(perm), ['permfail', 'permfail']);
  assert.match(perm.results[1]!.reply, /^550 5\.7\.1 sender refused/);
  const temp = await t.deliver(request('busy@x.org', ['a@y.org']));
  assert.deepEqual(outcomes(temp), ['tempfail']);
  assert.match(temp.results[0]!.reply, /^451 4\.3\.0/);
  assert.equal(s.received.length, 0);
});

test('DATA refused, and refused after the final dot, applies to the accepted recipients only', async () => {
  const atData = await serverWith({
    data: '554 5.3.0 not today',
    rcpt: (a) => (a.startsWith('perm') ? '550 5.1.1 unknown' : undefined),
  });
  const d = await via(atData.port).deliver(request('a@x.org', ['a@y.org', 'perm@y.org']));
  assert.deepEqual(
    d.results.map((x) => [x.outcome, x.reply.slice(0, 3)]),
    [
      ['permfail', '554'],
      ['permfail', '550'],
    ],
  );
  const dotPerm = await serverWith({ dot: '554 5.6.0 content refused' });
  assert.deepEqual(outcomes(await via(dotPerm.port).deliver(request('a@x.org', ['a@y.org', 'b@y.org']))), [
    'permfail',
    'permfail',
  ]);
  const dotTemp = await serverWith({ dot: '451 4.7.1 greylisted' });
  const g = await via(dotTemp.port).deliver(request('a@x.org', ['a@y.org']));
  assert.deepEqual(outcomes(g), ['tempfail']);
  assert.match(g.results[0]!.reply, /^451 4\.7\.1 greylisted/);
});

test('a server that cannot be reached, greets with 421 or never greets (short timeout): tempfail for all', async () => {
  const closed = await new Promise<number>((r) => {
    const t = net.createServer();
    t.listen(0, '127.0.0.1', () => {
      const p = (t.address() as net.AddressInfo).port;
      t.close(() => r(p));
    });
  });
  const busy = await serverWith({ greeting: '421 4.3.2 not now' });
  const silent = await serverWith({ greeting: 'stall' });
  const cases: [number, RegExp][] = [
    [closed, /^451 4\.4\.1 cannot connect to 127\.0\.0\.1:\d+: ECONNREFUSED/],
    [busy.port, /^421 4\.3\.2 not now/],
    [silent.port, /^451 4\.4\.1 127\.0\.0\.1:\d+ did not answer in time/],
  ];
  for (const [port, reply] of cases) {
    const r = await via(port, { timeouts: { connect: 1000, greeting: 500, command: 1000 } }).deliver(
      request('a@x.org', ['a@y.org', 'b@y.org']),
    );
    assert.deepEqual(outcomes(r), ['tempfail', 'tempfail'], JSON.stringify(r));
    assert.match(r.results[0]!.reply, reply);
  }
});

test('a drop in the middle of DATA is tempfail; a drop after the final dot is uncertain', async () => {
  const line = Buffer.from(`${'x'.repeat(998)}\r\n`);
  const bigReq: DeliveryRequest = {
    ...request('a@x.org', ['a@y.org']),
    // 40 MB, made as it is read: far more than socket buffers hold while the server does not read
    message: () =>
      Readable.from(
        (function* () {
          yield Buffer.from('Subject: t\r\n\r\n');
          for (let i = 0; i < 40_000; i++) yield line;
        })(),
      ),
  };
  const mid = await via((await serverWith({ body: 'drop' })).port).deliver(bigReq);
  assert.equal(mid.results[0]!.outcome, 'tempfail', JSON.stringify(mid));
  assert.match(mid.results[0]!.reply, /^451 4\.4\.2 .*lost during delivery/);
  const afterDot = await via((await serverWith({ dot: 'drop' })).port).deliver(
    request('a@x.org', ['a@y.org', 'b@y.org']),
  );
  assert.deepEqual(outcomes(afterDot), ['uncertain', 'uncertain'], JSON.stringify(afterDot));
  assert.match(afterDot.results[0]!.reply, /may have been delivered/);
});

test('a stall with a short command timeout: at MAIL tempfail, after the final dot uncertain', async () => {
  const short = { timeouts: { connect: 1000, greeting: 1000, command: 500 } };
  const atMail = await via((await serverWith({ mail: 'stall' })).port, short).deliver(request('a@x.org', ['a@y.org']));
  assert.equal(atMail.results[0]!.outcome, 'tempfail', JSON.stringify(atMail));
  assert.match(atMail.results[0]!.reply, /no answer in time/);
  const atDot = await via((await serverWith({ dot: 'stall' })).port, short).deliver(request('a@x.org', ['a@y.org']));
  assert.equal(atDot.results[0]!.outcome, 'uncertain', JSON.stringify(atDot));
});

test('a UTF-8 address to a server without SMTPUTF8 fails for good, with the reason', async () => {
  const s = await faultServer();
  const r = await via(s.port).deliver({ ...request('a@x.org', ['jürgen@y.org']), smtputf8: true });
  assert.equal(r.results[0]!.outcome, 'permfail');
  assert.match(r.results[0]!.reply, /^550 5\.6\.7 .*SMTPUTF8/);
});

test('a message larger than the SIZE the server announces gets no MAIL: permfail 552 5.3.4', async () => {
  const s = await faultServer({ extensions: ['PIPELINING', 'SIZE 100'] });
  const t = via(s.port);
  const big = await t.deliver(request('a@x.org', ['a@y.org'], `Subject: big\r\n\r\n${'y'.repeat(200)}\r\n`));
  assert.equal(big.results[0]!.outcome, 'permfail');
  assert.match(
    big.results[0]!.reply,
    /^552 5\.3\.4 message of 2\d\d bytes is larger than the 100 bytes 127\.0\.0\.1:\d+ accepts/,
  );
  assert.ok(!s.connections.some((c) => c.commands.some((x) => x.startsWith('MAIL'))), 'no MAIL was sent');
  // a small one still goes, over the same session
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['a@y.org']))), ['ok']);
  assert.equal(s.connections.length, 1);
});

test('one session carries several messages, RSET only after a refused one; a refused message does not spoil the next', async () => {
  const s = await serverWith({ mail: (a) => (a.startsWith('refused') ? '550 5.7.1 no' : undefined) });
  const t = via(s.port);
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['one@y.org']))), ['ok']);
  assert.deepEqual(outcomes(await t.deliver(request('refused@x.org', ['two@y.org']))), ['permfail']);
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['three@y.org']))), ['ok']);
  assert.equal(s.connections.length, 1, 'one connection for all three');
  const cmds = s.connections[0]!.commands.map((c) => c.split(/[ :]/)[0]);
  assert.deepEqual(
    cmds.filter((c) => ['MAIL', 'RSET', 'QUIT'].includes(c!)),
    ['MAIL', 'MAIL', 'RSET', 'MAIL'],
    'after a success the server is ready for MAIL; after a refusal RSET',
  );
  assert.deepEqual(
    s.received.map((m) => m.to[0]),
    ['one@y.org', 'three@y.org'],
  );
  await t.close!();
  assert.ok(s.connections[0]!.commands.includes('QUIT'), 'close() ends the idle session with QUIT');
});

test('an idle session ends by itself with QUIT once it has been unused for a while', async () => {
  const s = await faultServer();
  const t = via(s.port, { idleMs: 100 });
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['one@y.org']))), ['ok']);
  for (let i = 0; i < 250 && !s.connections[0]!.commands.includes('QUIT'); i++)
    await new Promise((r) => setTimeout(r, 20));
  assert.ok(s.connections[0]!.commands.includes('QUIT'), 'the idle session was closed');
  // the next delivery opens a new session
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['two@y.org']))), ['ok']);
  assert.equal(s.connections.length, 2);
});

test('an idle session whose RSET is refused, or that the server dropped, is replaced before anything is sent', async () => {
  const r = await serverWith({
    mail: (a) => (a.startsWith('refused') ? '550 5.7.1 no' : undefined),
    rset: (_a, conn) => (conn === 0 ? '500 5.5.1 no RSET here' : undefined),
  });
  const t = via(r.port);
  assert.deepEqual(outcomes(await t.deliver(request('refused@x.org', ['one@y.org']))), ['permfail']);
  assert.deepEqual(
    outcomes(await t.deliver(request('a@x.org', ['two@y.org']))),
    ['ok'],
    'RSET refused: a new session carries it',
  );
  assert.equal(r.connections.length, 2);
  const first = r.connections[0]!.commands;
  assert.equal(
    first.filter((c) => c.startsWith('MAIL')).length,
    1,
    'nothing of the second message on the first session',
  );
  assert.deepEqual(
    r.received.map((m) => [m.to[0], m.connection]),
    [['two@y.org', 1]],
  );

  const d = await faultServer();
  const t2 = via(d.port);
  assert.deepEqual(outcomes(await t2.deliver(request('a@x.org', ['one@y.org']))), ['ok']);
  d.dropAll(); // the server ends the idle session; the client may or may not have noticed yet
  assert.deepEqual(outcomes(await t2.deliver(request('a@x.org', ['two@y.org']))), ['ok']);
  assert.equal(d.connections.length, 2, 'the dropped session was replaced');
  assert.deepEqual(
    d.received.map((m) => m.to[0]),
    ['one@y.org', 'two@y.org'],
  );
});

test('connections: 2 delivers three messages over two parallel sessions; connections: 1 over one', async () => {
  for (const n of [1, 2]) {
    let open = 0;
    let most = 0;
    const s = await faultServer({
      hook: (step) => {
        if (step === 'ehlo') most = Math.max(most, ++open);
        return undefined;
      },
    });
    const t = via(s.port, { connections: n });
    const rs = await Promise.all(['a', 'b', 'c'].map((x) => t.deliver(request('a@x.org', [`${x}@y.org`]))));
    assert.deepEqual(rs.map(outcomes), [['ok'], ['ok'], ['ok']]);
    assert.equal(s.connections.length, n, `connections: ${n}`);
    assert.equal(most, n);
    assert.deepEqual(s.received.map((m) => m.to[0]).sort(), ['a@y.org', 'b@y.org', 'c@y.org']);
  }
});

test('recipients that differ in DSN NOTIFY go in transactions of their own, each with its NOTIFY', async () => {
  const s = await faultServer({ extensions: ['PIPELINING', 'DSN'] });
  const req = request('a@x.org', ['a@y.org', 'b@y.org', 'c@y.org']);
  req.recipients[0]!.notify = ['NEVER'];
  req.recipients[1]!.notify = ['FAILURE', 'DELAY'];
  req.recipients[2]!.notify = ['NEVER'];
  const r = await via(s.port).deliver(req);
  assert.deepEqual(
    r.results.map((x) => [x.address, x.outcome]),
    [
      ['a@y.org', 'ok'],
      ['b@y.org', 'ok'],
      ['c@y.org', 'ok'],
    ],
  );
  assert.deepEqual(
    s.received.map((m) => m.to),
    [['a@y.org', 'c@y.org'], ['b@y.org']],
  );
  const rcpts = s.connections[0]!.commands.filter((c) => c.startsWith('RCPT'));
  assert.deepEqual(rcpts, [
    'RCPT TO:<a@y.org> NOTIFY=NEVER',
    'RCPT TO:<c@y.org> NOTIFY=NEVER',
    'RCPT TO:<b@y.org> NOTIFY=FAILURE,DELAY',
  ]);
});

test('LMTP over a unix socket: one result per recipient after the final dot', async () => {
  const sock = path.join(tempDir(), 'lmtp.sock');
  const s = await faultServer({
    listen: sock,
    lmtp: true,
    hook: (step, arg) => (step === 'rcpt' && arg.startsWith('gone') ? '550 5.1.1 gone' : undefined),
  });
  const t = smtpTransport({ socket: sock, name: 'ferry.example', lmtp: true, starttls: 'never' });
  transports.push(t);
  const r = await t.deliver(request('a@x.org', ['a@y.org', 'gone@y.org', 'b@y.org']));
  assert.deepEqual(
    r.results.map((x) => [x.address, x.outcome]),
    [
      ['a@y.org', 'ok'],
      ['gone@y.org', 'permfail'],
      ['b@y.org', 'ok'],
    ],
  );
  assert.equal(r.relay, `unix:${sock}`);
  assert.ok(s.connections[0]!.commands[0]!.startsWith('LHLO'));
});

test('a reused session that the server closes at the next MAIL, before any reply, is replaced and the message still goes out once', async () => {
  let mails = 0;
  const s = await faultServer({
    hook: (step, _arg, conn) => (step === 'mail' && conn === 0 && ++mails === 2 ? 'drop' : undefined),
  });
  const t = via(s.port);
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['one@y.org']))), ['ok']);
  assert.deepEqual(outcomes(await t.deliver(request('a@x.org', ['two@y.org']))), ['ok'], 'carried by a new session');
  assert.equal(s.connections.length, 2);
  assert.deepEqual(
    s.received.map((m) => [m.to[0], m.connection]),
    [
      ['one@y.org', 0],
      ['two@y.org', 1],
    ],
  );
  // a fresh session that drops is a real failure: tempfail, not retried behind the caller's back
  const f = await faultServer({ hook: (step) => (step === 'mail' ? 'drop' : undefined) });
  assert.deepEqual(outcomes(await via(f.port).deliver(request('a@x.org', ['x@y.org']))), ['tempfail']);
  assert.equal(f.connections.length, 1);
});

test('recipients that differ in NOTIFY: a refused transaction is reset before the next, and a loss after one finished resends only the rest', async () => {
  const dsn = ['PIPELINING', 'ENHANCEDSTATUSCODES', 'DSN'];
  const req = (rcpts: Array<[string, string[]]>): DeliveryRequest => {
    const body = 'Subject: t\r\n\r\nhello\r\n';
    return {
      id: 'T1',
      sender: 'a@x.org',
      recipients: rcpts.map(([address, notify]) => ({ address, notify: notify as never })),
      message: () => Readable.from([Buffer.from(body)]),
      size: body.length,
    };
  };
  const s = await faultServer({
    extensions: dsn,
    hook: (step, arg) => (step === 'rcpt' && arg.startsWith('bad@') ? '550 5.1.1 no such user' : undefined),
  });
  const r = await via(s.port).deliver(
    req([
      ['bad@y.org', ['FAILURE']],
      ['good@y.org', ['NEVER']],
    ]),
  );
  assert.deepEqual(outcomes(r), ['permfail', 'ok'], JSON.stringify(r));
  assert.deepEqual(
    s.received.map((m) => m.to),
    [['good@y.org']],
  );

  // the server closes the connection at the second transaction's MAIL: only that one is sent again
  let mails = 0;
  const d = await faultServer({
    extensions: dsn,
    hook: (step, _a, conn) => (step === 'mail' && conn === 0 && ++mails === 2 ? 'drop' : undefined),
  });
  const r2 = await via(d.port).deliver(
    req([
      ['one@y.org', ['FAILURE']],
      ['two@y.org', ['NEVER']],
    ]),
  );
  assert.deepEqual(outcomes(r2), ['ok', 'ok'], JSON.stringify(r2));
  assert.deepEqual(
    d.received.map((m) => [m.to, m.connection]),
    [
      [['one@y.org'], 0],
      [['two@y.org'], 1],
    ],
    'one@ once, two@ over a new session',
  );
});

test('a server that takes one connection per client: the refused extra sessions wait for the one in use, nothing is deferred', async () => {
  const s = await faultServer({
    hook: (step, _a, conn) =>
      step === 'greeting' && conn > 0 ? '421 4.7.0 too many connections from your host' : undefined,
  });
  const t = via(s.port, { connections: 3 });
  const rs = await Promise.all(
    ['a', 'b', 'c', 'd', 'e', 'f'].map((x) => t.deliver(request('a@x.org', [`${x}@y.org`]))),
  );
  assert.deepEqual(rs.map(outcomes), [['ok'], ['ok'], ['ok'], ['ok'], ['ok'], ['ok']], JSON.stringify(rs));
  assert.deepEqual(
    [...new Set(s.received.map((m) => m.connection))],
    [0],
    'all over the one session the server allows',
  );
  assert.equal(s.received.length, 6);
  // a refusal with no other session to wait for is a temporary failure, as before
  const lone = await faultServer({ hook: (step) => (step === 'greeting' ? '421 4.7.0 not now' : undefined) });
  assert.deepEqual(outcomes(await via(lone.port, { connections: 3 }).deliver(request('a@x.org', ['z@y.org']))), [
    'tempfail',
  ]);
});

test('LMTP: each recipient carries its own reply after the data, not the last one', async () => {
  const sock = path.join(tempDir(), 'lmtp2.sock');
  await faultServer({
    listen: sock,
    lmtp: true,
    hook: (step, arg) =>
      step === 'lmtp-rcpt' && arg.startsWith('full')
        ? '552 5.2.2 <full@y.org> mailbox full'
        : step === 'lmtp-rcpt'
          ? `250 2.0.0 <${arg}> saved as ${arg.split('@')[0]}-42`
          : undefined,
  });
  const t = smtpTransport({ socket: sock, name: 'ferry.example', lmtp: true, starttls: 'never' });
  transports.push(t);
  const r = await t.deliver(request('a@x.org', ['good@y.org', 'other@y.org', 'full@y.org']));
  assert.deepEqual(
    r.results.map((x) => [x.address, x.outcome, x.reply]),
    [
      ['good@y.org', 'ok', '250 2.0.0 <good@y.org> saved as good-42'],
      ['other@y.org', 'ok', '250 2.0.0 <other@y.org> saved as other-42'],
      ['full@y.org', 'permfail', '552 5.2.2 <full@y.org> mailbox full'],
    ],
  );
});
