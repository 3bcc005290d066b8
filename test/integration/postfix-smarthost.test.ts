// Delivery to a real Postfix smarthost on loopback: sendmail queues, `ferrymail flush --connection NAME`
// delivers by the route of that connection, and Postfix, which keeps everything it accepts on hold, is
// read back with postqueue -j and postcat. Checked: envelope sender and From header rewritten per route,
// the other header fields and the body unchanged, the envelope recipients; STARTTLS required with a test
// CA (and refused without it); SMTP AUTH against Cyrus SASL (a wrong password defers with the reason and
// the secret appears nowhere). Skips, saying what is missing, when Postfix, the SASL tools or root are
// absent.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  ferrymail,
  makeConfig,
  messageData,
  queueJson,
  run,
  SENDMAIL,
  smtpRoute,
  spoolFiles,
  tempDir,
  writeRoute,
  type TestConfig,
} from '../helpers.js';
import { makeTestCa, postfixMissing, startPostfix, type PostfixInstance } from '../postfix.js';

const SENDER = 'alice@laptop.local';
const RCPTS = ['bob@example.org', 'carol@example.net'];

/**
 * A message with what a relay must not touch: a dot-led line, a line that looks like an mbox From_
 * line, trailing blanks, a tab, 8-bit text, a long line, an empty line at the end.
 */
const MESSAGE = [
  'From: Alice <alice@laptop.local>',
  'To: Bob <bob@example.org>, carol@example.net',
  'Reply-To: alice@laptop.local',
  'Subject: report for the smarthost',
  'Content-Type: text/plain; charset=iso-8859-1',
  'Content-Transfer-Encoding: 8bit',
  '',
  'Hello Bob,',
  '.a line that starts with a dot',
  '..and one with two',
  'From the beginning, as an mbox line would',
  'trailing blanks   ',
  '\tindented by a tab',
  'caf\xe9 cr\xe8me br\xfbl\xe9e',
  'x'.repeat(900),
  '.',
  '',
].join('\n');

/** A ferrymail configuration with one route for connection `office` to the smarthost. */
async function ferryTo(pf: PostfixInstance, transport: string[]): Promise<TestConfig> {
  const cfg = await makeConfig();
  writeRoute(cfg, '10-office.yaml', smtpRoute('office-smarthost', 'office', pf.port, { transport }));
  return cfg;
}

/** Queues MESSAGE with the sendmail command; returns its queue id and stored bytes (latin1). */
async function queueMessage(cfg: TestConfig): Promise<{ id: string; stored: string }> {
  const s = await run(process.execPath, [SENDMAIL, '-i', '-f', SENDER, ...RCPTS], {
    input: Buffer.from(MESSAGE, 'latin1'),
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
  });
  assert.equal(s.code, 0, s.stderr);
  const q = await queueJson(cfg);
  assert.equal(q.length, 1);
  const id = q[0]!.id as string;
  return { id, stored: messageData(cfg, id) };
}

/** Header section and body of stored message bytes, LF line ends (as Postfix stores lines). */
function split(stored: string): { header: string; body: string } {
  const lf = stored.replace(/\r\n/g, '\n');
  const at = lf.indexOf('\n\n');
  return { header: lf.slice(0, at + 1), body: lf.slice(at + 2) };
}

/** The header section Postfix holds, without the Received field it prepended (and its folded lines). */
function withoutOwnReceived(header: string, pf: PostfixInstance): string {
  const m = /^Received: [^\n]*\n(?:[ \t][^\n]*\n)*/.exec(header);
  assert.ok(m && m[0].includes(`by ${pf.realm} (Postfix)`), `Postfix's own Received first: ${header}`);
  return header.slice(m[0].length);
}

/** Checks that the one held message is ours, rewritten per route, with the body unchanged. */
async function assertRelayed(pf: PostfixInstance, stored: string): Promise<{ received: string; envelope: string }> {
  const q = await pf.queue();
  assert.equal(q.length, 1, `one message in Postfix's queue: ${JSON.stringify(q)}`);
  const entry = q[0]!;
  assert.equal(entry.queue_name, 'hold');
  assert.equal(entry.sender, 'alice@isp.example', 'envelope sender rewritten by the route');
  assert.deepEqual(entry.recipients.map((r) => r.address).sort(), [...RCPTS].sort());
  const m = await pf.message(entry.queue_id);
  assert.equal(m.sender, 'alice@isp.example');
  assert.deepEqual([...m.recipients].sort(), [...RCPTS].sort());
  const sent = split(stored);
  // From rewritten (display name kept); Reply-To is not in the route's maps and stays
  const expectedHeader = sent.header.replace(
    /^From: Alice <alice@laptop\.local>\n/m,
    'From: Alice <alice.smith@isp.example>\n',
  );
  assert.notEqual(expectedHeader, sent.header, 'the stored message has the From line the route rewrites');
  assert.equal(withoutOwnReceived(m.header, pf), expectedHeader);
  assert.match(m.header, /^Reply-To: alice@laptop\.local$/m);
  assert.equal(m.body, sent.body, 'body byte for byte (line ends aside)');
  assert.ok(m.body.includes('caf\xe9 cr\xe8me'), '8-bit text arrived');
  return { received: /^Received: [^\n]*\n(?:[ \t][^\n]*\n)*/.exec(m.header)![0], envelope: m.envelope };
}

describe('plain SMTP to a Postfix smarthost', { skip: postfixMissing() }, () => {
  let pf: PostfixInstance;
  before(async () => {
    pf = await startPostfix();
  });
  after(() => pf?.stop());

  test('sender and From rewritten per route, recipients right, body unchanged, ferrymail queue empty', async () => {
    const cfg = await ferryTo(pf, ['tls: none']);
    const { stored } = await queueMessage(cfg);
    const f = await ferrymail(cfg, ['flush', '--connection', 'office']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /connection office\): 1 message due; 2 delivered, 0 deferred, 0 failed/);
    await assertRelayed(pf, stored);
    assert.deepEqual(await queueJson(cfg), []);
    assert.deepEqual(spoolFiles(cfg).msg, []);
  });

  test('tls: starttls to a server that offers no STARTTLS defers, nothing is sent in the clear', async () => {
    const cfg = await ferryTo(pf, ['tls: starttls']);
    await queueMessage(cfg);
    const before = (await pf.queue()).length;
    const f = await ferrymail(cfg, ['flush', '--connection', 'office']);
    assert.equal(f.code, 0, f.stderr);
    const q = await queueJson(cfg);
    // a missing STARTTLS is the route's policy failing, not the server refusing the mail: retry later
    assert.match(f.stdout, /1 message due; 0 delivered, 2 deferred, 0 failed/, `ferrymail queue: ${JSON.stringify(q)}`);
    assert.equal(q.length, 1);
    for (const r of q[0]!.recipients) {
      assert.equal(r.state, 'deferred');
      assert.match(r.last_error, /^4\d\d /);
    }
    assert.equal((await pf.queue()).length, before, 'Postfix got nothing');
  });
});

describe('STARTTLS required, verified against a test CA', { skip: postfixMissing({ tls: true }) }, () => {
  let pf: PostfixInstance;
  let ca: { ca: string; cert: string; key: string };
  before(async () => {
    const dir = tempDir('ferrymail-ca-');
    ca = await makeTestCa(dir, 'smarthost');
    pf = await startPostfix({ tls: ca });
  });
  after(() => pf?.stop());

  test('without the CA the certificate is refused: deferred with the reason, Postfix got nothing', async () => {
    const cfg = await ferryTo(pf, ['tls: starttls']);
    await queueMessage(cfg);
    const f = await ferrymail(cfg, ['flush', '--connection', 'office']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /1 message due; 0 delivered, 2 deferred, 0 failed/);
    const q = await queueJson(cfg);
    for (const r of q[0]!.recipients) {
      assert.equal(r.state, 'deferred');
      assert.match(r.last_error, /^4\d\d /);
    }
    assert.deepEqual(await pf.queue(), []);
  });

  test('tls: starttls with ca_file: delivered over TLS, rewritten, body unchanged', async () => {
    const cfg = await ferryTo(pf, ['tls: starttls', `ca_file: ${JSON.stringify(ca.ca)}`]);
    const { stored } = await queueMessage(cfg);
    const f = await ferrymail(cfg, ['flush', '--connection', 'office']);
    assert.equal(f.code, 0, f.stderr);
    const q = await queueJson(cfg);
    assert.match(
      f.stdout,
      /connection office\): 1 message due; 2 delivered, 0 deferred, 0 failed/,
      `ferrymail queue: ${JSON.stringify(q)}`,
    );
    const { received } = await assertRelayed(pf, stored);
    // Postfix says ESMTPS for a message received over TLS
    assert.match(received, /with ESMTPS id /);
    assert.match(pf.log(), /TLS connection established from localhost\[127\.0\.0\.1\]/);
    assert.deepEqual(q, []);
  });
});

describe('SMTP AUTH against Cyrus SASL (sasldb)', { skip: postfixMissing({ sasl: true }) }, () => {
  const RIGHT = 'Corr3ct-horse-battery';
  const WRONG = 'wr0ng-Staple-guess';
  let pf: PostfixInstance;
  before(async () => {
    pf = await startPostfix({ sasl: { user: 'alice', password: RIGHT } });
  });
  after(() => pf?.stop());

  test('a wrong password defers with the reason and shows the secret nowhere; the right one delivers', async () => {
    const secretDir = tempDir('ferrymail-secret-');
    const pwFile = path.join(secretDir, 'smarthost.pw');
    fs.writeFileSync(pwFile, `${WRONG}\n`, { mode: 0o600 });
    const cfg = await ferryTo(pf, ['tls: none', 'user: alice', `password_file: ${JSON.stringify(pwFile)}`]);
    const { stored } = await queueMessage(cfg);

    const f = await ferrymail(cfg, ['flush', '--connection', 'office']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /1 message due; 0 delivered, 2 deferred, 0 failed/);
    const q = await queueJson(cfg);
    assert.equal(q.length, 1);
    for (const r of q[0]!.recipients) {
      assert.equal(r.state, 'deferred');
      // Postfix's own refusal is (in) the reason
      assert.match(r.last_error, /\b535 5\.7\.8 .*authentication failed/i);
    }
    assert.deepEqual(await pf.queue(), [], 'Postfix got nothing');
    assert.match(pf.log(), /SASL (PLAIN|LOGIN) authentication failed/);
    // the secret is in no output, no queue listing, no spool file (nor the smarthost's log)
    const shown = [
      f.stdout,
      f.stderr,
      JSON.stringify(q),
      (await ferrymail(cfg, ['queue', 'list'])).stdout,
      (await ferrymail(cfg, ['queue', 'show', q[0]!.id])).stdout,
      pf.log(),
    ];
    const spool = fs.readdirSync(cfg.spool, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    for (const e of spool)
      shown.push(fs.readFileSync(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name), 'latin1'));
    for (const text of shown) {
      for (const secret of [
        WRONG,
        Buffer.from(WRONG).toString('base64'),
        Buffer.from(`\0alice\0${WRONG}`).toString('base64'),
      ]) {
        assert.ok(!text.includes(secret), `secret shown: ${text.slice(0, 300)}`);
      }
    }

    // the administrator fixes the password file; the next flush delivers, logged in
    fs.writeFileSync(pwFile, `${RIGHT}\n`, { mode: 0o600 });
    const g = await ferrymail(cfg, ['flush', '--connection', 'office']);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stdout, /1 message due; 2 delivered, 0 deferred, 0 failed/);
    const { received, envelope } = await assertRelayed(pf, stored);
    assert.match(received, /with ESMTPA id /);
    assert.match(envelope, new RegExp(`^named_attribute: sasl_username=alice@${pf.realm.replace(/\./g, '\\.')}$`, 'm'));
    assert.deepEqual(await queueJson(cfg), []);
    for (const text of [g.stdout, g.stderr]) assert.ok(!text.includes(RIGHT));
  });
});
