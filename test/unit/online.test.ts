// Online sources: the state file and the query command (masqmail's online_query contract).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { readStateFile, runQuery } from '../../src/online/sources.js';
import { tempDir } from '../helpers.js';

test('state file: first line names the connection; missing or empty is offline', () => {
  const dir = tempDir();
  const f = path.join(dir, 'online');
  assert.equal(readStateFile(f).online, false);
  assert.match(readStateFile(f).why ?? '', /missing/);
  fs.writeFileSync(f, '\n');
  assert.equal(readStateFile(f).online, false);
  fs.writeFileSync(f, 'home\nignored second line\n');
  assert.deepEqual(readStateFile(f), { online: true, connection: 'home', why: `state file ${f}` });
  fs.writeFileSync(f, 'a b; rm -rf\n');
  assert.equal(readStateFile(f).online, false, 'names with spaces or shell characters are refused');
});

test('query command: exit 0 with a name is online; non-zero, no name, or a hang is offline', async () => {
  const node = process.execPath;
  assert.deepEqual(await runQuery([node, '-e', 'console.log("office")']), {
    online: true,
    connection: 'office',
    why: `command ${node}`,
  });
  assert.equal((await runQuery([node, '-e', 'console.log("office"); process.exit(1)'])).online, false);
  assert.equal((await runQuery([node, '-e', '']))?.online, false);
  const hung = await runQuery([node, '-e', 'setTimeout(() => {}, 60000)'], 300);
  assert.equal(hung.online, false);
  assert.match(hung.why ?? '', /timed out/);
  const missing = await runQuery(['/nonexistent/online-query']);
  assert.match(missing.why ?? '', /ENOENT/);
  const dir = tempDir();
  const pwned = path.join(dir, 'pwned');
  const argv = await runQuery([node, '-e', 'console.log(process.argv[1])', `$(touch ${pwned}); \`touch ${pwned}\``]);
  assert.equal(argv.online, false, 'the argument came back verbatim, which is not a usable name');
  assert.equal(fs.existsSync(pwned), false, 'no shell ever saw the argument');
});
