// DKIM end to end: sendmail queues, `ferrymail flush` delivers through a signing route to an SMTP sink on
// loopback, and dkimpy verifies what the sink got, with a DNS function that knows only the test's key.
// The From rewrite comes before signing; a broken key defers with the reason and sends nothing.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { dkimVerify, keyRecord } from '../dkimpy.js';
import { ferrymail, makeConfig, queueJson, sendmail, smtpRoute, writeRoute, type TestConfig } from '../helpers.js';
import { startSink, type Sink, type Taken } from '../support/sink.js';

let got: Taken[] = [];
let sink: Sink;
let sinkPort = 0;

before(async () => {
  sink = await startSink();
  got = sink.got;
  sinkPort = sink.port;
});
after(() => sink.close());

/** A private key of a type written to a file of the given mode, and its DNS record. */
function writeKey(file: string, type: 'rsa' | 'ed25519', mode = 0o600): string {
  const { privateKey } =
    type === 'rsa' ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }) : crypto.generateKeyPairSync('ed25519');
  fs.writeFileSync(file, privateKey.export({ format: 'pem', type: type === 'rsa' ? 'pkcs1' : 'pkcs8' }), { mode });
  fs.chmodSync(file, mode);
  return keyRecord(privateKey);
}

/** A configuration with one route to the sink that rewrites From and signs with key_file. */
async function setup(dkimLines: string[]): Promise<TestConfig & { keyFile: string }> {
  const cfg = await makeConfig();
  const keyFile = path.join(cfg.dir, 'dkim.key');
  const dkim = [
    'dkim:',
    '  domain: isp.example',
    '  selector: s2024',
    `  key_file: ${JSON.stringify(keyFile)}`,
    ...dkimLines.map((l) => `  ${l}`),
  ];
  writeRoute(cfg, '20-home.yaml', smtpRoute('home-isp', 'home', sinkPort, { more: dkim, fromOnly: true }));
  return { ...cfg, keyFile };
}

const DNS = 's2024._domainkey.isp.example';
const MESSAGE =
  'From: Alice <alice@laptop.local>\nTo: bob@example.org\nSubject:  signed   on the way out \n\nhello  \nFrom the body\n.a dot line\n\n\n';

/** Queues a message and flushes on the home connection; returns what the sink got for rcpt. */
async function deliver(cfg: TestConfig, rcpt: string, message = MESSAGE): Promise<{ flush: string; data?: Buffer }> {
  const s = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', rcpt], message);
  assert.equal(s.code, 0, s.stderr);
  const before = got.length;
  const f = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.equal(f.code, 0, f.stderr);
  return { flush: f.stdout, data: got.slice(before).find((g) => g.to.includes(rcpt))?.raw };
}

test('rsa-sha256: the delivered message verifies, over the rewritten From', async () => {
  const cfg = await setup([]);
  const record = writeKey(cfg.keyFile, 'rsa');
  const { flush, data } = await deliver(cfg, 'bob@example.org');
  assert.match(flush, /1 delivered/);
  assert.ok(data, 'the sink got it');
  const text = data.toString('latin1');
  assert.match(text, /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=isp\.example; s=s2024;/);
  assert.match(text, /^From: Alice <alice\.smith@isp\.example>\r$/m, 'rewritten');
  const v = await dkimVerify(data, DNS, record);
  assert.equal(v.ok, true, v.log);
  assert.deepEqual(v.asked, [`${DNS}.`]);
  // the signature covers the rewritten From: put the original back and it no longer verifies
  const original = Buffer.from(text.replace('alice.smith@isp.example', 'alice@laptop.local'), 'latin1');
  assert.equal((await dkimVerify(original, DNS, record)).ok, false);
  assert.deepEqual(await queueJson(cfg), []);
});

test('ed25519-sha256 over a 3 MB body read in many chunks, with the route naming the fields', async () => {
  const cfg = await setup(['algorithm: ed25519-sha256', 'headers: [From, To, Subject]']);
  const record = writeKey(cfg.keyFile, 'ed25519');
  const line = `${'x'.repeat(70)}  \t y\n`;
  const big = MESSAGE.replace('hello  \n', line.repeat(Math.ceil((3 << 20) / line.length)));
  const { data } = await deliver(cfg, 'carol@example.org', big);
  assert.ok(data && data.length > 3 << 20, 'the whole message arrived');
  assert.match(
    data.toString('latin1').replace(/\r\n /g, ' '),
    /^DKIM-Signature: v=1; a=ed25519-sha256; .*h=from:to:subject: ?from;/,
  );
  const v = await dkimVerify(data, DNS, record);
  assert.equal(v.ok, true, v.log);
});

test('a broken key defers the route with the reason and sends nothing; a good key then delivers', async () => {
  const cfg = await setup([]);
  fs.writeFileSync(cfg.keyFile, '-----BEGIN RSA PRIVATE KEY-----\nbroken\n-----END RSA PRIVATE KEY-----\n', {
    mode: 0o600,
  });
  const { flush, data } = await deliver(cfg, 'dave@example.org');
  assert.match(flush, /0 delivered, 1 deferred/);
  assert.equal(data, undefined, 'nothing unsigned went out');
  const q = await queueJson(cfg);
  assert.match(
    q[0]!.recipients[0].last_error,
    /^451 4\.3\.5 route home-isp: dkim key_file .*dkim\.key holds no private key/,
  );
  const record = writeKey(cfg.keyFile, 'rsa');
  const before = got.length;
  const f = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.match(f.stdout, /1 delivered/);
  const again = got.slice(before).find((g) => g.to.includes('dave@example.org'));
  assert.ok(again);
  assert.equal((await dkimVerify(again.raw, DNS, record)).ok, true);
});

test('a key file others may read stops the run with the route file and line', async () => {
  const cfg = await setup([]);
  writeKey(cfg.keyFile, 'rsa', 0o644);
  const s = await sendmail(cfg, ['-i', '-f', 'alice@laptop.local', 'erin@example.org'], MESSAGE);
  assert.equal(s.code, 0, s.stderr);
  const before = got.length;
  const f = await ferrymail(cfg, ['flush', '--connection', 'home']);
  assert.notEqual(f.code, 0);
  assert.match(f.stderr, /routes:9: 20-home\.yaml: dkim\.key_file: \S+dkim\.key must be readable by its owner only/);
  assert.equal(got.length, before);
  assert.equal((await queueJson(cfg)).length, 1, 'the message waits');
});
