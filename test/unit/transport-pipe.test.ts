// The pipe transport: argv without a shell (hostile addresses stay plain text), exit codes through
// sysexits, stderr as the reason, per recipient or per message, the mbox From line, and the timeout.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { pipeTransport } from '../../src/transport/pipe.js';
import type { DeliveryRequest } from '../../src/transport/types.js';
import { tempDir } from '../helpers.js';

const NODE = process.execPath;

/** A request with the given recipients and body. */
function request(rcpts: string[], body = 'Subject: t\r\n\r\nFrom here\r\nbody\r\n'): DeliveryRequest {
  return { id: 'ID1', sender: 's@x.org', recipients: rcpts.map((address) => ({ address })), message: () => Readable.from([Buffer.from(body)]), size: body.length };
}

/** A script that stores its argv and stdin in DIR/N.json, then exits with the code given in argv[2]. */
function recorder(dir: string): string[] {
  const script = `
const fs = require('fs');
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const n = fs.readdirSync(${JSON.stringify(dir)}).length;
  fs.writeFileSync(require('path').join(${JSON.stringify(dir)}, n + '.json'), JSON.stringify({ argv: process.argv.slice(1), stdin: Buffer.concat(chunks).toString('latin1'), env: Object.keys(process.env) }));
  const code = Number(process.argv[1]);
  if (code) process.stderr.write('refusing: code ' + code + '\\nsecond line\\n');
  process.exit(code);
});`;
  return [NODE, '-e', script];
}

/** What the recorder stored, in order. */
function calls(dir: string): Array<{ argv: string[]; stdin: string; env: string[] }> {
  return fs.readdirSync(dir).sort().map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
}

test('hostile addresses reach the command as plain argv text, never a shell', async () => {
  const dir = tempDir();
  const canary = path.join(tempDir(), 'pwned');
  const hostile = [`"a b"@x.org`, `x;touch ${canary}@x.org`, `$(touch ${canary})@x.org`, '`touch ' + canary + '`@x.org', '-rf@x.org', 'new\nline@x.org'];
  const t = pipeTransport({ command: [...recorder(dir), '0', '--to=${recipient}', '${local_part}', '${domain}', '${sender}', '${id}', '${route}'], route: 'procmail' });
  const r = await t.deliver(request(hostile));
  assert.deepEqual(r.results.map((x) => x.outcome), hostile.map(() => 'ok'));
  const got = calls(dir);
  assert.deepEqual(got.map((c) => c.argv[1]), hostile.map((h) => `--to=${h}`));
  assert.equal(got[1]!.argv[2], `x;touch ${canary}`);
  assert.deepEqual(got[0]!.argv.slice(3), ['x.org', 's@x.org', 'ID1', 'procmail']);
  assert.equal(fs.existsSync(canary), false);
  assert.deepEqual(got[0]!.env.filter((k) => !['PATH'].includes(k) && !k.startsWith('NODE_')), [], 'a clean environment');
});

test('exit codes through sysexits, stderr as the reason', async () => {
  const cases: [number, string, RegExp][] = [
    [0, 'ok', /^250 2\.0\.0/],
    [75, 'tempfail', /^451 4\.3\.0 .* exited 75: refusing: code 75$/],
    [67, 'permfail', /^550 5\.1\.1 .*refusing: code 67$/],
    [68, 'permfail', /^550 5\.1\.2/],
    [65, 'permfail', /^554 5\.6\.0/],
    [77, 'permfail', /^550 5\.7\.1/],
    [69, 'permfail', /^554 5\.3\.0/],
    [1, 'tempfail', /^451 4\.3\.0/],
  ];
  for (const [code, outcome, reply] of cases) {
    const dir = tempDir();
    const r = await pipeTransport({ command: [...recorder(dir), String(code)] }).deliver(request(['a@x.org']));
    assert.equal(r.results[0]!.outcome, outcome, `exit ${code}`);
    assert.match(r.results[0]!.reply, reply);
  }
});

test('once per message, with the mbox From line and >From escaping', async () => {
  const dir = tempDir();
  const r = await pipeTransport({ command: [...recorder(dir), '0', '${recipient}'], perRecipient: false, fromLine: true }).deliver(request(['a@x.org', 'b@x.org']));
  assert.deepEqual(r.results.map((x) => x.outcome), ['ok', 'ok']);
  const got = calls(dir);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.argv.slice(1), ['']);
  assert.match(got[0]!.stdin, /^From s@x\.org [A-Z][a-z]{2}, .*\nSubject: t\r\n\r\n>From here\r\nbody\r\n$/);
});

test('a command that hangs is killed and deferred; a missing command is deferred', async () => {
  const hung = await pipeTransport({ command: [NODE, '-e', 'setTimeout(() => {}, 60000)'], timeoutMs: 300 }).deliver(request(['a@x.org']));
  assert.equal(hung.results[0]!.outcome, 'tempfail');
  assert.match(hung.results[0]!.reply, /^451 4\.4\.7 .*did not finish/);
  const missing = await pipeTransport({ command: ['/nonexistent/deliver'] }).deliver(request(['a@x.org']));
  assert.equal(missing.results[0]!.outcome, 'tempfail');
  assert.match(missing.results[0]!.reply, /ENOENT/);
});
