// Runs the test suite: builds, then Node's test runner over the compiled *.test.js files (unit, then
// integration). Arguments that are not options narrow the run to matching file names.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// a clean build: a test file that was removed or renamed must not run from an old build
fs.rmSync('dist', { recursive: true, force: true });
const build = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
// one style and the linter's rules (biome.json), and the import rules between the stages
const lint = spawnSync('npm', ['run', '--silent', 'lint'], { stdio: 'inherit' });
if (lint.status !== 0) process.exit(lint.status ?? 1);

/** Every *.test.js below dir, sorted. */
function testFiles(dir) {
  return fs
    .readdirSync(dir, { recursive: true })
    .filter((f) => f.endsWith('.test.js'))
    .map((f) => path.join(dir, f))
    .sort();
}

// the commands the tests run keep their configuration snapshots in a cache of the test run's own, never
// in the user's ~/.cache
const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrymail-test-cache-'));
process.env.XDG_CACHE_HOME = cache;
process.on('exit', () => fs.rmSync(cache, { recursive: true, force: true }));

const opts = process.argv.slice(2).filter((a) => a.startsWith('-'));
const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
let files = testFiles('dist/test');
if (filters.length) files = files.filter((f) => filters.some((x) => f.includes(x)));
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...opts, ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
