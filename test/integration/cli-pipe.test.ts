// The commands as the first part of a pipeline whose reader goes away early (`ferrymail status | head
// -1`, `mailq | head`): they end quietly, without a stack trace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { FERRYMAIL, fillSpool, makeConfig, SENDMAIL } from '../helpers.js';

/** Runs a command, reads its first chunk of output and closes the pipe; resolves with its stderr and exit. */
function firstChunkOnly(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.once('data', () => child.stdout.destroy());
    const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => (clearTimeout(t), resolve({ code, stderr })));
  });
}

test('queue list and mailq into a pipe closed after the first line end quietly', async () => {
  const cfg = await makeConfig();
  await fillSpool(cfg.spool, 3000);
  for (const args of [
    [FERRYMAIL, '--config-dir', cfg.configDir, 'queue', 'list'],
    [FERRYMAIL, '--config-dir', cfg.configDir, 'queue', 'list', '--json'],
    [SENDMAIL, '-bp'],
  ]) {
    const r = await firstChunkOnly(args, { FERRYMAIL_CONFIG_DIR: cfg.configDir });
    assert.equal(r.stderr, '', `${args.slice(-2).join(' ')}: ${r.stderr}`);
    assert.equal(r.code, 0);
  }
});
