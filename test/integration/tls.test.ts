// STARTTLS with the configured certificate, seen from Python's smtplib, and the protocol it leaves in the
// envelope and the Received header; what a daemon without TLS leaves unloaded.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  makeConfig,
  messageData,
  queueJson,
  run,
  smtpSend,
  startDaemon,
  ROOT,
  tempDir,
  waitForPort,
  type RunningDaemon,
} from '../helpers.js';

let d: RunningDaemon | undefined;
let noTls: RunningDaemon | undefined;
/** Where each daemon's node writes, as it exits, the built-in modules it loaded (loaded.PID). */
let loadedDir = '';
/** The tls: section with the test's certificate. */
let tlsSection = '';
before(async () => {
  const dir = tempDir();
  loadedDir = path.join(dir, 'loaded');
  fs.mkdirSync(loadedDir);
  const preload = path.join(dir, 'loaded.cjs');
  fs.writeFileSync(
    preload,
    `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(loadedDir)} + '/loaded.' + process.pid, process.moduleLoadList.join('\\n')));\n`,
  );
  const env = { NODE_OPTIONS: `--require ${preload}` };
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const r = await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=test.example',
    '-days',
    '2',
    '-keyout',
    key,
    '-out',
    cert,
  ]);
  assert.equal(r.code, 0, r.stderr);
  fs.chmodSync(key, 0o600);
  tlsSection = `tls:\n  cert: ${JSON.stringify(cert)}\n  key: ${JSON.stringify(key)}\n`;
  d = await startDaemon(await makeConfig(tlsSection), [], {
    env,
  });
  noTls = await startDaemon(await makeConfig(), [], { env });
});
after(async () => {
  await d?.stop();
  await noTls?.stop();
});

/** Runs a Python smtplib script with PORT set; resolves with its stdout. */
async function py(port: number, script: string): Promise<string> {
  const r = await run('python3', ['-c', script, String(port)]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

test('STARTTLS is offered with a certificate and upgrades the session', async () => {
  const out = await py(
    d!.cfg.port,
    `
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('tls.client')
print('offered', s.has_extn('starttls'))
s.starttls(context=ctx)
s.ehlo('tls.client')
print('offered-after', s.has_extn('starttls'))
r = s.sendmail('a@example.com', ['b@example.org'], b'Subject: tls\\r\\n\\r\\nsecret body\\r\\n')
print('refused', len(r))
s.quit()
`,
  );
  assert.match(out, /offered True/);
  assert.match(out, /offered-after False/);
  assert.match(out, /refused 0/);
  const q = await queueJson(d!.cfg);
  const e = q.find((x) => x.recipients[0].address === 'b@example.org');
  assert.ok(e);
  const data = messageData(d!.cfg, e.id).replace(/\r\n[ \t]+/g, ' ');
  assert.match(data, /with ESMTPS id/);
  assert.match(data, /\(using TLSv1\.[23] with cipher [A-Z0-9_]+\)/);
});

test('without a certificate STARTTLS is neither offered nor accepted', async () => {
  const out = await py(
    noTls!.cfg.port,
    `
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('x.client')
print('offered', s.has_extn('starttls'))
print(s.docmd('STARTTLS'))
s.quit()
`,
  );
  assert.match(out, /offered False/);
  assert.match(out, /\(5\d\d, b'5\.\d\.\d/);
});

test('a daemon without TLS loads neither node:tls, node:crypto, node:fs/promises nor an HTTP client, also after a message', async () => {
  // a message in and its queue run (no route: it waits) on the daemon without TLS
  const sent = await smtpSend(noTls!.cfg.port, { to: ['someone@example.org'] });
  assert.match(sent.reply, /^250 /);
  const loaded = async (daemon: RunningDaemon): Promise<string[]> => {
    assert.equal(await daemon.stop(), 0);
    return fs.readFileSync(path.join(loadedDir, `loaded.${daemon.child.pid}`), 'utf8').split('\n');
  };
  const plain = await loaded(noTls!);
  assert.ok(plain.includes('NativeModule net'), 'the list names what was loaded');
  for (const m of ['tls', 'crypto', 'http', 'https', 'zlib', 'fs/promises'])
    assert.ok(!plain.includes(`NativeModule ${m}`), `node:${m} was loaded`);
  // the same list from the daemon that offers STARTTLS names node:tls (its TLS context is made at start)
  assert.ok((await loaded(d!)).includes('NativeModule tls'));
});

test('the bundled daemon copied without node_modules offers STARTTLS and upgrades a session', async () => {
  const cfg = await makeConfig(tlsSection);
  // bin/ and dist/bundle/ alone: what the daemon needs at run time must be in the bundle
  const app = path.join(cfg.dir, 'app');
  fs.cpSync(path.join(ROOT, 'dist', 'bundle'), path.join(app, 'dist', 'bundle'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'bin'), path.join(app, 'bin'), { recursive: true });
  const child = spawn(
    process.execPath,
    [path.join(app, 'bin', 'ferrymail.js'), '--config-dir', cfg.configDir, 'daemon'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (b) => (out += b));
  child.stderr.on('data', (b) => (out += b));
  try {
    await waitForPort(cfg.port);
    const said = await py(
      cfg.port,
      `
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('copy.client')
s.starttls(context=ctx)
s.ehlo('copy.client')
print('refused', len(s.sendmail('a@example.com', ['b@example.org'], b'Subject: copy\\r\\n\\r\\nbody\\r\\n')))
s.quit()
`,
    );
    assert.match(said, /refused 0/, out);
    assert.match(out, /proto=ESMTPS/);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});
