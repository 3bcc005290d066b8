// Secrets of SMTP routes as the queue builds them from route files: a password command (an XOAUTH2
// token), an environment variable, a password file; their failures are tempfail with a reason that
// never carries the secret or the command's output.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { loadRoutes } from '../../src/config/routes.js';
import { runSecretCommand } from '../../src/queue/smtp-settings.js';
import { transportFor } from '../../src/queue/wiring.js';
import type { DeliveryRequest, Transport } from '../../src/transport/types.js';
import { tempDir } from '../helpers.js';
import { closeAll, faultServer, selfSigned, type FaultServer } from '../support/fault-smtp.js';

const TOKEN = 'ya29.token-SECRET-42';
const transports: Transport[] = [];
let server: FaultServer;
before(async () => {
  const cert = await selfSigned();
  server = await faultServer({
    tls: { key: cert.key, cert: cert.cert },
    auth: { mechanisms: ['PLAIN', 'XOAUTH2'], user: 'alice', secret: TOKEN },
  });
});
after(async () => {
  await Promise.all(transports.map((t) => t.close?.()));
  await closeAll();
});

/** The transport of a smarthost route file with the given extra transport lines. */
function route(lines: string[]): Transport {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'routes'));
  const text = [
    'type: smtp',
    'host: 127.0.0.1',
    `port: ${server.port}`,
    'tls: starttls',
    'tls_verify: false',
    'user: alice',
    ...lines,
  ]
    .map((l) => `  ${l}\n`)
    .join('');
  fs.writeFileSync(path.join(dir, 'routes', 'r.yaml'), `name: relay\npermanent: true\ntransport:\n${text}`);
  const t = transportFor(loadRoutes(dir)[0]!, 'ferry.example');
  transports.push(t);
  return t;
}

/** A one-recipient request. */
function request(): DeliveryRequest {
  const body = 'Subject: t\r\n\r\nhello\r\n';
  return {
    id: 'T1',
    sender: 'a@x.org',
    recipients: [{ address: 'b@y.org' }],
    message: () => Readable.from([Buffer.from(body)]),
    size: body.length,
  };
}

/** A script that prints text (and exits with a code). */
function script(text: string, code = 0): string {
  const file = path.join(tempDir(), 'secret.sh');
  fs.writeFileSync(file, `#!/bin/sh\necho '${text}'\necho '${text}' >&2\nexit ${code}\n`, { mode: 0o700 });
  return file;
}

test('XOAUTH2 with the token a password_command prints', async () => {
  const r = await route(['auth_method: xoauth2', `password_command: [${script(TOKEN)}]`]).deliver(request());
  assert.equal(r.results[0]!.outcome, 'ok', JSON.stringify(r));
  assert.ok(server.connections.at(-1)!.commands.includes('AUTH XOAUTH2'), JSON.stringify(server.connections));
});

test('a failing password_command is tempfail saying how it failed, never what it printed', async () => {
  const r = await route([`password_command: [${script(TOKEN, 3)}]`]).deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(
    r.results[0]!.reply,
    /^451 4\.7\.0 cannot get the secret for 127\.0\.0\.1:\d+: password_command \S+secret\.sh exited 3$/,
  );
  assert.ok(!JSON.stringify(r).includes(TOKEN));
});

test('password_env: the variable when set, a clear tempfail when not', async () => {
  process.env.FERRYMAIL_TEST_PW = TOKEN;
  const ok = await route(['password_env: FERRYMAIL_TEST_PW']).deliver(request());
  assert.equal(ok.results[0]!.outcome, 'ok', JSON.stringify(ok));
  delete process.env.FERRYMAIL_TEST_PW;
  const missing = await route(['password_env: FERRYMAIL_TEST_PW']).deliver(request());
  assert.equal(missing.results[0]!.outcome, 'tempfail');
  assert.match(missing.results[0]!.reply, /environment variable FERRYMAIL_TEST_PW is not set/);
});

test('a password file others can read breaks the route (tempfail with the reason), without its content', async () => {
  const file = path.join(tempDir(), 'pw');
  fs.writeFileSync(file, `${TOKEN}\n`, { mode: 0o644 });
  fs.chmodSync(file, 0o644);
  const r = await route([`password_file: ${file}`]).deliver(request());
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(r.results[0]!.reply, /^451 4\.3\.5 route relay: password_file .* must be readable by its owner only/);
  assert.ok(!JSON.stringify(r).includes(TOKEN));
  fs.chmodSync(file, 0o600);
  const ok = await route([`password_file: ${file}`]).deliver(request());
  assert.equal(ok.results[0]!.outcome, 'ok', JSON.stringify(ok));
});

test('a password_command that ignores SIGTERM is killed with its children when its time is up', async () => {
  const dir = tempDir();
  const pidFile = path.join(dir, 'child.pid');
  const cmd = path.join(dir, 'stubborn.sh');
  fs.writeFileSync(cmd, `#!/bin/sh\ntrap '' TERM\nsleep 30 &\necho $! > ${JSON.stringify(pidFile)}\nwait\n`, {
    mode: 0o700,
  });
  await assert.rejects(runSecretCommand([cmd], 300), /password_command \S+stubborn\.sh timed out/);
  let alive = true;
  for (let i = 0; i < 100 && alive; i++) {
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    try {
      process.kill(pid, 0);
      await new Promise((r) => setTimeout(r, 20));
    } catch {
      alive = false;
    }
  }
  assert.equal(alive, false, 'the grandchild was killed too');
});
