// The pipe transport: argv without a shell (hostile addresses stay plain text), exit codes through
// sysexits, stderr as the reason, per recipient or per message, the mbox From line, and the timeout.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { fromLineOf, pipeTransport } from '../../src/transport/pipe.js';
import type { DeliveryRequest } from '../../src/transport/types.js';
import { tempDir, waitUntil } from '../helpers.js';

const NODE = process.execPath;

/** A request with the given recipients and body. */
function request(rcpts: string[], body = 'Subject: t\r\n\r\nFrom here\r\nbody\r\n'): DeliveryRequest {
  return {
    id: 'ID1',
    sender: 's@x.org',
    recipients: rcpts.map((address) => ({ address })),
    message: () => Readable.from([Buffer.from(body)]),
    size: body.length,
  };
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
  return fs
    .readdirSync(dir)
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')));
}

test('hostile addresses reach the command as plain argv text, never a shell', async () => {
  const dir = tempDir();
  const canary = path.join(tempDir(), 'pwned');
  const hostile = [
    `"a b"@x.org`,
    `x;touch ${canary}@x.org`,
    `$(touch ${canary})@x.org`,
    `\`touch ${canary}\`@x.org`,
    '-rf@x.org',
    'new\nline@x.org',
  ];
  const t = pipeTransport({
    command: [
      ...recorder(dir),
      '0',
      '--to=${recipient}',
      '${local_part}',
      '${domain}',
      '${sender}',
      '${id}',
      '${route}',
    ],
    route: 'procmail',
  });
  const r = await t.deliver(request(hostile));
  assert.deepEqual(
    r.results.map((x) => x.outcome),
    hostile.map(() => 'ok'),
  );
  const got = calls(dir);
  assert.deepEqual(
    got.map((c) => c.argv[1]),
    hostile.map((h) => `--to=${h}`),
  );
  assert.equal(got[1]!.argv[2], `x;touch ${canary}`);
  assert.deepEqual(got[0]!.argv.slice(3), ['x.org', 's@x.org', 'ID1', 'procmail']);
  assert.equal(fs.existsSync(canary), false);
  assert.deepEqual(
    got[0]!.env.filter((k) => !['PATH'].includes(k) && !k.startsWith('NODE_')),
    [],
    'a clean environment',
  );
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

test('once per message: recipient words repeat per recipient; the mbox From line, >From escaping, LF line ends', async () => {
  const dir = tempDir();
  const t = pipeTransport({
    command: [...recorder(dir), '0', '-f', '${sender}', '--', '${recipient}', 'local=${local_part}', '${id}'],
    perRecipient: false,
    fromLine: true,
  });
  const r = await t.deliver(request(['a@x.org', '-b@y.org']));
  assert.deepEqual(
    r.results.map((x) => x.outcome),
    ['ok', 'ok'],
  );
  const got = calls(dir);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.argv.slice(1), ['-f', 's@x.org', '--', 'a@x.org', '-b@y.org', 'local=a', 'local=-b', 'ID1']);
  assert.match(
    got[0]!.stdin,
    /^From s@x\.org (Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d \d{4}\nSubject: t\n\n>From here\nbody\n$/,
  );
});

test('the From_ line is in the asctime form mbox readers parse', () => {
  assert.equal(
    fromLineOf('s@x.org', new Date(Date.UTC(2026, 10, 3, 7, 5, 9))),
    'From s@x.org Tue Nov  3 07:05:09 2026\n',
  );
  assert.equal(
    fromLineOf('', new Date(Date.UTC(2024, 0, 31, 23, 59, 59))),
    'From MAILER-DAEMON Wed Jan 31 23:59:59 2024\n',
  );
});

test('line ends and escaping hold across any chunking and very long lines; crlf keeps CRLF', async () => {
  const long = 'y'.repeat(20_000);
  const body = `Subject: t\r\n\r\nFrom a\r\nx From b\r\n>From c\r\n${long}From d\r\nFrom e`;
  const want = `Subject: t\n\n>From a\nx From b\n>From c\n${long}From d\n>From e`;
  const raw = Buffer.from(body);
  for (const size of [1, 2, 3, 7, 4096, raw.length]) {
    const dir = tempDir();
    const pieces = Array.from({ length: Math.ceil(raw.length / size) }, (_, i) =>
      raw.subarray(i * size, (i + 1) * size),
    );
    const req = { ...request(['a@x.org']), message: () => Readable.from(pieces) };
    await pipeTransport({ command: [...recorder(dir), '0'], fromLine: true }).deliver(req);
    assert.equal(calls(dir)[0]!.stdin.replace(/^From .*\n/, ''), want, `pieces of ${size}`);
    const kept = tempDir();
    await pipeTransport({ command: [...recorder(kept), '0'], crlf: true }).deliver(req);
    assert.equal(calls(kept)[0]!.stdin, body, `crlf, pieces of ${size}`);
  }
});

test('a template naming an unknown variable is refused, not run', async () => {
  const dir = tempDir();
  const r = await pipeTransport({ command: [...recorder(dir), '0', '${recipent}', '${sender}'] }).deliver(
    request(['a@x.org']),
  );
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(r.results[0]!.reply, /^451 4\.3\.5 the pipe command names unknown variables: \$\{recipent\}$/);
  assert.deepEqual(calls(dir), []);
});

test('a command that hangs is killed and deferred; a missing command is deferred', async () => {
  const hung = await pipeTransport({ command: [NODE, '-e', 'setTimeout(() => {}, 60000)'], timeoutMs: 300 }).deliver(
    request(['a@x.org']),
  );
  assert.equal(hung.results[0]!.outcome, 'tempfail');
  assert.match(hung.results[0]!.reply, /^451 4\.4\.7 .*did not finish/);
  const missing = await pipeTransport({ command: ['/nonexistent/deliver'] }).deliver(request(['a@x.org']));
  assert.equal(missing.results[0]!.outcome, 'tempfail');
  assert.match(missing.results[0]!.reply, /ENOENT/);
});

/** True while a process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

test('a timeout kills the whole process group, grandchildren included', async () => {
  const dir = tempDir();
  const script = `const c = require('child_process').spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
require('fs').writeFileSync(${JSON.stringify(path.join(dir, 'pids'))}, process.pid + ' ' + c.pid);
setTimeout(() => {}, 60000);`;
  const r = await pipeTransport({ command: [NODE, '-e', script], timeoutMs: 1500 }).deliver(request(['a@x.org']));
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(r.results[0]!.reply, /^451 4\.4\.7 .* did not finish within 1500 ms$/);
  const pids = fs.readFileSync(path.join(dir, 'pids'), 'utf8').split(' ').map(Number);
  assert.equal(pids.length, 2);
  assert.ok(await waitUntil(() => !pids.some(alive), 5000), `still running: ${pids.filter(alive)}`);
});

test('a message that breaks off kills the command before its input ends; nothing is delivered', async () => {
  const dir = tempDir();
  const pidFile = path.join(tempDir(), 'pid');
  const broken = (): Readable => {
    let started = false;
    return new Readable({
      read() {
        if (started) return;
        started = true;
        this.push(Buffer.from('Subject: t\r\n\r\npart of the body\r\n'));
        // the command has started (its pid file is there) before the read fails
        void waitUntil(() => fs.existsSync(pidFile), 10_000).then(() =>
          this.destroy(new Error('spool read failed: EIO')),
        );
      },
    });
  };
  const cmd = [
    NODE,
    '-e',
    `require('fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid)); ${recorder(dir)[2]}`,
    '0',
  ];
  const r = await pipeTransport({ command: cmd, timeoutMs: 20_000 }).deliver({
    ...request(['a@x.org']),
    message: broken,
  });
  assert.equal(r.results[0]!.outcome, 'tempfail');
  assert.match(r.results[0]!.reply, /^451 4\.3\.0 message not passed to .*: spool read failed: EIO$/);
  assert.ok(await waitUntil(() => fs.existsSync(pidFile) && !alive(Number(fs.readFileSync(pidFile, 'utf8'))), 5000));
  assert.deepEqual(calls(dir), [], 'the command never saw the end of a shortened message');
});
