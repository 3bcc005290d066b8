// The import rules between stages hold for the whole of src/, and the checker does catch a violation.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ROOT, tempDir } from '../helpers.js';

const { checkImports } = (await import(pathToFileURL(path.join(ROOT, 'scripts', 'check-imports.js')).href)) as {
  checkImports(dir: string): string[];
};

test('src/ keeps its import rules (receive never imports delivery code, spool only domain)', () => {
  assert.deepEqual(checkImports(path.join(ROOT, 'src')), []);
});

test('the checker reports a forbidden import', () => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'spool'));
  fs.mkdirSync(path.join(dir, 'receive'));
  fs.writeFileSync(path.join(dir, 'receive', 'x.ts'), 'export const x = 1;\n');
  fs.writeFileSync(path.join(dir, 'spool', 'y.ts'), "import { x } from '../receive/x.js';\nexport const y = x;\n");
  assert.deepEqual(checkImports(dir), ['spool/y.ts: spool/ may not import receive (../receive/x.js)']);
});

test('the checker reports an exported variable (a lazily loaded chunk would keep its first value)', () => {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'spool'));
  fs.writeFileSync(path.join(dir, 'spool', 'count.ts'), 'export let count = 0;\nexport const bump = () => count++;\n');
  assert.deepEqual(checkImports(dir), ['spool/count.ts: exports a variable (count); export a const or a function']);
});
