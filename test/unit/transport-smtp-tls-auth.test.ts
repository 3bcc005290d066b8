// TLS and AUTH of the SMTP transport against the fault server: certificates are verified unless a CA
// file, a fingerprint or tls_verify: false says otherwise; every AUTH mechanism logs in; a refused login
// is tempfail with the server's reply, and the secret is nowhere in what comes back, even when the
// server echoes it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { smtpTransport, type SmtpSettings } from '../../src/transport/smtp.js';
import type { DeliveryRequest, Transport } from '../../src/transport/types.js';
import { closeAll, faultServer, selfSigned } from '../support/fault-smtp.js';

const transports: Transport[] = [];
let cert: Awaited<ReturnType<typeof selfSigned>>;
before(async () => {
  cert = await selfSigned();
});
after(async () => {
  await Promise.all(transports.map((t) => t.close?.()));
  await closeAll();
});

const SECRET = 's3cret-Pa55word';

/** A request for one or two recipients. */
function request(rcpts = ['a@y.org']): DeliveryRequest {
  const body = 'Subject: t\r\n\r\nhello\r\n';
  return {
    id: 'T1',
    sender: 'a@x.org',
    recipients: rcpts.map((address) => ({ address })),
    message: () => Readable.from([Buffer.from(body)]),
    size: body.length,
  };
}

/** A transport to 127.0.0.1:port with short timeouts. */
function via(port: number, extra: Partial<SmtpSettings>): Transport {
  const t = smtpTransport({
    host: '127.0.0.1',
    port,
    name: 'ferry.example',
    timeouts: { connect: 2000, greeting: 2000, command: 3000 },
    ...extra,
  });
  transports.push(t);
  return t;
}

test('an untrusted certificate is tempfail with the reason; nothing of the message is sent', async () => {
  const s = await faultServer({ tls: { key: cert.key, cert: cert.cert } });
  for (const starttls of ['required', 'opportunistic'] as const) {
    const r = await via(s.port, { starttls }).deliver(request(['a@y.org', 'b@y.org']));
    assert.deepEqual(
      r.results.map((x) => x.outcome),
      ['tempfail', 'tempfail'],
      JSON.stringify(r),
    );
    assert.match(r.results[0]!.reply, /^451 4\.7\.5 TLS with 127\.0\.0\.1:\d+ failed: .*self.signed/i);
    // the certificate is named, with the two ways to trust it
    assert.match(
      r.results[0]!.reply,
      /subject mx\.test\.example, issued by mx\.test\.example, SHA-256 [0-9a-f]{64}; to trust it, set ca_file to its issuer's certificate, or fingerprint: [0-9a-f]{64}/,
    );
    assert.ok(r.results[0]!.reply.includes(cert.fingerprint.replace(/:/g, '').toLowerCase()));
  }
  assert.ok(!s.connections.some((c) => c.commands.some((x) => x.startsWith('MAIL') || x.startsWith('AUTH'))));
});

test('a certificate trusted through ca_file, or matched by fingerprint, or not checked when asked', async () => {
  const s = await faultServer({ tls: { key: cert.key, cert: cert.cert } });
  const ok = [
    via(s.port, { starttls: 'required', ca: fs.readFileSync(cert.certFile) }),
    via(s.port, { starttls: 'opportunistic', fingerprint: cert.fingerprint.replace(/:/g, '').toLowerCase() }),
    via(s.port, { starttls: 'required', verify: false }),
  ];
  for (const t of ok)
    assert.deepEqual(
      (await t.deliver(request())).results.map((x) => x.outcome),
      ['ok'],
    );
  assert.ok(
    s.connections.every((c) => c.secure),
    'every session was encrypted',
  );
  const wrong = await via(s.port, { starttls: 'required', fingerprint: 'ab'.repeat(32) }).deliver(request());
  assert.equal(wrong.results[0]!.outcome, 'tempfail');
  assert.match(wrong.results[0]!.reply, /^451 4\.7\.5 .*fingerprint [0-9a-f]{64} is not the configured one/);
});

test('SMTPS: TLS from the first byte, verified against the CA file', async () => {
  const s = await faultServer({ tls: { key: cert.key, cert: cert.cert, implicit: true } });
  const r = await via(s.port, { secure: true, ca: cert.cert }).deliver(request());
  assert.deepEqual(
    r.results.map((x) => x.outcome),
    ['ok'],
  );
  const bad = await via(s.port, { secure: true }).deliver(request());
  assert.match(bad.results[0]!.reply, /^451 4\.7\.5 TLS/);
});

test('each AUTH mechanism logs in; without auth_method the best one offered is used', async () => {
  for (const [offered, method, used] of [
    [['PLAIN'], 'plain', 'PLAIN'],
    [['PLAIN', 'LOGIN'], 'login', 'LOGIN'],
    [['CRAM-MD5'], 'cram-md5', 'CRAM-MD5'],
    [['PLAIN', 'XOAUTH2'], 'xoauth2', 'XOAUTH2'],
    [['LOGIN', 'PLAIN', 'CRAM-MD5'], undefined, 'CRAM-MD5'],
    [['LOGIN', 'PLAIN'], undefined, 'PLAIN'],
  ] as const) {
    const s = await faultServer({
      tls: { key: cert.key, cert: cert.cert },
      auth: { mechanisms: [...offered], user: 'alice', secret: SECRET },
    });
    let fetched = 0;
    const t = via(s.port, {
      starttls: 'required',
      verify: false,
      auth: { user: 'alice', method, secret: async () => (fetched++, SECRET) },
    });
    const r = await t.deliver(request());
    assert.deepEqual(
      r.results.map((x) => x.outcome),
      ['ok'],
      `${offered} ${method}: ${JSON.stringify(r)}`,
    );
    assert.ok(s.connections[0]!.commands.includes(`AUTH ${used}`), `${used} in ${s.connections[0]!.commands}`);
    assert.equal(fetched, 1, 'the secret is fetched for the login');
  }
});

test('a refused login is tempfail with the server reply, and the secret is nowhere in the result', async () => {
  // the server echoes the password in its refusal: it must be cut out
  for (const mech of ['PLAIN', 'LOGIN', 'XOAUTH2']) {
    const s = await faultServer({
      tls: { key: cert.key, cert: cert.cert },
      auth: {
        mechanisms: [mech],
        user: 'alice',
        secret: 'other',
        failText: `you sent ${SECRET} ${Buffer.from(SECRET).toString('base64')}`,
      },
    });
    const r = await via(s.port, {
      starttls: 'required',
      verify: false,
      auth: { user: 'alice', method: mech === 'XOAUTH2' ? 'xoauth2' : undefined, secret: async () => SECRET },
    }).deliver(request(['a@y.org', 'b@y.org']));
    assert.deepEqual(
      r.results.map((x) => x.outcome),
      ['tempfail', 'tempfail'],
      JSON.stringify(r),
    );
    assert.match(
      r.results[0]!.reply,
      new RegExp(`^454 4\\.7\\.0 AUTH ${mech} at 127\\.0\\.0\\.1:\\d+ failed: 535 5\\.7\\.8 authentication failed`),
    );
    const text = JSON.stringify(r);
    assert.ok(!text.includes(SECRET) && !text.includes(Buffer.from(SECRET).toString('base64')), text);
    assert.ok(!s.connections[0]!.commands.some((c) => c.startsWith('MAIL')), 'no MAIL after a refused login');
  }
});

test('the password is not sent without TLS, unless tls is none', async () => {
  const s = await faultServer({ auth: { mechanisms: ['PLAIN'], user: 'alice', secret: SECRET } });
  let fetched = 0;
  const auth = { user: 'alice', secret: async () => (fetched++, SECRET) };
  const r = await via(s.port, { starttls: 'opportunistic', auth }).deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(r.results[0]!.reply, /^451 4\.7\.10 .*did not offer STARTTLS/);
  assert.equal(fetched, 0, 'not even fetched');
  const never = await via(s.port, { starttls: 'never', auth }).deliver(request());
  assert.match(never.results[0]!.reply, /^451 4\.7\.10 /, 'STARTTLS not used is not permission to send the password');
  const clear = await via(s.port, { starttls: 'never', clearAuth: true, auth }).deliver(request());
  assert.equal(clear.results[0]!.outcome, 'ok');
});

test('a failed STARTTLS never leads to the password being sent in the clear', async () => {
  const s = await faultServer({
    tls: { key: cert.key, cert: cert.cert },
    auth: { mechanisms: ['PLAIN'], user: 'alice', secret: SECRET },
    hook: (step) => (step === 'starttls' ? 'drop' : undefined),
  });
  const r = await via(s.port, {
    starttls: 'opportunistic',
    verify: false,
    auth: { user: 'alice', secret: async () => SECRET },
  }).deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail', JSON.stringify(r));
  assert.ok(
    s.connections.every((c) => !c.commands.some((x) => x.startsWith('AUTH'))),
    'no AUTH on any connection',
  );
  // without a password, the same failure falls back to plaintext (RFC 7435)
  const open = await via(s.port, { starttls: 'opportunistic', verify: false }).deliver(request());
  assert.equal(open.results[0]!.outcome, 'ok');
});

test('a secret that cannot be fetched is tempfail with the reason', async () => {
  const s = await faultServer({
    tls: { key: cert.key, cert: cert.cert },
    auth: { mechanisms: ['PLAIN'], user: 'alice', secret: SECRET },
  });
  const r = await via(s.port, {
    starttls: 'required',
    verify: false,
    auth: { user: 'alice', secret: async () => Promise.reject(new Error('password_command get-token exited 1')) },
  }).deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(
    r.results[0]!.reply,
    /^451 4\.7\.0 cannot get the secret for 127\.0\.0\.1:\d+: password_command get-token exited 1/,
  );
});

test('tls_name: through a tunnel the certificate is checked against the real server name, not the tunnel end', async () => {
  const named = await selfSigned('smtp.corp.example', false);
  const s = await faultServer({ tls: { key: named.key, cert: named.cert } });
  const ca = fs.readFileSync(named.certFile);
  const plain = await via(s.port, { starttls: 'required', ca }).deliver(request());
  assert.equal(plain.results[0]!.outcome, 'tempfail', 'the certificate does not name 127.0.0.1');
  assert.match(plain.results[0]!.reply, /^451 4\.7\.5 TLS/);
  const wrong = await via(s.port, { starttls: 'required', ca, servername: 'other.corp.example' }).deliver(request());
  assert.equal(wrong.results[0]!.outcome, 'tempfail', 'nor other.corp.example');
  const right = await via(s.port, { starttls: 'required', ca, servername: 'smtp.corp.example' }).deliver(request());
  assert.deepEqual(
    right.results.map((x) => x.outcome),
    ['ok'],
  );
  assert.equal(s.received.length, 1, 'only the verified session carried the message');
});

test('tls_cert and tls_key: the route presents its client certificate when the server asks', async () => {
  const s = await faultServer({ tls: { key: cert.key, cert: cert.cert, requestCert: true } });
  const client = await selfSigned('laptop.client.example', false);
  const r = await via(s.port, {
    starttls: 'required',
    ca: cert.cert,
    clientCert: { cert: Buffer.from(client.cert), key: Buffer.from(client.key) },
  }).deliver(request(['a@y.org']));
  assert.equal(r.results[0]!.outcome, 'ok', JSON.stringify(r));
  assert.equal(s.connections.at(-1)!.clientCert, 'laptop.client.example');
});
