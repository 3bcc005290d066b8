// SIGHUP reloads the configuration and the daemon keeps running (it used to die with exit 129 and leave
// its control socket behind): listeners kept take the new limits for their next sessions, new listeners
// open, a configuration with problems is refused with a log line and the old one stays; `config set`
// and `ferrymail reload` reload a running daemon.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ferrymail, freePort, makeConfig, RawSmtp, startDaemon, stopDaemon, waitUntil } from '../helpers.js';

/** The EHLO reply of a fresh session on a port. */
async function ehlo(port: number): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    return await c.cmd('EHLO client.example');
  } finally {
    c.close();
  }
}

test('SIGHUP reloads: new limits, a new listener, a broken file refused; the daemon goes on', async () => {
  const cfg = await makeConfig('limits:\n  message_size: 100000');
  const file = path.join(cfg.configDir, 'ferrymail.yaml');
  const d = await startDaemon(cfg);
  try {
    assert.match(await ehlo(cfg.port), /SIZE 100000/);
    const second = await freePort();
    fs.writeFileSync(
      file,
      fs
        .readFileSync(file, 'utf8')
        .replace('message_size: 100000', 'message_size: 200000')
        .replace(`listen: ["127.0.0.1:${cfg.port}"]`, `listen: ["127.0.0.1:${cfg.port}", "127.0.0.1:${second}"]`),
    );
    d.child.kill('SIGHUP');
    assert.ok(await waitUntil(() => /-- configuration reloaded/.test(d.log()), 10_000), d.log());
    assert.equal(d.child.exitCode, null, 'still running');
    assert.match(await ehlo(cfg.port), /SIZE 200000/);
    assert.match(await ehlo(second), /SIZE 200000/, 'the new listener is open');
    // a broken file: refused, the old configuration stays
    fs.writeFileSync(file, `${fs.readFileSync(file, 'utf8')}limits:\n  nonsense: 1\n`);
    d.child.kill('SIGHUP');
    assert.ok(await waitUntil(() => /configuration not reloaded; the one in use stays/.test(d.log()), 10_000), d.log());
    assert.match(await ehlo(cfg.port), /SIZE 200000/);
    const r = await ferrymail(cfg, ['reload']);
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /invalid configuration: .*Map keys must be unique/);
  } finally {
    const code = await d.stop();
    assert.equal(code, 0);
    assert.match(d.log(), /-- stopped/);
    assert.equal(fs.existsSync(path.join(cfg.spool, 'control.sock')), false);
  }
});

test('config set reloads a running daemon and says so', async () => {
  const cfg = await makeConfig();
  const d = await startDaemon(cfg);
  try {
    const r = await ferrymail(cfg, ['config', 'set', 'limits.message_size', '123456']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /the daemon has reloaded its configuration/);
    assert.match(await ehlo(cfg.port), /SIZE 123456/);
  } finally {
    await stopDaemon(d);
  }
});
