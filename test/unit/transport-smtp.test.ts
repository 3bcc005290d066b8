// The SMTP transport against servers that misbehave on purpose (all on 127.0.0.1): each failure ends in
// the right per-recipient outcome, and a drop after the final dot is "uncertain".
import assert from 'node:assert/strict';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { smtpTransport } from '../../src/transport/smtp.js';
import type { DeliveryRequest } from '../../src/transport/types.js';

const closers: Array<() => void> = [];
after(() => closers.forEach((c) => c()));

/** A well-behaved server whose replies depend on the addresses. */
async function politeServer(): Promise<{ port: number; got: string[] }> {
  const got: string[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    logger: false,
    onConnect(session, cb) {
      cb();
    },
    onMailFrom(a, _s, cb) {
      if (a.address.startsWith('refused')) return cb(Object.assign(new Error('5.7.1 sender refused'), { responseCode: 550 }));
      if (a.address.startsWith('busy')) return cb(Object.assign(new Error('4.3.0 try later'), { responseCode: 451 }));
      cb();
    },
    onRcptTo(a, _s, cb) {
      if (a.address.startsWith('perm')) return cb(Object.assign(new Error('5.1.1 no such user'), { responseCode: 550 }));
      if (a.address.startsWith('temp')) return cb(Object.assign(new Error('4.2.0 mailbox busy'), { responseCode: 450 }));
      cb();
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        got.push(Buffer.concat(chunks).toString());
        if ((session.envelope.mailFrom as { address: string }).address.startsWith('datafail')) {
          return cb(Object.assign(new Error('5.6.0 content refused'), { responseCode: 554 }));
        }
        cb(null, '2.0.0 queued as X1');
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(() => server.close());
  return { port: (server.server.address() as net.AddressInfo).port, got };
}

/** A raw server that greets, accepts everything, and then misbehaves at a chosen point. */
async function rudeServer(mode: 'greeting421' | 'drop-mid-data' | 'drop-after-dot' | 'silent'): Promise<number> {
  const server = net.createServer((sock) => {
    sock.on('error', () => undefined);
    if (mode === 'silent') return;
    if (mode === 'greeting421') return void sock.end('421 4.3.2 not now\r\n');
    sock.write('220 rude.example ESMTP\r\n');
    let buf = '';
    let inData = false;
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      if (inData) {
        if (mode === 'drop-mid-data') {
          // stop reading, so that the client cannot hand over the rest, then go away
          sock.pause();
          setTimeout(() => sock.destroy(), 300);
          return;
        }
        if (buf.includes('\r\n.\r\n')) return void sock.destroy();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl).toUpperCase();
        buf = buf.slice(nl + 2);
        if (line.startsWith('EHLO')) sock.write('250-rude.example\r\n250 PIPELINING\r\n');
        else if (line.startsWith('DATA')) {
          inData = true;
          sock.write('354 go ahead\r\n');
          return;
        } else if (line.startsWith('QUIT')) sock.end('221 bye\r\n');
        else sock.write('250 2.0.0 ok\r\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  closers.push(() => server.close());
  return (server.address() as net.AddressInfo).port;
}

/** A request for the given envelope. */
function request(sender: string, rcpts: string[], body = 'Subject: t\r\n\r\nhello\r\n'): DeliveryRequest {
  return { id: 'T1', sender, recipients: rcpts.map((address) => ({ address })), message: () => Readable.from([Buffer.from(body)]), size: body.length };
}

/** The transport for a port with short timeouts. */
function via(port: number) {
  return smtpTransport({ host: '127.0.0.1', port, name: 'ferry.example', starttls: 'never', timeouts: { connect: 2000, greeting: 2000, socket: 3000 } });
}

test('accepted, refused for good and refused for now, each recipient on its own', async () => {
  const s = await politeServer();
  const r = await via(s.port).deliver(request('a@x.org', ['ok@y.org', 'perm@y.org', 'temp@y.org']));
  assert.deepEqual(r.results.map((x) => [x.address, x.outcome]), [['ok@y.org', 'ok'], ['perm@y.org', 'permfail'], ['temp@y.org', 'tempfail']]);
  assert.match(r.results[0]!.reply, /^250 2\.0\.0 queued as X1/);
  assert.match(r.results[1]!.reply, /^550 5\.1\.1/);
  assert.ok(s.got.some((m) => m.includes('hello')));
});

test('MAIL refused applies to everyone; a refusal after DATA applies to the accepted ones', async () => {
  const s = await politeServer();
  const perm = await via(s.port).deliver(request('refused@x.org', ['a@y.org', 'b@y.org']));
  assert.deepEqual(perm.results.map((x) => x.outcome), ['permfail', 'permfail']);
  const temp = await via(s.port).deliver(request('busy@x.org', ['a@y.org']));
  assert.deepEqual(temp.results.map((x) => x.outcome), ['tempfail']);
  const data = await via(s.port).deliver(request('datafail@x.org', ['a@y.org', 'perm@y.org']));
  assert.deepEqual(data.results.map((x) => [x.outcome, x.reply.slice(0, 3)]), [['permfail', '554'], ['permfail', '550']]);
});

test('a server that cannot be reached, greets with 421 or never answers: tempfail for all', async () => {
  const closed = await new Promise<number>((r) => {
    const t = net.createServer();
    t.listen(0, '127.0.0.1', () => {
      const p = (t.address() as net.AddressInfo).port;
      t.close(() => r(p));
    });
  });
  for (const port of [closed, await rudeServer('greeting421'), await rudeServer('silent')]) {
    const r = await via(port).deliver(request('a@x.org', ['a@y.org', 'b@y.org']));
    assert.deepEqual(r.results.map((x) => x.outcome), ['tempfail', 'tempfail'], JSON.stringify(r));
    assert.match(r.results[0]!.reply, /^4\d\d /);
  }
});

test('a drop in the middle of DATA is tempfail; a drop after the final dot is uncertain', async () => {
  const line = Buffer.from('x'.repeat(998) + '\r\n');
  const bigReq: DeliveryRequest = {
    ...request('a@x.org', ['a@y.org']),
    // 40 MB, made as it is read: far more than socket buffers hold while the server does not read
    message: () => Readable.from((function* () {
      yield Buffer.from('Subject: t\r\n\r\n');
      for (let i = 0; i < 40_000; i++) yield line;
    })()),
  };
  const mid = await via(await rudeServer('drop-mid-data')).deliver(bigReq);
  assert.equal(mid.results[0]!.outcome, 'tempfail', JSON.stringify(mid));
  const afterDot = await via(await rudeServer('drop-after-dot')).deliver(request('a@x.org', ['a@y.org']));
  assert.equal(afterDot.results[0]!.outcome, 'uncertain', JSON.stringify(afterDot));
  assert.match(afterDot.results[0]!.reply, /may have been delivered/);
});

test('a UTF-8 address to a server without SMTPUTF8 fails for good, with the reason', async () => {
  const port = await rudeServer('drop-after-dot');
  const req = { ...request('a@x.org', ['jürgen@y.org']), smtputf8: true };
  const r = await via(port).deliver(req);
  assert.equal(r.results[0]!.outcome, 'permfail');
  assert.match(r.results[0]!.reply, /^550 5\.6\.7 .*SMTPUTF8/);
});
