// The sendmail command's standard input read with blocking calls (cli/stdin.ts): everything comes back,
// in chunks that keep no more memory alive than what they hold (a step may hold many of them).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { blockingInput } from '../../src/cli/stdin.js';
import { tempDir } from '../helpers.js';

test('blockingInput reads a file to its end, each chunk a buffer of its own size', () => {
  const file = path.join(tempDir(), 'message');
  const text = Buffer.from(`${'x'.repeat(70_000)}\nend\n`);
  fs.writeFileSync(file, text);
  const fd = fs.openSync(file, 'r');
  try {
    const input = blockingInput(fd);
    const chunks: Buffer[] = [];
    for (let c = input.readSync(); c; c = input.readSync()) chunks.push(c);
    assert.deepEqual(Buffer.concat(chunks), text);
    assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
    // a short read is not a slice of the 64 KB read buffer (small ones share Node's 8 KB pool)
    for (const c of chunks)
      assert.ok(c.buffer.byteLength <= Math.max(c.length, 8192), `${c.length} of ${c.buffer.byteLength}`);
    assert.equal(input.readSync(), null, 'the end stays the end');
  } finally {
    fs.closeSync(fd);
  }
});

test('blockingInput says why it cannot read, as a spool-io error', () => {
  const dir = tempDir();
  const fd = fs.openSync(dir, 'r');
  try {
    assert.throws(
      () => blockingInput(fd).readSync(),
      (e: Error & { code?: string }) => e.code === 'spool-io' && /standard input: EISDIR/.test(e.message),
    );
  } finally {
    fs.closeSync(fd);
  }
});
