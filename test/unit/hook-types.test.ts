// The types of `ferrymail/hooks`, as a hook author imports them from the installed package: a module
// written against them compiles, and one whose handler answers something that is no verdict does not.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT, tempDir } from '../helpers.js';

/** Compiles one file in a project that has ferrymail installed; the compiler's output and status. */
function compile(source: string): { status: number | null; out: string } {
  const dir = tempDir('ferrymail-hook-types-');
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'ferrymail'));
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type": "module"}\n');
  fs.writeFileSync(path.join(dir, 'hook.ts'), source);
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(
    process.execPath,
    [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', 'hook.ts'],
    { cwd: dir, encoding: 'utf8', env: { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules') } },
  );
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const GOOD = `import type { HookFactory, Verdict } from 'ferrymail/hooks';
const factory: HookFactory = (options, api) => ({
  rcpt: async (session, input): Promise<Verdict> => {
    api.log(\`rcpt \${input.arg} from \${session.peer}\`);
    if (input.arg === options.blocked) return { action: 'reject', reply: { code: 550, enhanced: '5.7.1', text: 'No' } };
    return session.trusted ? { action: 'accept' } : { action: 'continue' };
  },
});
export default factory;
`;

test('a hook module typed with ferrymail/hooks compiles', () => {
  const r = compile(GOOD);
  assert.equal(r.status, 0, r.out);
});

test('a handler that answers something other than a verdict does not compile', () => {
  const r = compile(GOOD.replace("{ action: 'accept' }", "{ action: 'maybe' }"));
  assert.notEqual(r.status, 0);
  assert.match(r.out, /maybe/);
});
