// What the sendmail command's start costs. The build's code cache (bin/code-cache.js,
// scripts/code-cache.js): sendmail's chunks load their bytecode from it; a chunk changed after the
// build, or a cache V8 cannot use, is compiled from source and the command works as before. A lone
// submission makes its syncs directly (spool/writer.ts): it starts no thread-pool thread.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { makeConfig, messageData, queueJson, ROOT, run, SENDMAIL, tempDir } from '../helpers.js';

/** What bin/code-cache.js did for each chunk that loading the sendmail command compiled, in app. */
async function loadReport(app: string): Promise<Record<string, string>> {
  const script = `const cc = require(${JSON.stringify(path.join(app, 'bin', 'code-cache.js'))});
require(${JSON.stringify(path.join(app, 'dist', 'bundle', 'sendmail.cjs'))});
process.stdout.write(JSON.stringify(cc.codeCacheReport()));`;
  const r = await run(process.execPath, ['-e', script]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, string>;
}

/** bin/ and dist/bundle/ copied into a folder of their own. */
function copyApp(dir: string): string {
  const app = path.join(dir, 'app');
  fs.cpSync(path.join(ROOT, 'dist', 'bundle'), path.join(app, 'dist', 'bundle'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'bin'), path.join(app, 'bin'), { recursive: true });
  return app;
}

test('the build leaves a code cache that the sendmail command uses for every chunk it loads', async () => {
  const report = await loadReport(ROOT);
  const chunks = Object.keys(report);
  assert.ok(chunks.includes('sendmail.cjs') && chunks.length >= 2, `chunks compiled: ${chunks.join(', ')}`);
  for (const [chunk, outcome] of Object.entries(report)) assert.equal(outcome, 'used', chunk);
});

test('a chunk changed after the build, or a cache V8 refuses, is compiled from source and the command works', async () => {
  const cfg = await makeConfig();
  const app = copyApp(cfg.dir);
  const bundle = path.join(app, 'dist', 'bundle');
  const chunk = (await loadReport(app))['sendmail.cjs'] === 'used' ? 'sendmail.cjs' : '';
  assert.equal(chunk, 'sendmail.cjs', 'the copy uses its cache first');
  // another chunk the command loads: the largest one compiled at start
  const other = Object.keys(await loadReport(app))
    .filter((c) => c !== 'sendmail.cjs')
    .sort((a, b) => fs.statSync(path.join(bundle, b)).size - fs.statSync(path.join(bundle, a)).size)[0]!;
  // sendmail.cjs edited without changing its length (V8 checks only the length); the other chunk's
  // cache replaced by bytes that are not a cache, after the source it was made from
  const edited = path.join(bundle, chunk);
  const text = fs.readFileSync(edited, 'utf8');
  const at = text.indexOf('"use strict"');
  assert.ok(at >= 0);
  fs.writeFileSync(edited, `${text.slice(0, at)}'use strict'${text.slice(at + 12)}`);
  const cacheFile = path.join(bundle, `${other}.v8cache`);
  const cache = fs.readFileSync(cacheFile);
  const sourceEnd = cache.indexOf(10) + 1 + fs.statSync(path.join(bundle, other)).size;
  fs.writeFileSync(cacheFile, Buffer.concat([cache.subarray(0, sourceEnd), Buffer.alloc(4096, 7)]));
  const report = await loadReport(app);
  assert.equal(report[chunk], 'stale');
  assert.equal(report[other], 'rejected');
  // the command itself, from the copy: the message is queued whole
  const r = await run(process.execPath, [path.join(app, 'bin', 'sendmail.js'), '-i', 'rcpt@remote.example'], {
    input: 'Subject: cache\n\nthe body\n',
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
  });
  assert.equal(r.code, 0, r.stderr);
  const queued = await queueJson(cfg);
  assert.equal(queued.length, 1);
  // a chunk copied again with new times but the same bytes keeps its cache: only the source counts
  fs.writeFileSync(cacheFile, fs.readFileSync(path.join(ROOT, 'dist', 'bundle', `${other}.v8cache`)));
  fs.utimesSync(path.join(bundle, other), new Date(), new Date(Date.now() + 5000));
  assert.equal((await loadReport(app))[other], 'used');
});

test('a submission commits without the thread pool: no more threads at its end than a bare node', async () => {
  const cfg = await makeConfig();
  const dir = tempDir();
  // a preload that writes, as the process exits, how many threads it has
  const preload = path.join(dir, 'threads.cjs');
  fs.writeFileSync(
    preload,
    "process.on('exit', () => require('fs').writeSync(2, `threads=${require('fs').readdirSync('/proc/self/task').length}\\n`));\n",
  );
  const threads = (stderr: string): number => Number(/threads=(\d+)/.exec(stderr)?.[1]);
  const bare = await run(process.execPath, ['-r', preload, '-e', '0']);
  const r = await run(process.execPath, ['-r', preload, SENDMAIL, '-i', 'rcpt@remote.example'], {
    input: 'Subject: lone\n\nthe body\n',
    env: { FERRYMAIL_CONFIG_DIR: cfg.configDir },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(threads(bare.stderr) > 0, bare.stderr);
  assert.equal(threads(r.stderr), threads(bare.stderr), 'no thread-pool thread started');
  const queued = await queueJson(cfg);
  assert.equal(queued.length, 1);
  assert.equal(queued[0]!.size, fs.statSync(path.join(cfg.spool, 'msg', queued[0]!.id)).size);
});

test('a cache file that is not the chunk owner’s own regular file, writable by no one else, is not read', async () => {
  const dir = tempDir();
  const app = copyApp(dir);
  const bundle = path.join(app, 'dist', 'bundle');
  const cacheFile = path.join(bundle, 'sendmail.cjs.v8cache');
  assert.equal((await loadReport(app))['sendmail.cjs'], 'used');
  // writable by its group: anyone in it could put code there
  fs.chmodSync(cacheFile, 0o664);
  assert.equal((await loadReport(app))['sendmail.cjs'], 'untrusted');
  fs.chmodSync(cacheFile, 0o644);
  // another user's file beside the chunk (a folder others may write to); only root can make one
  if (process.getuid?.() === 0) {
    fs.chownSync(cacheFile, 65534, 65534);
    assert.equal((await loadReport(app))['sendmail.cjs'], 'untrusted');
  }
  // a FIFO in its place is neither read nor waited on; a symlink to a device is not followed
  fs.rmSync(cacheFile);
  spawnSync('mkfifo', [cacheFile]);
  assert.ok(fs.statSync(cacheFile).isFIFO());
  assert.equal((await loadReport(app))['sendmail.cjs'], 'untrusted');
  fs.rmSync(cacheFile);
  fs.symlinkSync('/dev/zero', cacheFile);
  assert.equal((await loadReport(app))['sendmail.cjs'], 'none');
});

test('under the code cache, a hook module loads as without it, with nothing on standard error; a dist/ that is a link still finds its caches', async () => {
  const dir = tempDir();
  const app = copyApp(dir);
  // dist/ moved elsewhere and linked back: Node names the chunks by their real paths
  const real = path.join(dir, 'elsewhere');
  fs.renameSync(path.join(app, 'dist'), real);
  fs.symlinkSync(real, path.join(app, 'dist'));
  assert.equal((await loadReport(app))['sendmail.cjs'], 'used');
  // a hook named by the configuration: its loader's import() is left to Node
  const hook = path.join(dir, 'observer.mjs');
  fs.writeFileSync(hook, 'export default () => ({ connect: () => ({ action: "continue" }) });\n', { mode: 0o644 });
  const cfg = await makeConfig(`hooks:\n  - path: ${hook}\n`);
  const r = await run(process.execPath, [
    path.join(app, 'bin', 'ferrymail.js'),
    '--config-dir',
    cfg.configDir,
    'hooks',
    'list',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stdout.includes('observer.mjs'), r.stdout);
  assert.equal(r.stderr, '', 'no warning');
});

// sendmail reads its standard input with blocking calls (cli/stdin.ts): a writer that keeps its end of the
// pipe open after a lone dot must not hang it, and a pipe left non-blocking by its writer (read(2) says
// EAGAIN) is waited on and read to its end, in the pieces the writer sent
const STDIN_DRIVER = `
import fcntl, os, subprocess, sys, time
r, w = os.pipe()
if sys.argv[1] == 'nonblocking':
    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_NONBLOCK)
p = subprocess.Popen(sys.argv[2:], stdin=r, stderr=subprocess.PIPE)
os.close(r)
pieces = [b'Subject: pieces\\n\\nfirst\\n', b'second\\n', b'.\\n' if sys.argv[1] == 'dot' else b'third\\n']
for piece in pieces:
    os.write(w, piece)
    time.sleep(0.15)
if sys.argv[1] == 'dot':
    try:
        code = p.wait(timeout=10)
    finally:
        os.close(w)
else:
    os.close(w)
    code = p.wait(timeout=10)
sys.stderr.write(p.stderr.read().decode())
sys.exit(code)
`;

test('sendmail ends at a lone dot while the writer keeps the pipe open, and reads a non-blocking pipe whole', async () => {
  const cfg = await makeConfig();
  const driver = path.join(cfg.dir, 'stdin-driver.py');
  fs.writeFileSync(driver, STDIN_DRIVER);
  const env = { ...process.env, FERRYMAIL_CONFIG_DIR: cfg.configDir };
  for (const mode of ['dot', 'nonblocking']) {
    const r = spawnSync('python3', [driver, mode, process.execPath, SENDMAIL, 'bob@example.org'], {
      env,
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 0, `${mode}: ${r.stderr}`);
  }
  const bodies = (await queueJson(cfg)).map((m) => messageData(cfg, m.id as string).split('\r\n\r\n')[1]);
  assert.deepEqual(bodies.sort(), ['first\r\nsecond\r\n', 'first\r\nsecond\r\nthird\r\n']);
});

test('a reader of standard error that went away does not turn a queued message into a failure', async () => {
  const cfg = await makeConfig();
  // no daemon runs, so sendmail says so on standard error: a pipe whose reader is closed (EPIPE)
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(process.execPath, [SENDMAIL, '-i', 'bob@example.org'], {
      env: { ...process.env, FERRYMAIL_CONFIG_DIR: cfg.configDir },
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    child.stderr!.destroy();
    child.on('error', reject);
    child.on('close', resolve);
    child.stdin!.end('Subject: nobody listens\n\nbody\n');
  });
  assert.equal(code, 0);
  assert.equal((await queueJson(cfg)).length, 1);
});
