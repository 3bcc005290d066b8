// The DKIM signer: relaxed body hashes equal dkimpy's whatever the chunking, signatures that dkimpy
// verifies (RSA and Ed25519, folded and repeated fields, 8-bit bytes), keys refused with the reason, and
// the route file's dkim section checked with file and line.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { loadRoutes } from '../../src/config/routes.js';
import { newRecipient } from '../../src/domain/envelope.js';
import { messageFor, transportFor } from '../../src/queue/wiring.js';
import type { Route } from '../../src/route/types.js';
import { openStore } from '../../src/spool/store.js';
import { openSpoolWriter } from '../../src/spool/writer.js';
import {
  bodyHashOf,
  DEFAULT_SIGNED_HEADERS,
  loadDkimKey,
  RelaxedBodyHash,
  signatureField,
} from '../../src/sign/dkim.js';
import { dkimVerify, keyRecord, referenceBodyHashes } from '../dkimpy.js';
import { routeIssues, tempDir } from '../helpers.js';

const BODIES = [
  '',
  '\r\n',
  '\r\n\r\n\r\n',
  'hello\r\n',
  'hello',
  'a  b\t\tc \t \r\n',
  '  leading\r\n\t\r\n \r\nx\r\n\r\n\r\n',
  'line\r\n\r\n\r\nafter gap\r\n \t \r\n\r\n',
  'bare\rcr inside\r\n',
  'caf\xe9 \xa0 nbsp stays\r\n',
  'From me\r\n.dot\r\n',
  `${'x'.repeat(5000)}  ${'y'.repeat(70000)}\t\r\n`,
];

/** The relaxed hash of a body fed in the given pieces. */
function hashInPieces(body: Buffer, cuts: number[]): string {
  const h = new RelaxedBodyHash();
  let at = 0;
  for (const c of [...cuts, body.length]) {
    h.update(body.subarray(at, c));
    at = c;
  }
  return h.digest();
}

test('relaxed body hashes equal dkimpy, cut at every byte boundary or fed at once', async () => {
  const bodies = BODIES.map((b) => Buffer.from(b, 'latin1'));
  const want = await referenceBodyHashes(bodies);
  bodies.forEach((b, i) => {
    assert.equal(hashInPieces(b, []), want[i], `body ${i} whole`);
    if (b.length < 200)
      for (let cut = 0; cut <= b.length; cut++)
        assert.equal(hashInPieces(b, [cut]), want[i], `body ${i} cut at ${cut}`);
    assert.equal(
      hashInPieces(
        b,
        Array.from({ length: Math.floor(b.length / 3) }, (_, k) => 3 * k),
      ),
      want[i],
      `body ${i} in 3-byte pieces`,
    );
  });
  // a bare LF ends a line, as it will on the wire
  assert.equal(hashInPieces(Buffer.from('a \nb\n\n'), []), hashInPieces(Buffer.from('a \r\nb\r\n\r\n'), []));
  // what follows a header section starts with the empty separator line, which is not body
  assert.equal(await bodyHashOf(Readable.from([Buffer.from('\r'), Buffer.from('\nhello\r\n')])), want[3]);
});

/** A key file of the given type (mode 0600) and its DNS record. */
function keyFile(type: 'rsa' | 'ed25519', bits = 2048): { file: string; record: string } {
  const { privateKey } =
    type === 'rsa' ? crypto.generateKeyPairSync('rsa', { modulusLength: bits }) : crypto.generateKeyPairSync('ed25519');
  const file = path.join(tempDir(), `${type}.pem`);
  fs.writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  return { file, record: keyRecord(privateKey) };
}

const HEAD =
  'Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
  'From: "Alice \xc9." <alice@example.org>\r\n' +
  'To: bob@example.net,\r\n\t  carol@example.net   \r\n' +
  'To: second-to@example.net\r\n' +
  'subject:   spaces\t\tand   tabs  \r\n' +
  'Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
  'Message-ID: <1@example.org>\r\n';
const BODY = '\r\nhello  \r\nFrom the body\r\n\r\n\r\n';

for (const type of ['rsa', 'ed25519'] as const) {
  test(`an ${type} signature that dkimpy verifies, and that breaks when a signed field changes`, async () => {
    const { file, record } = keyFile(type);
    const key = loadDkimKey({
      domain: 'example.org',
      selector: 'sel1',
      keyFile: file,
      headers: DEFAULT_SIGNED_HEADERS,
    });
    assert.equal(key.algorithm, `${type}-sha256`);
    const bh = await bodyHashOf(Readable.from([Buffer.from(BODY, 'latin1')]));
    const sig = signatureField(HEAD, bh, key);
    assert.ok(
      sig.split('\r\n').every((l) => l.length <= 78),
      'folded',
    );
    const unfolded = sig.replace(/\r\n /g, ' ');
    assert.match(
      unfolded,
      new RegExp(`^DKIM-Signature: v=1; a=${type}-sha256; c=relaxed/relaxed; d=example\\.org; s=sel1; t=\\d+; `),
    );
    assert.match(
      unfolded,
      /h=from:subject:date:message-id:to:to: ?from;/,
      'each To, From over-signed, Received not signed',
    );
    const msg = Buffer.from(sig + HEAD + BODY, 'latin1');
    const v = await dkimVerify(msg, 'sel1._domainkey.example.org', record);
    assert.equal(v.ok, true, v.log);
    assert.deepEqual(v.asked, ['sel1._domainkey.example.org.']);
    // refolding and whitespace do not matter (relaxed); a changed or added From does
    const refolded = Buffer.from(
      sig +
        HEAD.replace('subject:   spaces', 'Subject: spaces').replace('\r\n\t  carol', ' carol') +
        BODY.replace('hello  ', 'hello'),
      'latin1',
    );
    assert.equal((await dkimVerify(refolded, 'sel1._domainkey.example.org', record)).ok, true);
    const changed = Buffer.from(sig + HEAD.replace('alice@', 'mallory@') + BODY, 'latin1');
    assert.equal((await dkimVerify(changed, 'sel1._domainkey.example.org', record)).ok, false);
    const added = Buffer.from(`${sig + HEAD}From: mallory@example.org\r\n${BODY}`, 'latin1');
    assert.equal((await dkimVerify(added, 'sel1._domainkey.example.org', record)).ok, false);
    const body = Buffer.from(`${sig + HEAD + BODY}more\r\n`, 'latin1');
    assert.equal((await dkimVerify(body, 'sel1._domainkey.example.org', record)).ok, false);
  });
}

test('keys that cannot sign are refused with the reason, never the key', () => {
  const settings = (keyFile: string, algorithm?: 'rsa-sha256' | 'ed25519-sha256') => ({
    domain: 'example.org',
    selector: 's',
    keyFile,
    headers: ['from'],
    algorithm,
  });
  const rsa = keyFile('rsa');
  const ed = keyFile('ed25519');
  const dir = tempDir();
  const garbage = path.join(dir, 'garbage.pem');
  fs.writeFileSync(garbage, '-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n', {
    mode: 0o600,
  });
  const open = path.join(dir, 'open.pem');
  fs.copyFileSync(rsa.file, open);
  fs.chmodSync(open, 0o640);
  const small = keyFile('rsa', 512);
  const cases: [string, RegExp][] = [
    [path.join(dir, 'missing.pem'), /cannot be read \(ENOENT\)/],
    [dir, /is not a file/],
    [garbage, /holds no private key/],
    [open, /must be readable by its owner only/],
    [small.file, /512-bit RSA key/],
  ];
  for (const [file, why] of cases) {
    assert.throws(() => loadDkimKey(settings(file)), why, file);
  }
  const der = path.join(dir, 'key.der');
  fs.writeFileSync(der, crypto.createPrivateKey(fs.readFileSync(ed.file)).export({ format: 'der', type: 'pkcs8' }), {
    mode: 0o600,
  });
  assert.equal(loadDkimKey(settings(der)).algorithm, 'ed25519-sha256', 'DER is read too');
  assert.throws(
    () => loadDkimKey(settings(rsa.file, 'ed25519-sha256')),
    /holds a key of type rsa, not the Ed25519 key/,
  );
  assert.throws(() => loadDkimKey(settings(ed.file, 'rsa-sha256')), /holds a key of type ed25519, not the RSA key/);
  try {
    loadDkimKey(settings(open));
  } catch (err) {
    assert.doesNotMatch((err as Error).message, /BEGIN|MII/, 'no key material in the reason');
  }
});

test('the dkim section of a route file: parsed, and every problem reported with file and line', () => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'routes'));
  fs.mkdirSync(path.join(dir, 'keys'));
  const good = path.join(dir, 'keys', 'good.pem');
  fs.copyFileSync(keyFile('rsa').file, good);
  fs.chmodSync(good, 0o600);
  const open = path.join(dir, 'keys', 'open.pem');
  fs.writeFileSync(open, 'x', { mode: 0o644 });
  fs.chmodSync(open, 0o644);
  const write = (name: string, text: string): void => fs.writeFileSync(path.join(dir, 'routes', name), text);
  write(
    '10-ok.yaml',
    'permanent: true\ndkim:\n  domain: Bücher.Example.\n  selector: mail2024\n  key_file: keys/good.pem\n  headers: [From, Subject, to]\n  algorithm: rsa-sha256\n',
  );
  const [ok] = loadRoutes(dir);
  assert.deepEqual(ok!.dkim, {
    domain: 'xn--bcher-kva.example',
    selector: 'mail2024',
    keyFile: good,
    headers: ['from', 'subject', 'to'],
    algorithm: 'rsa-sha256',
  });
  write(
    '20-default.yaml',
    `permanent: true\ndkim: {domain: example.org, selector: s, key_file: ${JSON.stringify(good)}}\n`,
  );
  assert.deepEqual(loadRoutes(dir)[1]!.dkim!.headers, DEFAULT_SIGNED_HEADERS);
  write(
    '30-bad.yaml',
    'permanent: true\ndkim:\n  domain: "exa mple.org"\n  key_file: keys/open.pem\n  headers: [Subject]\n  algorithm: rsa-sha1\n  colour: red\n',
  );
  write('40-bad.yaml', 'permanent: true\ndkim: yes\n');
  write('50-bad.yaml', 'permanent: true\ndkim:\n  domain: example.org\n  selector: s\n  key_file: keys/missing.pem\n');
  const got = routeIssues(dir);
  for (const want of [
    /^30-bad\.yaml: dkim\.domain@3: "exa mple\.org" is not a DNS name/,
    /^30-bad\.yaml: dkim\.selector@3: is required/,
    /^30-bad\.yaml: dkim\.key_file@4: \S+open\.pem must be readable by its owner only/,
    /^30-bad\.yaml: dkim\.headers@5: must include From/,
    /^30-bad\.yaml: dkim\.algorithm@6: must be one of rsa-sha256, ed25519-sha256/,
    /^30-bad\.yaml: dkim\.colour@7: unknown key/,
    /^40-bad\.yaml: dkim@2: must be a mapping/,
    /^50-bad\.yaml: dkim\.key_file@5: \S+missing\.pem cannot be read \(ENOENT\)/,
  ]) {
    assert.ok(
      got.some((g) => want.test(g)),
      `${want} in ${JSON.stringify(got, null, 1)}`,
    );
  }
});

test('a key that breaks after the transport was built: each delivery defers with the reason, the message stream fails before its first byte', async () => {
  const root = tempDir();
  const w = await openSpoolWriter(root).begin();
  w.stream.end('From: a@example.org\r\nSubject: t\r\n\r\nbody\r\n');
  const env = await w.commit({
    version: 1,
    arrival: new Date().toISOString(),
    sender: 'a@example.org',
    recipients: [newRecipient('b@example.net')],
    origin: { door: 'sendmail' },
    protocol: 'local',
  });
  const { file } = keyFile('rsa');
  const route: Route = {
    name: 'signing',
    connections: [],
    permanent: true,
    senders: { allow: [], deny: [] },
    recipients: { allow: [], deny: [] },
    fromHeader: { allow: [], deny: [] },
    rewrite: { envelopeSender: [], from: [], sender: [], replyTo: [], mailFollowupTo: [] },
    lastRoute: false,
    connectErrorFail: false,
    uncertain: 'retry',
    dkim: { domain: 'example.org', selector: 's', keyFile: file, headers: ['from'] },
    transport: { type: 'pipe', command: ['cat'] },
  };
  const read = async (): Promise<{ bytes: number; error?: string }> => {
    let bytes = 0;
    try {
      for await (const c of messageFor(openStore(root), env, route)) bytes += (c as Buffer).length;
      return { bytes };
    } catch (err) {
      return { bytes, error: (err as Error).message };
    }
  };
  const good = await read();
  assert.equal(good.error, undefined);
  assert.ok(good.bytes > 100, 'signed and sent');
  // one transport for a whole run: the key is checked again at each delivery
  const transport = transportFor(route, 'test.example');
  fs.chmodSync(file, 0o644);
  assert.deepEqual(await read(), {
    bytes: 0,
    error: `route signing: dkim signing failed: key_file ${file} must be readable by its owner only (chmod 600)`,
  });
  const res = await transport.deliver({
    id: env.id,
    sender: env.sender,
    recipients: [{ address: 'b@example.net' }],
    message: () => messageFor(openStore(root), env, route),
    size: 10,
  });
  assert.deepEqual(
    res.results.map((r) => [r.outcome, r.reply]),
    [['tempfail', `451 4.3.5 route signing: dkim key_file ${file} must be readable by its owner only (chmod 600)`]],
  );
});
