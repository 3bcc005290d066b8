// SMTP through a SOCKS5 proxy (as `ssh -D` gives): the proxy is asked for the server by name, the
// session and its TLS run end to end with the real server (the certificate is checked against the
// server's name, not the proxy's), and a proxy that refuses or is not there defers with its reason.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { smtpTransport } from '../../src/transport/smtp.js';
import { socksConnect } from '../../src/transport/socks.js';
import type { DeliveryRequest, Transport } from '../../src/transport/types.js';
import { freePort } from '../helpers.js';
import { closeAll, faultServer, selfSigned } from '../support/fault-smtp.js';

const servers: net.Server[] = [];
const transports: Transport[] = [];
after(async () => {
  await Promise.all(transports.map((t) => t.close?.()));
  for (const s of servers) s.close();
  await closeAll();
});

/** A SOCKS5 proxy on loopback that resolves names through `names` and records what it was asked. */
async function proxy(names: Record<string, number>, refuse = false): Promise<{ port: number; asked: string[] }> {
  const asked: string[] = [];
  const server = net.createServer((c) => {
    c.once('data', (hello) => {
      assert.deepEqual([...hello], [5, 1, 0]);
      c.write(Buffer.from([5, 0]));
      c.once('data', (req) => {
        assert.equal(req[3], 3, 'CONNECT by name');
        const name = req.subarray(5, 5 + req[4]!).toString();
        const port = req.readUInt16BE(5 + req[4]!);
        asked.push(`${name}:${port}`);
        const target = names[name];
        if (refuse || target === undefined) return void c.end(Buffer.from([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]));
        const up = net.connect(target, '127.0.0.1', () => {
          c.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]));
          c.pipe(up).pipe(c);
        });
        up.on('error', () => c.destroy());
        c.on('error', () => up.destroy());
      });
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as net.AddressInfo).port, asked };
}

/** A request for one recipient. */
function request(): DeliveryRequest {
  const body = 'Subject: t\r\n\r\nthrough the proxy\r\n';
  return {
    id: 'T1',
    sender: 'a@x.org',
    recipients: [{ address: 'b@y.org' }],
    message: () => Readable.from([Buffer.from(body)]),
    size: body.length,
  };
}

test('a message goes through the proxy to the server named in the route, STARTTLS verified against that name', async () => {
  const cert = await selfSigned('smtp.behind.example', false);
  const s = await faultServer({ tls: { key: cert.key, cert: cert.cert } });
  const p = await proxy({ 'smtp.behind.example': s.port });
  const t = smtpTransport({
    host: 'smtp.behind.example',
    port: 587,
    name: 'ferry.example',
    starttls: 'required',
    ca: fs.readFileSync(cert.certFile),
    proxy: { host: '127.0.0.1', port: p.port },
  });
  transports.push(t);
  const r = await t.deliver(request());
  assert.deepEqual(
    r.results.map((x) => x.outcome),
    ['ok'],
    JSON.stringify(r),
  );
  assert.deepEqual(p.asked, ['smtp.behind.example:587']);
  assert.ok(s.connections[0]!.secure);
  assert.match(s.received[0]!.data, /through the proxy/);
});

test('a proxy that refuses, or that is not there, defers with its reason', async () => {
  const p = await proxy({}, true);
  const t = smtpTransport({
    host: 'smtp.behind.example',
    port: 25,
    name: 'ferry.example',
    starttls: 'never',
    proxy: { host: '127.0.0.1', port: p.port },
  });
  transports.push(t);
  const r = await t.deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(
    r.results[0]!.reply,
    /^451 4\.4\.1 SOCKS proxy 127\.0\.0\.1:\d+ could not connect to smtp\.behind\.example:25: connection refused$/,
  );
  const gone = await freePort();
  const missing = await socksConnect({ host: '127.0.0.1', port: gone }, { host: 'x.example', port: 25 }, 2000);
  assert.ok(!(missing instanceof net.Socket));
  assert.match(missing.message, /^cannot reach SOCKS proxy 127\.0\.0\.1:\d+: ECONNREFUSED$/);
});

test('an IPv4-mapped IPv6 target is sent as its 16 bytes; a proxy that closes after saying yes is reported as such', async () => {
  let got: Buffer | undefined;
  const server = net.createServer((c) => {
    c.once('data', () => {
      c.write(Buffer.from([5, 0]));
      c.once('data', (req) => {
        got = req;
        c.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0, 0]));
        c.end(); // as ssh -D does when the server cannot be reached
      });
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const s = await socksConnect({ host: '127.0.0.1', port }, { host: '::ffff:10.1.2.3', port: 25 }, 2000);
  assert.ok(s instanceof net.Socket);
  s.destroy();
  assert.equal(got![3], 4, 'ATYP IPv6');
  assert.equal(got!.subarray(4, 20).toString('hex'), '00000000000000000000ffff0a010203');

  const t = smtpTransport({
    host: 'smtp.behind.example',
    port: 587,
    name: 'ferry.example',
    starttls: 'never',
    proxy: { host: '127.0.0.1', port },
  });
  transports.push(t);
  const r = await t.deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(
    r.results[0]!.reply,
    /^451 4\.4\.1 SOCKS proxy 127\.0\.0\.1:\d+ closed the connection to smtp\.behind\.example:587 before its greeting \(\w+\): the proxy could not reach it$/,
  );
});
