// The built-in ip_list and dnsbl hooks at connect: an address file (read again when it changes), and DNS
// lists served by a private dnsmasq on loopback (a listing refused with the list's text, an allow list
// that skips the block list, the list's own error answer, a resolver that never answers: fail open).
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { freePort, makeConfig, RawSmtp, startDaemon, stopDaemon, tempDir, waitUntil } from '../helpers.js';

/** The greeting a client at a loopback address gets (a refusal comes in its place). */
async function greeting(port: number, from: string): Promise<string> {
  const c = await RawSmtp.connectFrom(port, '127.0.0.1', from);
  try {
    return await c.reply();
  } finally {
    c.close();
  }
}

test('ip_list: listed clients refused before the greeting, the file read again when it changes', async () => {
  const dir = tempDir('ferrymail-iplist-');
  const list = path.join(dir, 'blocked.txt');
  fs.writeFileSync(list, '# blocked\n127.0.0.2\n10.0.0.0/8  # a whole network\n');
  const cfg = await makeConfig(
    `hooks:\n  - builtin: ip_list\n    options: { file: ${JSON.stringify(list)}, reply: "554 5.7.1 Go away, [$ip]" }\n`.replace(
      '[$ip]',
      'friend',
    ),
  );
  const d = await startDaemon(cfg);
  try {
    assert.match(await greeting(cfg.port, '127.0.0.2'), /^554 5\.7\.1 Go away, friend/);
    assert.match(await greeting(cfg.port, '127.0.0.3'), /^220 /);
    fs.writeFileSync(list, '127.0.0.3\n');
    assert.ok(
      await waitUntil(async () => /^554/.test(await greeting(cfg.port, '127.0.0.3')), 5000),
      'the changed file is read again',
    );
    assert.match(await greeting(cfg.port, '127.0.0.2'), /^220 /);
    // a broken file keeps the list in use
    fs.writeFileSync(list, 'not an address\n');
    await new Promise((r) => setTimeout(r, 1200));
    assert.match(await greeting(cfg.port, '127.0.0.3'), /^554/);
    assert.ok(await waitUntil(() => /not read again, the list in use stays/.test(d.log()), 5000), d.log());
  } finally {
    await stopDaemon(d);
  }
});

let dnsmasq: ChildProcess | undefined;
after(() => {
  if (dnsmasq?.exitCode === null) dnsmasq.kill('SIGKILL');
});

/** The dnsmasq binary. */
function dnsmasqBinary(): string {
  const p = ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq'].find((x) => fs.existsSync(x));
  if (!p) throw new Error('dnsmasq not found: install dnsmasq-base');
  return p;
}

test('dnsbl: a listed client refused with the list text; an allow list first; the list error answer and a silent resolver fail open', async () => {
  const port = await freePort();
  dnsmasq = spawn(
    dnsmasqBinary(),
    [
      '-k',
      '--no-resolv',
      '--no-hosts',
      '--no-daemon',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--user=',
      '--pid-file=',
      '--address=/bl.test/',
      '--address=/wl.test/',
      '--address=/2.0.0.127.bl.test/127.0.0.2',
      '--txt-record=2.0.0.127.bl.test,spam source see https://bl.test/',
      '--address=/4.0.0.127.bl.test/127.0.0.2',
      '--address=/4.0.0.127.wl.test/127.0.0.5',
      '--address=/3.0.0.127.bl.test/127.255.255.254',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  process.once('exit', () => dnsmasq?.exitCode === null && dnsmasq.kill('SIGKILL'));
  let err = '';
  dnsmasq.stderr!.on('data', (x) => (err += x));
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(dnsmasq.exitCode, null, err);
  const hooks = `dns:\n  servers: ["127.0.0.1:${port}"]\nhooks:\n  - builtin: dnsbl\n    options:\n      zones:\n        - { zone: wl.test, action: accept }\n        - bl.test\n`;
  const cfg = await makeConfig(hooks);
  const d = await startDaemon(cfg);
  try {
    assert.match(
      await greeting(cfg.port, '127.0.0.2'),
      /^554 5\.7\.1 Service unavailable; client \[127\.0\.0\.2\] blocked using bl\.test; spam source see https:\/\/bl\.test\//,
    );
    assert.match(await greeting(cfg.port, '127.0.0.4'), /^220 /, 'on the allow list: the block list is not asked');
    assert.match(await greeting(cfg.port, '127.0.0.5'), /^220 /, 'not listed');
    assert.match(await greeting(cfg.port, '127.0.0.3'), /^220 /, 'the list refused the query: no listing');
    assert.ok(
      await waitUntil(() => /dnsbl bl\.test: refused the query \(127\.255\.255\.254\)/.test(d.log()), 5000),
      d.log(),
    );
  } finally {
    await stopDaemon(d);
  }
  // a resolver that never answers: the client passes, and the log says the list was not asked
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((r) => silent.bind(0, '127.0.0.1', r));
  const silentHooks = hooks
    .replace(`127.0.0.1:${port}`, `127.0.0.1:${silent.address().port}`)
    .replace('- bl.test', '- { zone: bl.test }');
  const cfg2 = await makeConfig(`${silentHooks}    timeout: 10s\n`);
  const d2 = await startDaemon(cfg2);
  try {
    assert.match(await greeting(cfg2.port, '127.0.0.2'), /^220 /);
    assert.match(d2.log(), /dnsbl (bl|wl)\.test: not asked \(ETIMEOUT\): taken as not listed/);
  } finally {
    await stopDaemon(d2);
    silent.close();
  }
});
