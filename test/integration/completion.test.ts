// Shell completion as bash runs it: the script from `ferrymail completion bash` is sourced, COMP_WORDS
// and COMP_CWORD set as bash sets them, and the function's COMPREPLY read back: commands, options, the
// queued ids of the configuration named on the line, route and connection names, settings keys.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import {
  FERRYMAIL,
  ferrymail,
  makeConfig,
  queueJson,
  sendmail,
  smtpRoute,
  tempDir,
  type TestConfig,
  writeRoute,
} from '../helpers.js';

let cfg: TestConfig;
let script = '';
const bin = tempDir('ferrymail-bin-');

before(async () => {
  cfg = await makeConfig('online:\n  state_file: online\n  rules:\n    - { connection: office, interface: "eth*" }\n');
  writeRoute(cfg, '10-home.yaml', smtpRoute('home-isp', 'home', 2));
  const r = await sendmail(cfg, ['-f', 'a@laptop.local', 'b@remote.example'], 'Subject: x\n\nx\n');
  assert.equal(r.code, 0, r.stderr);
  // the script calls ferrymail by the name the line used: here, a wrapper on PATH
  fs.writeFileSync(path.join(bin, 'ferrymail'), `#!/bin/sh\nexec '${process.execPath}' '${FERRYMAIL}' "$@"\n`, {
    mode: 0o755,
  });
  const c = await ferrymail(cfg, ['completion', 'bash']);
  assert.equal(c.code, 0, c.stderr);
  script = path.join(bin, 'completion.bash');
  fs.writeFileSync(script, c.stdout);
});

/** What bash offers for the words of a line, the last being the one completed. */
function complete(...words: string[]): string[] {
  const line = ['ferrymail', '--config-dir', cfg.configDir, ...words];
  const r = spawnSync(
    'bash',
    [
      '-c',
      `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ferrymail; printf '%s\\n' "\${COMPREPLY[@]}"`,
      'complete',
      script,
      ...line,
    ],
    { encoding: 'utf8', env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } },
  );
  assert.equal(r.stderr, '', r.stderr);
  return r.stdout.split('\n').filter(Boolean);
}

test('commands, subcommands and options', () => {
  assert.deepEqual(complete('qu'), ['queue']);
  assert.deepEqual(complete('queue', ''), ['list', 'show', 'rm', 'hold', 'release']);
  assert.ok(complete('status', '--').includes('--short'));
  assert.deepEqual(complete('hooks', 'install', 'network'), ['networkmanager', 'networkd']);
});

test('values from the spool and the configuration: queue ids, routes, connections, settings keys', async () => {
  const [m] = await queueJson(cfg);
  assert.deepEqual(complete('queue', 'rm', ''), [m!.id]);
  assert.deepEqual(complete('route', 'test', ''), ['home-isp']);
  assert.deepEqual(complete('flush', '--connection', '').sort(), ['home', 'office']);
  assert.deepEqual(complete('config', 'get', 'queue.retry_m'), ['queue.retry_min', 'queue.retry_max']);
  assert.equal((await ferrymail(cfg, ['completion', '--list', 'nonsense'])).code, 64);
});

test('zsh takes the same function', {
  skip: spawnSync('zsh', ['--version']).status === 0 ? false : 'zsh is not installed',
}, async () => {
  const z = await ferrymail(cfg, ['completion', 'zsh']);
  const file = path.join(bin, 'completion.zsh');
  fs.writeFileSync(file, z.stdout);
  const r = spawnSync('zsh', ['-c', `source ${file}; whence -w _ferrymail`], {
    encoding: 'utf8',
    env: { ...process.env, HOME: bin },
  });
  assert.match(r.stdout, /_ferrymail: function/, r.stderr);
});
