// ferrymail route test NAME: what a route's server offers, before any mail is trusted to it (as msmtp's
// --serverinfo): TLS, the certificate with the fingerprint ready to paste, the extensions and AUTH
// mechanisms, and whether the route's credentials log in. Nothing is sent.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { closeAll, faultServer, selfSigned } from '../support/fault-smtp.js';
import { ferrymail, makeConfig, writeRoute } from '../helpers.js';

after(closeAll);

test('route test shows the certificate, what the server offers and the login; nothing is sent', async () => {
  const cert = await selfSigned('smtp.isp.example');
  const server = await faultServer({
    tls: { key: cert.key, cert: cert.cert },
    auth: { mechanisms: ['PLAIN', 'LOGIN'], user: 'alice', secret: 'right-secret' },
  });
  const cfg = await makeConfig();
  const pw = path.join(cfg.configDir, 'isp.pw');
  fs.writeFileSync(pw, 'right-secret\n', { mode: 0o600 });
  writeRoute(cfg, '10-isp.yaml', [
    'name: isp',
    'permanent: true',
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${server.port}`,
    '  tls: starttls',
    '  user: alice',
    `  password_file: ${pw}`,
  ]);
  const r = await ferrymail(cfg, ['route', 'test', 'isp']);
  const fp = cert.fingerprint.replace(/:/g, '').toLowerCase();
  assert.match(r.stdout, /^tls: yes$/m);
  assert.match(r.stdout, /^certificate: subject smtp\.isp\.example, issued by smtp\.isp\.example/m);
  assert.ok(r.stdout.includes(`sha256: ${fp}`), r.stdout);
  assert.match(r.stdout, /NOT trusted: DEPTH_ZERO_SELF_SIGNED_CERT/);
  assert.match(r.stdout, /^auth: PLAIN LOGIN$/m);
  assert.match(r.stdout, /^login as the route's user: ok$/m);
  assert.equal(r.code, 69, 'a certificate that is not trusted is worth a non-zero exit');
  // pinned by the fingerprint it printed: trusted, exit 0
  writeRoute(cfg, '10-isp.yaml', [
    'name: isp',
    'permanent: true',
    'transport:',
    '  type: smtp',
    '  host: 127.0.0.1',
    `  port: ${server.port}`,
    '  tls: starttls',
    `  fingerprint: ${fp}`,
    '  user: alice',
    `  password_file: ${pw}`,
  ]);
  const pinned = await ferrymail(cfg, ['route', 'test', 'isp', '--json']);
  assert.equal(pinned.code, 0, pinned.stdout + pinned.stderr);
  assert.equal(JSON.parse(pinned.stdout).cert.trusted, true);
  assert.ok(!server.connections.some((c) => c.commands.some((x) => /^(MAIL|RCPT|DATA)/.test(x))), 'no mail was sent');
  const bad = await ferrymail(cfg, ['route', 'test', 'nope']);
  assert.equal(bad.code, 64);
});
