// MX delivery, built from a route file as the queue builds it, with an injected resolver (no DNS):
// recipients grouped by domain, MX hosts in preference order, the next host when one cannot be reached
// or greets with 421, the domain itself without MX, null MX and missing domains failing for good,
// domains looked up as A-labels, and opportunistic STARTTLS that does not verify certificates.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { loadRoutes } from '../../src/config/routes.js';
import { transportFor } from '../../src/queue/wiring.js';
import type { MxResolver } from '../../src/transport/smtp.js';
import type { DeliveryRequest, Transport } from '../../src/transport/types.js';
import { tempDir } from '../helpers.js';
import { closeAll, faultServer, selfSigned } from '../support/fault-smtp.js';

const transports: Transport[] = [];
after(async () => {
  await Promise.all(transports.map((t) => t.close?.()));
  await closeAll();
});

type Records = { exchange: string; priority: number }[] | string;

/** A resolver answering from a table: records, or an error code; records every question. */
function fakeResolver(table: Record<string, Records>): MxResolver & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async resolveMx(domain) {
      asked.push(domain);
      const a = table[domain] ?? 'ENOTFOUND';
      if (typeof a === 'string') throw Object.assign(new Error(`query failed: ${a}`), { code: a });
      return a;
    },
  };
}

/** The transport of an MX route file with the given extra keys. */
function mxTransport(port: number, resolver: MxResolver, extra = ''): Transport {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'routes'));
  fs.writeFileSync(
    path.join(dir, 'routes', '50-direct.yaml'),
    `name: direct\npermanent: true\ntransport:\n  type: smtp\n  mx: true\n  port: ${port}\n  connect_timeout: 2\n  greeting_timeout: 2\n${extra}`,
  );
  const t = transportFor(loadRoutes(dir)[0]!, 'ferry.example', resolver);
  transports.push(t);
  return t;
}

/** A request to the given recipients. */
function request(rcpts: string[]): DeliveryRequest {
  const body = 'Subject: t\r\n\r\nhello\r\n';
  return {
    id: 'T1',
    sender: 'a@x.org',
    recipients: rcpts.map((address) => ({ address })),
    message: () => Readable.from([Buffer.from(body)]),
    size: body.length,
  };
}

test('recipients are grouped by domain; each domain goes to its MX hosts in preference order', async () => {
  const s = await faultServer();
  const resolver = fakeResolver({
    'one.example': [
      { exchange: '127.0.0.1', priority: 20 },
      { exchange: '::1', priority: 10 },
    ],
    'two.example': [{ exchange: '127.0.0.1.', priority: 0 }],
  });
  const r = await mxTransport(s.port, resolver).deliver(request(['a@one.example', 'b@two.example', 'c@one.example']));
  assert.deepEqual(
    r.results.map((x) => [x.address, x.outcome]),
    [
      ['a@one.example', 'ok'],
      ['b@two.example', 'ok'],
      ['c@one.example', 'ok'],
    ],
  );
  // ::1 (preference 10) refused the connection, so one.example went to its second host
  assert.deepEqual(s.received.map((m) => m.to.join(' ')).sort(), ['a@one.example c@one.example', 'b@two.example']);
  assert.deepEqual(resolver.asked.sort(), ['one.example', 'two.example']);
  assert.match(r.relay, new RegExp(`127\\.0\\.0\\.1:${s.port}`));
});

test('a host that greets with 421 passes the domain on to the next MX host', async () => {
  const good = await faultServer();
  const busy = await faultServer({
    listen: '::1',
    port: good.port,
    hook: (step) => (step === 'greeting' ? '421 4.3.2 too busy' : undefined),
  });
  const resolver = fakeResolver({
    'one.example': [
      { exchange: '::1', priority: 10 },
      { exchange: '127.0.0.1', priority: 20 },
    ],
  });
  const r = await mxTransport(good.port, resolver).deliver(request(['a@one.example']));
  assert.equal(r.results[0]!.outcome, 'ok', JSON.stringify(r));
  assert.equal(busy.connections.length, 1, 'the first host was tried');
  assert.equal(good.received.length, 1);
  // every host failing: tempfail with the last reason
  const none = fakeResolver({ 'one.example': [{ exchange: '::1', priority: 10 }] });
  const t = await mxTransport(good.port, none).deliver(request(['a@one.example']));
  assert.equal(t.results[0]!.outcome, 'tempfail');
  assert.match(t.results[0]!.reply, /^421 4\.3\.2 too busy/);
});

test('null MX, a domain that does not exist and a failing lookup: each recipient its own outcome', async () => {
  const s = await faultServer();
  const resolver = fakeResolver({
    'null.example': [{ exchange: '', priority: 0 }],
    'broken.example': 'ESERVFAIL',
    'ok.example': [{ exchange: '127.0.0.1', priority: 10 }],
  });
  const r = await mxTransport(s.port, resolver).deliver(
    request(['a@null.example', 'b@gone.example', 'c@broken.example', 'd@ok.example']),
  );
  assert.deepEqual(
    r.results.map((x) => x.outcome),
    ['permfail', 'permfail', 'tempfail', 'ok'],
  );
  assert.match(r.results[0]!.reply, /^556 5\.1\.10 null\.example accepts no mail \(null MX\)/);
  assert.match(r.results[1]!.reply, /^550 5\.1\.2 domain gone\.example does not exist/);
  assert.match(r.results[2]!.reply, /^451 4\.4\.3 .*ESERVFAIL/);
  assert.deepEqual(
    s.received.map((m) => m.to),
    [['d@ok.example']],
  );
});

test('without MX the domain itself is the host; domains are looked up as A-labels', async () => {
  const s = await faultServer();
  const resolver = fakeResolver({
    localhost: 'ENODATA',
    'xn--bcher-kva.example': [{ exchange: '127.0.0.1', priority: 5 }],
  });
  const r = await mxTransport(s.port, resolver).deliver(request(['a@localhost', 'b@bücher.example']));
  assert.deepEqual(
    r.results.map((x) => x.outcome),
    ['ok', 'ok'],
    JSON.stringify(r),
  );
  assert.ok(resolver.asked.includes('xn--bcher-kva.example'));
  assert.deepEqual(
    s.received.flatMap((m) => m.to).sort(),
    ['a@localhost', 'b@xn--bcher-kva.example'],
    'RCPT carries the A-label',
  );
});

test('MX delivery uses STARTTLS when offered without verifying the certificate; tls_verify: true verifies', async () => {
  const cert = await selfSigned();
  const s = await faultServer({ tls: { key: cert.key, cert: cert.cert } });
  const resolver = fakeResolver({ 'one.example': [{ exchange: '127.0.0.1', priority: 10 }] });
  const r = await mxTransport(s.port, resolver).deliver(request(['a@one.example']));
  assert.equal(r.results[0]!.outcome, 'ok', JSON.stringify(r));
  assert.equal(s.connections[0]!.secure, true);
  const strict = await mxTransport(s.port, resolver, '  tls_verify: true\n').deliver(request(['a@one.example']));
  assert.equal(strict.results[0]!.outcome, 'tempfail');
  assert.match(strict.results[0]!.reply, /^451 4\.7\.5 TLS/);
});

test('a TLS handshake that fails with an MX host is retried in plaintext (opportunistic, unverified)', async () => {
  const cert = await selfSigned();
  const s = await faultServer({
    tls: { key: cert.key, cert: cert.cert },
    hook: (step, _arg, conn) => (step === 'starttls' && conn === 0 ? 'drop' : undefined),
  });
  const resolver = fakeResolver({ 'one.example': [{ exchange: '127.0.0.1', priority: 10 }] });
  const r = await mxTransport(s.port, resolver).deliver(request(['a@one.example']));
  assert.equal(r.results[0]!.outcome, 'ok', JSON.stringify(r));
  assert.equal(s.connections.length, 2);
  assert.ok(s.connections[0]!.commands.includes('STARTTLS'));
  assert.ok(
    !s.connections[1]!.commands.includes('STARTTLS') && !s.connections[1]!.secure,
    'the second session stays in plaintext',
  );
  assert.equal(s.received[0]!.connection, 1);
});
