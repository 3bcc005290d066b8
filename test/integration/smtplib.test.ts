// Python's smtplib against the real daemon on loopback: sendmail, send_message, several recipients,
// DSN options, and LMTP with one reply per recipient.
//
// Each case runs one short python3 script; its arguments (ports, addresses) come as one JSON argv word,
// message bytes on stdin, and it prints one JSON object with what the server answered.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  freePort,
  makeConfig,
  messageData,
  queueShowJson,
  run,
  startDaemon,
  stopDaemon,
  type RunningDaemon,
} from '../helpers.js';

const MAX_RCPTS = 4;

const PRELUDE = `
import json, smtplib, sys
A = json.loads(sys.argv[1])
def text(b):
    return b.decode('utf-8', 'replace') if isinstance(b, bytes) else b
def capture_data(s, out):
    orig = s.data
    def data(msg):
        code, resp = orig(msg)
        out['data'] = [code, text(resp)]
        return code, resp
    s.data = data
`;

/** Runs a python script (after the prelude) and parses the JSON it prints. */
async function py(script: string, args: Record<string, unknown>, input: string | Buffer = ''): Promise<any> {
  const r = await run('python3', ['-c', PRELUDE + script, JSON.stringify(args)], { input, timeoutMs: 20_000 });
  assert.equal(r.code, 0, `python3 failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** The queue id of a "250 2.0.0 Ok: queued as ID" reply text. */
function idOf(reply: [number, string] | undefined): string {
  assert.ok(reply, 'no DATA reply');
  assert.equal(reply[0], 250, reply[1]);
  const id = /^2\.0\.0 .*queued as ([0-9A-Z]{16})$/.exec(reply[1])?.[1];
  assert.ok(id, reply[1]);
  return id;
}

/** Turns LF text into the CRLF bytes smtplib sends unchanged. */
function crlf(s: string): Buffer {
  return Buffer.from(s.replace(/\r?\n/g, '\r\n'), 'utf8');
}

describe('smtplib', () => {
  let d: RunningDaemon;
  let lmtpPort: number;
  before(async () => {
    lmtpPort = await freePort();
    d = await startDaemon(
      await makeConfig(`lmtp_listen: ["127.0.0.1:${lmtpPort}"]\nlimits:\n  recipients: ${MAX_RCPTS}`),
    );
  });
  after(async () => {
    await stopDaemon(d);
  });

  test('sendmail() with one recipient: accepted, queued, and the EHLO features seen by smtplib', async () => {
    const out = await py(
      `
s = smtplib.SMTP('127.0.0.1', A['port'], local_hostname='client.example', timeout=10)
out = {}
capture_data(s, out)
out['refused'] = {k: [c, text(m)] for k, (c, m) in s.sendmail(A['from'], A['to'], sys.stdin.buffer.read()).items()}
out['features'] = sorted(s.esmtp_features)
s.quit()
print(json.dumps(out))
`,
      { port: d.cfg.port, from: 'py@example.com', to: ['bob@example.org'] },
      crlf('From: py@example.com\nTo: bob@example.org\nSubject: from smtplib\n\nplain line\n.leading dot line\n'),
    );
    assert.deepEqual(out.refused, {});
    for (const f of ['pipelining', '8bitmime', 'smtputf8', 'dsn', 'size', 'enhancedstatuscodes'])
      assert.ok(out.features.includes(f), `${f} in ${out.features}`);
    const id = idOf(out.data);
    const e = await queueShowJson(d.cfg, id);
    assert.equal(e.sender, 'py@example.com');
    assert.deepEqual(
      e.recipients.map((r: any) => r.address),
      ['bob@example.org'],
    );
    assert.equal(e.origin.helo, 'client.example');
    // smtplib dot-stuffs; the spool holds the message as written
    assert.ok(messageData(d.cfg, id).endsWith('\r\n\r\nplain line\r\n.leading dot line\r\n'));
  });

  test('send_message() takes To, Cc and Bcc as recipients and never stores the Bcc header', async () => {
    const out = await py(
      `
from email.message import EmailMessage
m = EmailMessage()
m['From'] = A['from']
m['To'] = A['to']
m['Cc'] = A['cc']
m['Bcc'] = A['bcc']
m['Subject'] = 'send_message'
m['Message-ID'] = A['msgid']
m.set_content('hello from send_message')
s = smtplib.SMTP('127.0.0.1', A['port'], local_hostname='client.example', timeout=10)
out = {}
capture_data(s, out)
out['refused'] = {k: [c, text(r)] for k, (c, r) in s.send_message(m).items()}
s.quit()
print(json.dumps(out))
`,
      {
        port: d.cfg.port,
        from: 'Py Sender <py@example.com>',
        to: 'To One <to1@example.org>',
        cc: 'cc1@example.net',
        bcc: 'hidden@example.com',
        msgid: '<send-message-1@client.example>',
      },
    );
    assert.deepEqual(out.refused, {});
    const id = idOf(out.data);
    const e = await queueShowJson(d.cfg, id);
    assert.equal(e.sender, 'py@example.com');
    assert.deepEqual(e.recipients.map((r: any) => r.address).sort(), [
      'cc1@example.net',
      'hidden@example.com',
      'to1@example.org',
    ]);
    assert.equal(e.message_id, '<send-message-1@client.example>');
    const data = messageData(d.cfg, id);
    assert.doesNotMatch(data, /^Bcc:/im);
    assert.doesNotMatch(data, /hidden@example\.com/);
    assert.match(data, /\r\nCc: cc1@example\.net\r\n/);
  });

  test('send_message() with a UTF-8 address uses SMTPUTF8 and 8BITMIME, and the envelope says so', async () => {
    const out = await py(
      `
from email.message import EmailMessage
from email import policy
m = EmailMessage(policy=policy.SMTPUTF8)
m['From'] = A['from']
m['To'] = A['to']
m['Subject'] = 'Grüße'
m.set_content('Straße und Grüße', cte='8bit')
s = smtplib.SMTP('127.0.0.1', A['port'], local_hostname='client.example', timeout=10)
out = {}
capture_data(s, out)
out['refused'] = {k: [c, text(r)] for k, (c, r) in s.send_message(m).items()}
s.quit()
print(json.dumps(out))
`,
      { port: d.cfg.port, from: 'zoë@example.com', to: 'jürgen@example.org' },
    );
    assert.deepEqual(out.refused, {});
    const id = idOf(out.data);
    const e = await queueShowJson(d.cfg, id);
    assert.equal(e.smtputf8, true);
    assert.equal(e.body, '8BITMIME');
    assert.equal(e.sender, 'zoë@example.com');
    assert.deepEqual(
      e.recipients.map((r: any) => r.address),
      ['jürgen@example.org'],
    );
    assert.ok(Buffer.from(messageData(d.cfg, id), 'latin1').includes(Buffer.from('Straße und Grüße', 'utf8')));
  });

  test('sendmail() to several recipients: all accepted up to the limit, the one over it refused with 452 4.5.3', async () => {
    const rcpts = Array.from({ length: MAX_RCPTS + 1 }, (_, i) => `r${i}@example.org`);
    const out = await py(
      `
s = smtplib.SMTP('127.0.0.1', A['port'], local_hostname='client.example', timeout=10)
out = {}
capture_data(s, out)
out['refused'] = {k: [c, text(m)] for k, (c, m) in s.sendmail(A['from'], A['to'], sys.stdin.buffer.read()).items()}
s.quit()
print(json.dumps(out))
`,
      { port: d.cfg.port, from: 'py@example.com', to: rcpts },
      crlf('Subject: many\n\nto many\n'),
    );
    const over = rcpts[MAX_RCPTS]!;
    assert.deepEqual(Object.keys(out.refused), [over]);
    assert.equal(out.refused[over][0], 452);
    assert.match(out.refused[over][1], /^4\.5\.3 /);
    const e = await queueShowJson(d.cfg, idOf(out.data));
    assert.deepEqual(
      e.recipients.map((r: any) => r.address),
      rcpts.slice(0, MAX_RCPTS),
    );
  });

  test('mail_options and rcpt_options carry DSN parameters into the envelope', async () => {
    const out = await py(
      `
s = smtplib.SMTP('127.0.0.1', A['port'], local_hostname='client.example', timeout=10)
out = {}
capture_data(s, out)
out['refused'] = s.sendmail(A['from'], A['to'], sys.stdin.buffer.read(), mail_options=A['mail'], rcpt_options=A['rcpt'])
s.quit()
print(json.dumps(out))
`,
      {
        port: d.cfg.port,
        from: 'py@example.com',
        to: ['dsn1@example.org', 'dsn2@example.org'],
        mail: ['RET=FULL', 'ENVID=smtplib-env-7'],
        rcpt: ['NOTIFY=SUCCESS,DELAY', 'ORCPT=rfc822;original@example.org'],
      },
      crlf('Subject: dsn\n\nwith dsn\n'),
    );
    assert.deepEqual(out.refused, {});
    const e = await queueShowJson(d.cfg, idOf(out.data));
    assert.equal(e.ret, 'FULL');
    assert.equal(e.envid, 'smtplib-env-7');
    for (const r of e.recipients) {
      assert.deepEqual(r.notify, ['SUCCESS', 'DELAY']);
      assert.equal(r.orcpt, 'rfc822;original@example.org');
    }
  });

  const LMTP_SCRIPT = `
s = smtplib.LMTP('127.0.0.1', A['port'], local_hostname='client.example', timeout=5)
out = {'lhlo': list(s.ehlo())}
out['lhlo'][1] = text(out['lhlo'][1])
out['mail'] = s.mail(A['from'])[0]
out['rcpt'] = [s.rcpt(r)[0] for r in A['to']]
accepted = sum(1 for c in out['rcpt'] if c == 250)
code, resp = s.data(sys.stdin.buffer.read())
out['replies'] = [[code, text(resp)]]
try:
    for _ in range(accepted - 1):
        c, r = s.getreply()
        out['replies'].append([c, text(r)])
except Exception as e:
    out['error'] = type(e).__name__
s.close()
print(json.dumps(out))
`;

  test('LMTP: one reply per recipient after DATA, all naming the same queued message', async () => {
    const rcpts = ['l1@example.org', 'l2@example.org', 'l3@example.org'];
    const out = await py(
      LMTP_SCRIPT,
      { port: lmtpPort, from: 'lmtp@example.com', to: rcpts },
      crlf('Subject: over lmtp\n\nlmtp body\n'),
    );
    assert.equal(out.lhlo[0], 250);
    assert.match(out.lhlo[1], /PIPELINING/);
    assert.equal(out.mail, 250);
    assert.deepEqual(out.rcpt, [250, 250, 250]);
    assert.equal(out.error, undefined);
    assert.equal(out.replies.length, rcpts.length);
    const ids = out.replies.map((r: [number, string]) => idOf(r));
    assert.equal(new Set(ids).size, 1, `one message: ${ids}`);
    const e = await queueShowJson(d.cfg, ids[0]);
    assert.equal(e.origin.door, 'lmtp');
    assert.equal(e.protocol, 'LMTP');
    assert.deepEqual(
      e.recipients.map((r: any) => r.address),
      rcpts,
    );
  });

  test('LMTP: a recipient given twice still gets one reply per accepted RCPT', async () => {
    const rcpts = ['dup@example.org', 'other@example.org', 'DUP@example.org'];
    const out = await py(
      LMTP_SCRIPT,
      { port: lmtpPort, from: 'lmtp@example.com', to: rcpts },
      crlf('Subject: dup over lmtp\n\nlmtp body\n'),
    );
    assert.deepEqual(out.rcpt, [250, 250, 250]);
    assert.equal(out.error, undefined, `the client waited for a reply that never came: ${JSON.stringify(out)}`);
    assert.equal(out.replies.length, 3);
    for (const r of out.replies) idOf(r);
  });

  test('LMTP: a refused message (bare LF) is refused once per recipient, repeated RCPT included', async () => {
    const rcpts = ['x1@example.org', 'x2@example.org', 'x1@example.org'];
    const out = await py(
      LMTP_SCRIPT,
      { port: lmtpPort, from: 'lmtp@example.com', to: rcpts },
      Buffer.from('Subject: bare\n\nbare line feeds\n'),
    );
    assert.deepEqual(out.rcpt, [250, 250, 250]);
    assert.equal(out.error, undefined, JSON.stringify(out));
    assert.deepEqual(
      out.replies.map((r: [number, string]) => [r[0], r[1].slice(0, 5)]),
      rcpts.map(() => [550, '5.6.0']),
    );
  });
});
