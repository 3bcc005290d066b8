// proc/run: the one way configured commands are run: no shell, own process group, output capped,
// standard input given or /dev/null, and a timeout that kills the whole group.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCommand } from '../../src/proc/run.js';
import { tempDir } from '../helpers.js';

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

test('exit code, output, standard input, and a missing program', async () => {
  const r = await runCommand(
    [
      process.execPath,
      '-e',
      'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{console.log(s.trim()+"!");console.error("warn");process.exit(4)})',
    ],
    { env, timeoutMs: 10_000, stdin: 'hi; $(rm -rf /)' },
  );
  assert.deepEqual([r.code, r.stdout, r.stderr, r.timedOut], [4, 'hi; $(rm -rf /)!\n', 'warn\n', false]);
  const capped = await runCommand([process.execPath, '-e', 'process.stdout.write("x".repeat(5000))'], {
    env,
    timeoutMs: 10_000,
    maxOut: 100,
  });
  assert.equal(capped.stdout.length, 100);
  const none = await runCommand(['/nonexistent/program'], { env, timeoutMs: 1000 });
  assert.equal(none.error, 'ENOENT');
  const quiet = await runCommand(
    [process.execPath, '-e', 'process.stdin.on("data",()=>{}).on("end",()=>console.log("eof"))'],
    { env, timeoutMs: 10_000 },
  );
  assert.equal(quiet.stdout, 'eof\n', 'no stdin given: end of file at once');
});

test('a timeout kills the whole group, a child that ignores SIGTERM included, and answers at once', async () => {
  const dir = tempDir();
  const pidFile = path.join(dir, 'pid');
  const script = path.join(dir, 'stubborn.sh');
  fs.writeFileSync(script, `#!/bin/sh\ntrap '' TERM\nsleep 30 &\necho $! > ${JSON.stringify(pidFile)}\nwait\n`, {
    mode: 0o700,
  });
  const r = await runCommand([script], { env, timeoutMs: 300 });
  assert.equal(r.timedOut, true);
  let alive = true;
  for (let i = 0; i < 100 && alive; i++) {
    try {
      process.kill(Number(fs.readFileSync(pidFile, 'utf8')), 0);
      await new Promise((res) => setTimeout(res, 20));
    } catch {
      alive = false;
    }
  }
  assert.equal(alive, false, 'the grandchild is gone');
});

test('a command that leaves a child holding an output the caller does not read still ends when it exits', async () => {
  const r = await runCommand(['/bin/sh', '-c', 'echo tok; sleep 8 >/dev/null & exit 0'], {
    env,
    timeoutMs: 5000,
    capture: { stderr: false },
  });
  assert.deepEqual([r.code, r.stdout, r.timedOut], [0, 'tok\n', false]);
});
